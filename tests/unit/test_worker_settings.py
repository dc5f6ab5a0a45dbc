"""Settings that shape a worker's batches and consumer reach the consumer itself."""

from __future__ import annotations

import asyncio

import pytest

from memberflow.runtime import WORKERS, worker_options
from shared.config import Settings
from shared.consumer import BatchWorker
from shared.metrics import Metrics


def test_batch_session_and_fetch_wait_reach_the_consumer(monkeypatch) -> None:
    monkeypatch.setenv("MEMBERFLOW_BATCH_MAX_RECORDS", "700")
    monkeypatch.setenv("MEMBERFLOW_SESSION_TIMEOUT_MS", "12000")
    monkeypatch.setenv("MEMBERFLOW_FETCH_WAIT_MS", "250")
    settings = Settings()

    async def build() -> BatchWorker:  # aiokafka's consumer is made inside a loop
        return BatchWorker(WORKERS["tiering"](settings), bootstrap="127.0.0.1:1", engine=None,
                           producer=None, dead_letter_topic="dl", metrics=Metrics(),
                           **worker_options(settings))

    worker = asyncio.run(build())
    assert worker.max_records == 700
    assert worker.consumer._session_timeout_ms == 12000
    assert worker.consumer._fetch_max_wait_ms == 250


def test_the_fetch_wait_is_bounded(monkeypatch) -> None:
    monkeypatch.setenv("MEMBERFLOW_FETCH_WAIT_MS", "-1")
    with pytest.raises(ValueError, match="fetch_wait_ms"):
        Settings()
