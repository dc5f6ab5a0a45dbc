"""Bootstrap: the only place that builds connections, workers and servers, and wires them."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

from aiohttp import web
from sqlalchemy import Engine

from memberflow.readmodel import read_member
from services.campaigns.handlers import CampaignHandler
from services.ingest.archive import DeadLetterRecorder, EventArchiver
from services.ingest.handlers import Ingestor
from services.ingest.http import make_app
from services.tagging.handlers import TaggingHandler
from services.tiering.abc_store import stale_shops
from services.tiering.handlers import TieringHandler
from shared import kafka
from shared.config import Settings
from shared.consumer import BatchWorker, Handler
from shared.db import make_engine, migrate
from shared.embedded import EmbeddedBroker, EmbeddedDatabase
from shared.member_events import pending_count
from shared.metrics import Metrics
from shared.topics import Topics

log = logging.getLogger("memberflow")

# Every worker the pipeline runs, by name: the explicit list of what `up` starts.
WORKERS: dict[str, Callable[[Settings], Handler]] = {
    "archiver": lambda s: EventArchiver(s.topics),
    "dead-letters": lambda s: DeadLetterRecorder(s.topics),
    "tiering": lambda s: TieringHandler(
        s.topics, abc_debounce=timedelta(seconds=s.abc_debounce_seconds)),
    "tagging": lambda s: TaggingHandler(s.topics),
    "campaigns": lambda s: CampaignHandler(
        s.topics, lateness=timedelta(hours=s.campaign_lateness_hours)),
}


@dataclass
class Stack:
    """Where the broker and database are; embedded ones are owned and stopped by `open_stack`."""

    settings: Settings
    bootstrap: str
    database_url: str
    embedded_broker: bool
    embedded_database: bool

    @property
    def topics(self) -> Topics:
        return self.settings.topics


@contextlib.contextmanager
def open_database(settings: Settings) -> Iterator[tuple[str, bool]]:
    """The configured database URL, or an embedded server under the data dir."""
    url = settings.database_url_plain()
    if url:
        yield url, False
        return
    db = EmbeddedDatabase(settings.data_dir / "pg").start()
    try:
        yield db.create_database("memberflow"), True
    finally:
        db.stop()


@contextlib.contextmanager
def open_stack(settings: Settings) -> Iterator[Stack]:
    """Start what is not configured (broker, database), migrate, create topics."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        url, embedded_db = stack.enter_context(open_database(settings))
        broker: EmbeddedBroker | None = None
        bootstrap = settings.kafka
        if not bootstrap:
            broker = stack.enter_context(
                EmbeddedBroker(log_path=settings.data_dir / "logs" / "broker.log"))
            bootstrap = broker.bootstrap
        engine = make_engine(url, pool_size=2)
        try:
            migrate(engine)
            if broker is not None:
                forget_positions(engine)
        finally:
            engine.dispose()
        asyncio.run(kafka.ensure_topics(bootstrap, settings.topics.all, settings.partitions))
        yield Stack(settings, bootstrap, url, broker is not None, embedded_db)


def forget_positions(engine: Engine) -> None:
    """A new embedded broker starts empty: positions stored against the old one mean nothing.

    The state stays; events replayed again are recognised by their ids and skipped.
    """
    with engine.begin() as conn:
        n = conn.exec_driver_sql("DELETE FROM consumer_positions").rowcount
    if n:
        log.info("new embedded broker: forgot %d stored consumer positions", n)


class Services:
    """Runs named workers (and optionally the HTTP ingest) in this process until stopped."""

    def __init__(self, stack: Stack, names: Sequence[str], metrics: Metrics,
                 http_port: int | None = None) -> None:
        unknown = [n for n in names if n not in WORKERS]
        if unknown:
            raise ValueError(f"unknown worker(s) {', '.join(unknown)}; known: {', '.join(WORKERS)}")
        self.stack = stack
        self.names = list(names)
        self.metrics = metrics
        self.http_port = http_port
        self.stop = asyncio.Event()
        self.engine = make_engine(stack.database_url, pool_size=len(self.names) + 2)
        self.producer = kafka.producer(stack.bootstrap)
        self.workers: list[BatchWorker] = []
        self.ingestor: Ingestor | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.http_url: str | None = None

    async def start(self) -> None:
        await self.producer.start()
        topics = self.stack.topics
        settings = self.stack.settings
        self.workers = [
            BatchWorker(WORKERS[n](settings), bootstrap=self.stack.bootstrap, engine=self.engine,
                        producer=self.producer, dead_letter_topic=topics.dead_letters,
                        metrics=self.metrics, max_records=settings.batch_max_records)
            for n in self.names
        ]
        self._tasks = [asyncio.create_task(w.run(self.stop), name=w.handler.name)
                       for w in self.workers]
        if self.http_port is not None:
            self.ingestor = Ingestor(self.producer, topics, self.metrics, source="http")
            app = make_app(self.ingestor, self.metrics,
                           member_reader=functools.partial(read_member, self.engine))
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, settings.http_host, self.http_port)
            await site.start()
            port = self._runner.addresses[0][1]
            self.http_url = f"http://{settings.http_host}:{port}"

    def check(self) -> None:
        """Raise the error of any worker that crashed."""
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception():
                raise RuntimeError(f"worker {task.get_name()} crashed") from task.exception()

    async def wait_caught_up(self, deadline_s: float = 600.0) -> None:
        """Wait until every worker's consumer group has committed to the end of its topics.

        Workers feed each other (tiering publishes what tagging reads, timed work publishes
        between batches), so "caught up" is only believed when nothing was written to any of
        the topics while the lags and the outstanding timed work were checked.
        """
        end = time.monotonic() + deadline_s
        topics = sorted({t for w in self.workers for t in w.handler.topics})
        while True:
            self.check()
            before = await kafka.end_offsets(self.stack.bootstrap, topics)
            lags = [await kafka.group_lag(self.stack.bootstrap, w.handler.name, w.handler.topics)
                    for w in self.workers]
            if (not any(lags) and await asyncio.to_thread(self._settled)
                    and await kafka.end_offsets(self.stack.bootstrap, topics) == before):
                return
            if time.monotonic() > end:
                raise TimeoutError(f"workers still behind after {deadline_s}s: "
                                   + ", ".join(f"{w.handler.name}={n}"
                                               for w, n in zip(self.workers, lags, strict=True)))
            await asyncio.sleep(0.2)

    def _settled(self) -> bool:
        """No timed work outstanding: no stale customer ABC classes, no unrelayed events."""
        if "tiering" not in self.names:
            return True
        with self.engine.connect() as conn:
            return stale_shops(conn) == 0 and pending_count(conn) == 0

    async def run_until_stopped(self) -> None:
        """Serve until `stop` is set or a worker crashes."""
        waiter = asyncio.create_task(self.stop.wait())
        await asyncio.wait([waiter, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        self.check()

    async def close(self) -> None:
        self.stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        await self.producer.stop()
        self.engine.dispose()
