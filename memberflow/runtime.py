"""Bootstrap: the only place that builds connections, workers and servers, and wires them."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from memberflow import local
from memberflow.database import embedded_or_configured
from memberflow.readmodel import event_fate, read_member
from services.campaigns.handlers import APPLIED as CAMPAIGN_CLAIMS
from services.campaigns.handlers import CampaignHandler
from services.ingest.archive import EventArchiver
from services.ingest.handlers import Ingestor
from services.ingest.recovery import refill_where, republish
from services.ingest.ticker import tick_forever
from services.tagging.handlers import TaggingHandler
from services.tiering import scores_store
from services.tiering.abc_store import stale_shops
from services.tiering.handlers import CLAIMS as TIERING_CLAIMS
from services.tiering.handlers import TieringHandler
from services.tiering.operations import resync as tiering_resync
from shared import kafka, supervise, tokens
from shared.config import Settings
from shared.consumer import BatchWorker, Handler
from shared.db import make_engine, migrate
from shared.embedded import EmbeddedBroker, EmbeddedDatabase, free_port
from shared.health import Probe, Readiness, broker_check, database_check
from shared.metrics import Metrics, gathered
from shared.outbox import pending_count
from shared.topics import Topics

if TYPE_CHECKING:
    from shared.http import HttpServer

log = logging.getLogger("memberflow")

# Every worker the pipeline runs, by name: the explicit list of what `up` starts.
WORKERS: dict[str, Callable[[Settings], Handler]] = {
    "archiver": lambda s: EventArchiver(s.topics),
    "tiering": lambda s: TieringHandler(
        s.topics, abc_debounce=timedelta(seconds=s.abc_debounce_seconds)),
    "tagging": lambda s: TaggingHandler(s.topics),
    "campaigns": lambda s: CampaignHandler(s.topics, lateness=s.lateness),
}
# What each worker that claims event ids applies: a fresh embedded broker is refilled with the
# archived events one of them has not applied, whichever workers this process runs.
CLAIMING: dict[str, frozenset[str]] = {"tiering": TIERING_CLAIMS,
                                       "campaigns": CAMPAIGN_CLAIMS}


def worker_options(settings: Settings) -> dict[str, int]:
    """How the settings shape each worker's batches and consumer."""
    return {"max_records": settings.batch_max_records,
            "session_timeout_ms": settings.session_timeout_ms,
            "fetch_wait_ms": settings.fetch_wait_ms}


@dataclass
class Stack:
    """Where the broker and database are; embedded ones are owned and stopped by `open_stack`."""

    settings: Settings
    bootstrap: str
    database_url: str
    embedded_broker: bool
    embedded_database: bool
    # A fresh embedded broker over an existing state: what to publish again (see `Refill`).
    refill: Refill | None = None
    # What of the embedded stack died, if anything (None when nothing is embedded).
    gone: Callable[[], str | None] | None = None

    @property
    def topics(self) -> Topics:
        return self.settings.topics


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie (exited, not yet reaped by its parent)."""
    import psutil

    try:
        status: str = psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return False
    return bool(status != psutil.STATUS_ZOMBIE)


def _gone(broker: EmbeddedBroker | None, db: EmbeddedDatabase | None) -> str | None:
    """What of the embedded stack is no longer running, if anything."""
    if broker is not None and broker.pid is not None and not broker.running:
        return f"the embedded broker (pid {broker.pid}) is gone"
    if db is not None:
        try:
            pid = db.postmaster_pid
        except Exception:  # pgserver cannot even say: it is gone too
            return "the embedded PostgreSQL is gone"
        if not _alive(pid):
            return f"the embedded PostgreSQL (pid {pid}) is gone"
    return None


DEMO_MARK = "made-by-demo"


@contextlib.contextmanager
def open_stack(settings: Settings, *, demo: bool = False) -> Iterator[Stack]:
    """Start what is not configured (broker, database), migrate, create topics.

    Whatever this starts is stopped if the process dies, SIGKILL included, and whatever a dead
    process left under the data dir is stopped first (see `shared.supervise`). Anything but the
    demo running on a data dir makes its state more than the demo's (the demo starts its own
    afresh, and only ever its own).
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not demo:
        (settings.data_dir / DEMO_MARK).unlink(missing_ok=True)
    with contextlib.ExitStack() as stack:
        url, db = stack.enter_context(embedded_or_configured(settings))
        broker: EmbeddedBroker | None = None
        bootstrap = settings.kafka
        if not bootstrap:
            broker = stack.enter_context(
                EmbeddedBroker(log_path=settings.data_dir / "logs" / "broker.log",
                               run_dir=settings.data_dir / "run"))
            bootstrap = broker.bootstrap
        engine = make_engine(url, pool_size=2)
        try:
            migrate(engine)
            refill = forget_positions(engine) if broker is not None else None
        finally:
            engine.dispose()
        asyncio.run(kafka.ensure_topics(bootstrap, settings.topics.all, settings.partitions))
        yield Stack(settings, bootstrap, url, broker is not None, db is not None, refill,
                    functools.partial(_gone, broker, db) if broker or db else None)


@dataclass(frozen=True)
class Refill:
    """A new embedded broker starts empty, and what the old one held but workers had not
    applied yet must reach them again: the archived events some worker has not applied (its
    claims say which), and members' current state for the readers of tiering's output (those
    changed since the oldest position tagging had stored)."""

    state_since: datetime | None


def forget_positions(engine: Engine) -> Refill:
    """Positions stored against the old embedded broker mean nothing on a new one: forget them
    (every worker starts the new topics from the beginning) and say what must be refilled.

    The state stays; events published again are recognised by their ids and skipped.
    """
    with engine.begin() as conn:
        since = conn.exec_driver_sql(
            "SELECT min(updated_at) FROM consumer_positions WHERE consumer = 'tagging'").scalar()
        n = conn.exec_driver_sql("DELETE FROM consumer_positions").rowcount
    if n:
        log.info("new embedded broker: forgot %d stored consumer positions", n)
    return Refill(since - timedelta(minutes=1) if since is not None else None)


class StackGone(RuntimeError):
    """A broker or database this process started is no longer running."""


class WorkerStopped(RuntimeError):
    """A worker process `up` started has exited."""


class WorkerProcesses:
    """Each worker in a process of its own (`memberflow worker NAME`), as a deployment runs
    them: on a machine with several cores the workers use them all instead of sharing one.

    The processes die with this one (`PR_SET_PDEATHSIG`, and the run file's watchdog reaps
    them should that fail); each serves its metrics on a port of its own, which this process
    gathers into its /metrics. A worker that exits stops `up` with its name and exit code,
    as a worker task that crashes does in process.
    """

    def __init__(self, stack: Stack, names: Sequence[str]) -> None:
        self.stack = stack
        self.names = list(names)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        self._supervisor: supervise.Supervisor | None = None

    def start(self) -> None:
        """Start every worker (from the main thread: their lives are tied to it)."""
        settings = self.stack.settings
        self._supervisor = supervise.acquire(settings.data_dir / "run")
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("MEMBERFLOW_")},
               **settings.as_env(), "MEMBERFLOW_KAFKA": self.stack.bootstrap,
               "MEMBERFLOW_DATABASE_URL": self.stack.database_url}
        for name in self.names:
            port = free_port()
            self.ports[name] = port
            self.procs[name] = proc = subprocess.Popen(
                [sys.executable, "-m", "memberflow", "worker", name, "--metrics-port",
                 str(port)], env=env, stdin=subprocess.DEVNULL,
                # A Ctrl-C is ours to handle: we stop the workers, in order, ourselves.
                start_new_session=True, preexec_fn=supervise.pdeathsig_preexec())
            self._supervisor.watch_process(f"worker {name}", proc.pid)

    def metrics_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}/metrics" for port in self.ports.values()]

    def exited(self) -> str | None:
        """The first worker that is no longer running, if any, with its exit code."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                return f"worker {name} exited with code {proc.returncode}"
        return None

    def alive(self) -> dict[str, bool]:
        return {f"worker {n}": p.poll() is None for n, p in self.procs.items()}

    def stop(self, grace_s: float) -> None:
        """SIGTERM every worker (each finishes its batch), SIGKILL what is left after `grace_s`."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        end = time.monotonic() + grace_s
        for name, proc in self.procs.items():
            try:
                proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %s did not stop within %.0f s; killed", name, grace_s)
                proc.kill()
                proc.wait()
        if self._supervisor is not None:
            for proc in self.procs.values():
                self._supervisor.forget_process(proc.pid)
            supervise.release(self._supervisor)
            self._supervisor = None


class Services:
    """Runs named workers (and optionally the HTTP ingest and the ticker): as tasks of this
    process, or each in a process of its own (`processes=True`, what `up` does)."""

    def __init__(self, stack: Stack, names: Sequence[str], metrics: Metrics,
                 http_port: int | None = None, *, ticks: bool = False,
                 processes: bool = False, announce: bool = False) -> None:
        unknown = [n for n in names if n not in WORKERS]
        if unknown:
            raise ValueError(f"unknown worker(s) {', '.join(unknown)}; known: {', '.join(WORKERS)}")
        self.stack = stack
        self._stack_gone = False
        self.names = list(names)
        self.metrics = metrics
        self.http_port = http_port
        self.ticks = ticks
        self.stop = asyncio.Event()
        self.engine = make_engine(stack.database_url, pool_size=3)
        # Each worker on connections of its own, named after it in pg_stat_activity.
        self.worker_engines = {} if processes else {
            n: make_engine(stack.database_url, pool_size=2, name=f"memberflow {n}")
            for n in self.names}
        self.processes = WorkerProcesses(stack, self.names) if processes else None
        self.producer = kafka.producer(stack.bootstrap)
        self.workers: list[BatchWorker] = []
        self.ingestor: Ingestor | None = None
        self._http: HttpServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.http_url: str | None = None
        # Whether to tell other commands on the data dir about this stack (`memberflow.local`).
        self.announce = announce
        self._local_token: int | None = None
        self._readiness = Readiness([
            Probe("database", database_check(self.engine)),
            Probe("broker", broker_check(stack.bootstrap))])

    def ingestor_for(self, source: str, *, ticks: bool = False,
                     republish: bool = False) -> Ingestor:
        """An ingest path (archive, then relay) on this process's engine and producer."""
        settings = self.stack.settings
        return Ingestor(self.engine, self.producer, self.stack.topics, self.metrics, source,
                        lateness=settings.lateness, bounds=settings.bounds, ticks=ticks,
                        republish=republish)

    async def start(self) -> None:
        await self.producer.start()
        topics = self.stack.topics
        settings = self.stack.settings
        self.workers = [
            BatchWorker(WORKERS[n](settings), bootstrap=self.stack.bootstrap,
                        engine=self.worker_engines[n],
                        producer=self.producer, dead_letter_topic=topics.dead_letters,
                        metrics=self.metrics, **worker_options(settings))
            for n in self.worker_engines
        ]
        if self.stack.refill is not None:
            await self._refill(self.stack.refill)
        if self.processes is not None:
            self.processes.start()
            gathered(self.metrics, self.processes.metrics_urls)
        self._tasks = [asyncio.create_task(w.run(self.stop), name=w.handler.name)
                       for w in self.workers]
        if self.http_port is not None:
            self.ingestor = self.ingestor_for("http")
            # Loaded here: commands that serve no HTTP need none of it.
            from services.api.app import install
            from services.ingest.http import make_app
            from shared.http import HttpServer
            from shared.keys import CachedTokens, RateLimits

            app = install(make_app(
                self.ingestor, self.metrics,
                member_reader=functools.partial(read_member, self.engine),
                event_reader=functools.partial(event_fate, self.engine),
                readiness=self.readiness,
                keys=CachedTokens(self.engine, settings.token_cache_seconds),
                limits=RateLimits(settings.ingest_events_per_second)),
                self.engine, self.stack.topics, settings.lateness,
                outgoing=settings.data_dir / "outgoing")
            # What re-driving a dead letter from the API publishes with.
            app.state.producer = self.producer
            app.state.settings = settings
            self._http = await HttpServer.start(app, settings.http_host, self.http_port)
            self.http_url = self._http.url
        if self.announce:
            await asyncio.to_thread(self._announce)
        if self.ticks and settings.tick_seconds > 0:
            self._tasks.append(asyncio.create_task(tick_forever(
                self.ingestor_for("tick", ticks=True), settings.tick_seconds, self.stop),
                name="ticker"))

    def _announce(self) -> None:
        """Record this stack for the other commands on its data dir, with a read-only token
        for this run (any such token a run that died left behind is revoked first)."""
        name = local.token_name(self.stack.settings.data_dir)
        with self.engine.begin() as conn:
            for (stale,) in conn.exec_driver_sql(
                    "SELECT id FROM api_tokens WHERE name = %s AND revoked_at IS NULL",
                    (name,)).all():
                tokens.revoke(conn, stale, operator="memberflow up")
            made = tokens.create(conn, name=name, shops=None, rights=["read"],
                                 expires_in=None, operator="memberflow up")
        self._local_token = made.token_id
        local.write(self.stack.settings.data_dir / "run", local.Running(
            os.getpid(), self.stack.bootstrap, self.stack.database_url, self.http_url,
            made.token if self.http_url else None))

    def _retire(self) -> None:
        local.remove(self.stack.settings.data_dir / "run")
        if self._local_token is not None:
            with self.engine.begin() as conn:
                tokens.revoke(conn, self._local_token, operator="memberflow up")
            self._local_token = None

    async def _refill(self, refill: Refill) -> None:
        """Publish again what a fresh embedded broker lost (see `Refill`); once per stack."""
        where, params = await asyncio.to_thread(refill_where, self.engine, CLAIMING)
        published, _ = await republish(self.engine, self.producer, self.stack.topics,
                                       where=where, params=params)

        def resync() -> int:
            with self.engine.begin() as conn:
                return tiering_resync(conn, self.stack.topics.member_events, refill.state_since)

        states = await asyncio.to_thread(resync)
        self.stack.refill = None
        if published or states:
            log.info("fresh embedded broker: published %d archived events not yet applied and "
                     "%d member states again", published, states)

    async def readiness(self) -> dict[str, object]:
        """Ready when the database and the broker answer within their bounds and no worker
        has stopped."""
        running = {t.get_name(): not t.done() for t in self._tasks}
        if self.processes is not None:
            running |= self.processes.alive()
        return await self._readiness(running)

    def check(self) -> None:
        """Raise the error of any worker that crashed."""
        if self.processes is not None and (exited := self.processes.exited()):
            raise WorkerStopped(exited)
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
        handlers = [WORKERS[n](self.stack.settings) for n in self.names]
        topics = sorted({t for h in handlers for t in h.topics})
        while True:
            self.check()
            before = await kafka.end_offsets(self.stack.bootstrap, topics)
            lags = [await kafka.group_lag(self.stack.bootstrap, h.name, h.topics)
                    for h in handlers]
            if (not any(lags) and await asyncio.to_thread(self._settled)
                    and await kafka.end_offsets(self.stack.bootstrap, topics) == before):
                return
            if time.monotonic() > end:
                raise TimeoutError(f"workers still behind after {deadline_s}s: "
                                   + ", ".join(f"{h.name}={n}"
                                               for h, n in zip(handlers, lags, strict=True)))
            await asyncio.sleep(0.2)

    def _settled(self) -> bool:
        """No timed work outstanding: no stale customer ABC classes, RFM scores or predictions,
        no unrelayed messages of the workers running here."""
        with self.engine.connect() as conn:
            if "tiering" in self.names and (stale_shops(conn)
                                            or scores_store.stale_shops(conn)):
                return False
            return all(pending_count(conn, n) == 0 for n in self.names)

    async def run_until_stopped(self) -> None:
        """Serve until `stop` is set, a worker crashes or the embedded stack dies under us."""
        waiter = asyncio.create_task(self.stop.wait())
        watch = asyncio.create_task(self._watch_stack())
        children = asyncio.create_task(self._watch_processes())
        await asyncio.wait([waiter, watch, children, *self._tasks],
                           return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        watch.cancel()
        children.cancel()
        gone = watch.result() if watch.done() and not watch.cancelled() else None
        if gone is None and self.stack.gone is not None:
            # A worker that stopped because the broker or database died under it: say the cause.
            gone = await asyncio.to_thread(self.stack.gone)
        if gone:
            self._stack_gone = True
            raise StackGone(gone)
        self.check()

    async def _watch_processes(self) -> None:
        """Return when a worker process has exited (never, with workers in this process)."""
        while self.processes is None or not self.processes.exited():
            await asyncio.sleep(0.5)

    async def _watch_stack(self) -> str | None:
        """A broker or database started here that died takes what it held with it: stop,
        rather than answer 503 forever (the next start refills from the archive)."""
        gone = self.stack.gone
        if gone is None:
            await asyncio.Event().wait()
            return None
        while True:
            what = await asyncio.to_thread(gone)
            if what:
                log.error("%s; stopping. Start again: nothing acknowledged is lost", what)
                return what
            await asyncio.sleep(1.0)

    async def close(self, grace_s: float = 30.0) -> None:
        """Stop the workers (each finishes its batch) and the producer, within `grace_s`
        each: what is cut short was not committed and is read again on the next start."""
        if self._stack_gone:   # nothing is left to finish against: do not wait long
            grace_s = min(grace_s, 5.0)
        self.stop.set()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=grace_s)
            for task in late:
                log.warning("worker %s did not stop within %.0f s; cancelled",
                            task.get_name(), grace_s)
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.stop()
        if self.announce and not self._stack_gone:
            try:
                await asyncio.to_thread(self._retire)
            except Exception:   # the database went first: the next start revokes the token
                log.warning("could not revoke this run's local token", exc_info=True)
        if self.processes is not None:
            await asyncio.to_thread(self.processes.stop, grace_s)
        try:
            await asyncio.wait_for(self.producer.stop(), grace_s)
        except TimeoutError:
            log.warning("the producer did not stop within %.0f s", grace_s)
        for engine in (self.engine, *self.worker_engines.values()):
            engine.dispose()
