"""Test servers: a real Tansu broker and a real PostgreSQL, started once per session.

Each test gets its own database (copied from a migrated template) and its own topic prefix, so
tests never see each other's state. Set MEMBERFLOW_TEST_DATABASE_URL or MEMBERFLOW_TEST_KAFKA to
use servers that are already running instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine

from memberflow.runtime import Stack
from shared import kafka
from shared.config import Settings
from shared.db import make_engine, migrate
from shared.embedded import EmbeddedBroker, EmbeddedDatabase

_counter = itertools.count()
_integration = {"passed": 0, "skipped": 0, "failed": 0}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.path.parts or "e2e" in item.path.parts:
            item.add_marker(pytest.mark.integration)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "integration" not in report.keywords:
        return
    if report.when == "call" and report.passed:
        _integration["passed"] += 1
    elif report.skipped:
        _integration["skipped"] += 1
    elif report.failed:
        _integration["failed"] += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With MEMBERFLOW_REQUIRE_INTEGRATION set, skipped or absent integration tests fail the run."""
    if not os.environ.get("MEMBERFLOW_REQUIRE_INTEGRATION"):
        return
    if hasattr(session.config, "workerinput"):
        return  # a pytest-xdist worker: the controller sees every report and decides
    if _integration["skipped"] or not _integration["passed"]:
        session.config.get_terminal_writer().line(
            f"integration tests required: {_integration['passed']} passed, "
            f"{_integration['skipped']} skipped -> failing the run", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """URL of a PostgreSQL database we may CREATE DATABASE from."""
    given = os.environ.get("MEMBERFLOW_TEST_DATABASE_URL")
    if given:
        yield given
        return
    # Not under pytest's basetemp: pytest prunes old basetemp directories when another session
    # starts, which would pull the data directory from under a server still in use.
    root = Path(tempfile.mkdtemp(prefix="memberflow-test-pg-"))
    # Recorded under run/: a test run that is killed leaves no postmaster behind.
    server = EmbeddedDatabase(root / "data", run_dir=root / "run").start()
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_template(pg_admin_url: str) -> str:
    """A migrated template database; tests copy it instead of migrating each time."""
    name = f"mf_template_{os.getpid()}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(_with_db(pg_admin_url, name))
    migrate(engine)
    engine.dispose()
    return name


def _with_db(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


@contextlib.contextmanager
def fresh_database(pg_admin_url: str, pg_template: str) -> Iterator[str]:
    """A fresh, migrated database, dropped afterwards."""
    name = f"mf_test_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    try:
        yield _with_db(pg_admin_url, name)
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(pg_admin_url: str, pg_template: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    with fresh_database(pg_admin_url, pg_template) as url:
        yield url


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a real Kafka-protocol broker."""
    given = os.environ.get("MEMBERFLOW_TEST_KAFKA")
    if given:
        yield given
        return
    log_path = Path(tmp_path_factory.mktemp("broker")) / "broker.log"
    with EmbeddedBroker(log_path=log_path) as broker:
        yield broker.bootstrap


@pytest.fixture
def settings(bootstrap: str, database_url: str, tmp_path: Path) -> Settings:
    """Settings for one test: its own database and its own topics on the shared broker."""
    return Settings(kafka=bootstrap, database_url=database_url, data_dir=tmp_path,
                    topic_prefix=f"t{os.getpid()}-{next(_counter)}.", partitions=3,
                    batch_max_records=500, abc_debounce_seconds=0)


@pytest.fixture
def stack(settings: Settings) -> Stack:
    """The test's broker topics created and its database migrated."""
    assert settings.kafka is not None
    asyncio.run(kafka.ensure_topics(settings.kafka, settings.topics.all, settings.partitions))
    url = settings.database_url_plain()
    assert url is not None
    return Stack(settings, settings.kafka, url, embedded_broker=False, embedded_database=False)


@pytest.fixture
def two_shops(database_url: str) -> Iterator[Engine]:
    """An engine on a fresh database holding two configured shops and their members (see
    `tests.api_support.seed_two_shops`)."""
    from shared.db import make_engine
    from tests.api_support import seed_two_shops

    engine = make_engine(database_url, pool_size=4)
    seed_two_shops(engine)
    yield engine
    engine.dispose()
