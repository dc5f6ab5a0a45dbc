"""Nothing the embedded stack starts outlives the process that started it.

A process that starts an embedded broker or PostgreSQL server under a data dir keeps a run file
there (`DATA_DIR/run/PID.json`): its own identity and that of everything it started, each as a
pid with the process's start time and name, so a pid the system has since given to another
process is never mistaken for ours. Three things act on it:

* the broker is our direct child and is started with `PR_SET_PDEATHSIG` (Linux): the kernel
  kills it the moment the thread that started it (the main thread) dies, SIGKILL included;
* a watchdog process (`Supervisor`), in its own session so a Ctrl-C does not reach it, holds the
  read end of a pipe whose only write end is ours. When we die, however we die, the kernel
  closes it, the watchdog reads end-of-file and reaps the run file: it stops the broker, gives
  up our handle on the PostgreSQL server (pgserver daemonises the postmaster, so it is nobody's
  child) and stops the postmaster when no live process holds a handle any more. On a clean exit
  we remove the run file first and tell the watchdog to leave;
* the next start on the same data dir reaps the run files of owners that are gone (a watchdog
  can be killed too), and before `pgserver.get_server` it prunes pgserver's bookkeeping (pids
  of dead handles, which would otherwise keep pgserver from ever stopping the server), a stale
  `postmaster.pid` (whose pid may belong to another process by now) and a postmaster nobody
  holds a handle on any more.

This module imports only the standard library at the top: the watchdog runs it and starts in a
few milliseconds; psutil and pgserver are imported when there is work to do.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

# A start time read back later may differ by rounding (and by the boot time the kernel reports).
_START_SLACK_S = 1.0
HANDLES_FILE = ".memberflow_handles.json"  # pid -> identity of pgserver handles we registered
_PR_SET_PDEATHSIG = 1

Identity = dict[str, Any]  # {"pid": int, "started": float, "name": str}
log = logging.getLogger("memberflow.supervise")


def _ps() -> Any:
    """psutil (a dependency of pgserver), imported when first needed."""
    import psutil  # type: ignore[import-untyped, unused-ignore]

    return psutil


# ---------------------------------------------------------------------------------------------
# Process identities


def identity(pid: int) -> Identity | None:
    """The pid with its start time and name, or None if there is no such process."""
    psutil = _ps()
    try:
        proc = psutil.Process(pid)
        return {"pid": pid, "started": proc.create_time(), "name": proc.name()}
    except psutil.Error:
        return None


def _process(ident: Identity) -> Any:
    """The running process `ident` names; None once it is gone (or its pid is someone else's)."""
    psutil = _ps()
    try:
        proc = psutil.Process(int(ident["pid"]))
        if abs(proc.create_time() - float(ident["started"])) > _START_SLACK_S:
            return None
        if ident.get("name") and proc.name() != ident["name"]:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.Error, KeyError, TypeError, ValueError):
        return None


def alive(ident: Identity) -> bool:
    return _process(ident) is not None


def _gone(proc: Any) -> bool:
    psutil = _ps()
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _wait_gone(procs: list[Any], timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while True:
        if all(_gone(p) for p in procs):
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.02)


def _signal(proc: Any, sig: int) -> None:
    psutil = _ps()
    with contextlib.suppress(psutil.Error):
        proc.send_signal(sig)


def terminate(ident: Identity, grace_s: float = 2.0) -> bool:
    """SIGTERM the process `ident` names (never another one that got its pid), SIGKILL it after
    `grace_s`. True if it was running."""
    proc = _process(ident)
    if proc is None:
        return False
    _signal(proc, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
    _signal(proc, signal.SIGTERM)
    if not _wait_gone([proc], grace_s):
        _signal(proc, signal.SIGKILL)
        _wait_gone([proc], 5.0)
    return True


def die_with_parent() -> None:
    """For `preexec_fn`: the kernel SIGKILLs this child when the thread that forked it dies.

    Only safe to rely on when started from the main thread (the "parent" is a thread); see
    `pdeathsig_preexec`.
    """
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != _parent_pid:  # the parent died before the request took effect
        os._exit(1)


_parent_pid = os.getpid()
_prctl_fn: Any = None


def _prctl(option: int, arg: int) -> None:
    if _prctl_fn is not None:
        _prctl_fn(option, arg, 0, 0, 0)


def pdeathsig_preexec() -> Any:
    """A `preexec_fn` that ties a child's life to ours, or None where that cannot be done
    (not Linux, or not the main thread: a worker thread's exit would kill the child)."""
    global _prctl_fn, _parent_pid
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    if _prctl_fn is None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        _prctl_fn = libc.prctl
        _prctl_fn.restype = ctypes.c_int
        _prctl_fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                              ctypes.c_ulong]
    _parent_pid = os.getpid()
    return die_with_parent


# ---------------------------------------------------------------------------------------------
# pgserver's bookkeeping and the postmaster


def _pgserver() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns on hosts without a runtime dir
        from pgserver.postgres_server import PostgresServer
    return PostgresServer


def _pgserver_lock() -> Any:
    """The inter-process lock pgserver takes around starting, joining and stopping servers."""
    return _pgserver()._lock


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def postmaster(pgdata: Path) -> Any:
    """The running postmaster of `pgdata` according to its postmaster.pid, verified: a postgres
    process started when the file says, serving this directory."""
    psutil = _ps()
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid, started = int(lines[0]), int(lines[2])
    except (OSError, ValueError, IndexError):
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or proc.name() != "postgres":
            return None
        # pg_ctl forks, then the postmaster records its start: a few seconds apart at worst.
        if abs(proc.create_time() - started) > 5.0:
            return None
        if str(pgdata) not in " ".join(proc.cmdline()):
            return None
        return proc
    except psutil.Error:
        return None


def stop_postmaster(proc: Any, timeout_s: float = 10.0) -> None:
    """Fast shutdown (what `pg_ctl stop -m fast` sends), then immediate, then SIGKILL."""
    psutil = _ps()
    try:
        children = proc.children()
    except psutil.Error:
        children = []
    for p in [proc, *children]:  # a frozen (SIGSTOPped) server cannot shut down
        _signal(p, signal.SIGCONT)
    _signal(proc, signal.SIGINT)
    if _wait_gone([proc], timeout_s):
        return
    _signal(proc, signal.SIGQUIT)
    if _wait_gone([proc], 3.0):
        return
    for p in [proc, *children]:
        _signal(p, signal.SIGKILL)
    _wait_gone([proc, *children], 5.0)


def _wait_for_starters(pgdata: Path, timeout_s: float = 20.0) -> None:
    """Wait for an initdb or pg_ctl a dead owner left running on `pgdata` (a postmaster it is
    starting would otherwise come up after we decided nobody uses it)."""
    psutil = _ps()
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        busy = False
        for proc in psutil.process_iter(["name", "cmdline"]):
            if proc.info["name"] in ("pg_ctl", "initdb") and str(pgdata) in " ".join(
                    proc.info["cmdline"] or ()):
                busy = True
                break
        if not busy:
            return
        time.sleep(0.1)


def _prune_handles(pgdata: Path, drop: int | None = None) -> list[int]:
    """pgserver's handle pids for `pgdata` with the dead ones (and `drop`) removed, written back.

    A pid we registered (see `register_handle`) counts only while it is still that process; a
    pid someone else registered counts while any process has it.
    """
    psutil = _ps()
    path = pgdata / ".handle_pids.json"
    pids: list[int] = [p for p in _read_json(path, []) if isinstance(p, int)]
    ours = _read_json(pgdata / HANDLES_FILE, {})
    if not isinstance(ours, dict):
        ours = {}
    keep = []
    for pid in pids:
        if pid == drop:
            continue
        known = ours.get(str(pid))
        if known is not None:
            if alive(known):
                keep.append(pid)
        elif psutil.pid_exists(pid):
            keep.append(pid)
    if keep != pids:
        _write_json(path, keep)
    live = {k: v for k, v in ours.items() if k.isdigit() and int(k) in keep}
    if live != ours:
        _write_json(pgdata / HANDLES_FILE, live)
    return keep


def _clear_stale_pidfiles(pgdata: Path) -> None:
    """No postmaster runs for `pgdata`: its lock files are stale, and their pids may be another
    process's by now (postgres and pgserver would both take that for a running server)."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        socket_dir = Path(lines[4]) if len(lines) > 4 and lines[4].strip() else pgdata
    except OSError:
        socket_dir = pgdata
    for lock in {*socket_dir.glob(".s.PGSQL.*.lock"), *pgdata.glob(".s.PGSQL.*.lock"),
                 pgdata / "postmaster.pid"}:
        with contextlib.suppress(OSError):
            lock.unlink()
            log.info("removed stale %s", lock)


def prepare_pgdata(pgdata: Path) -> None:
    """Before `pgserver.get_server`: forget dead handles, remove a stale postmaster.pid, and stop
    a postmaster nobody holds a handle on (its owners died without stopping it)."""
    server = _pgserver()
    with server._lock:
        if os.getpid() not in _read_json(pgdata / ".handle_pids.json", []):
            # pgserver keeps a server object per data dir and process, and keeps it after a
            # cleanup that was not the last (it then stops nothing): its postmaster may be gone
            # by now, and joining would not register us. We hold no handle: start afresh.
            server._instances.pop(pgdata, None)
        if not (pgdata / "PG_VERSION").exists():
            return  # a new data directory: nothing can be stale (pgserver initialises it)
        handles = _prune_handles(pgdata)
        proc = postmaster(pgdata)
        if proc is None:
            if (pgdata / "postmaster.pid").exists():
                _clear_stale_pidfiles(pgdata)
        elif not handles:
            log.warning("stopping postmaster %d of %s: nobody uses it any more", proc.pid,
                        pgdata)
            stop_postmaster(proc)
            if postmaster(pgdata) is None and (pgdata / "postmaster.pid").exists():
                _clear_stale_pidfiles(pgdata)


def register_handle(pgdata: Path) -> None:
    """After `pgserver.get_server`: remember which process our handle pid is (so the pid is not
    taken for a live handle once another process has it)."""
    me = identity(os.getpid())
    if me is None:
        return
    with _pgserver_lock():
        ours = _read_json(pgdata / HANDLES_FILE, {})
        if not isinstance(ours, dict):
            ours = {}
        ours[str(os.getpid())] = me
        _write_json(pgdata / HANDLES_FILE, ours)


def release_pgdata(pgdata: Path, owner: int) -> str:
    """A dead owner's handle on `pgdata`: give it up, and stop the postmaster if nobody else
    holds one (what pgserver would have done had the owner exited cleanly)."""
    if not pgdata.is_dir():
        return f"{pgdata}: gone"
    _wait_for_starters(pgdata)
    with _pgserver_lock():
        handles = _prune_handles(pgdata, drop=owner)
        proc = postmaster(pgdata)
        if proc is None:
            return f"{pgdata}: no postmaster running"
        if handles:
            return f"{pgdata}: postmaster {proc.pid} kept for pids {handles}"
        stop_postmaster(proc)
        return f"{pgdata}: postmaster {proc.pid} stopped"


# ---------------------------------------------------------------------------------------------
# Run files


@contextlib.contextmanager
def _reap_lock(run_dir: Path) -> Iterator[None]:
    """One reaper at a time per run dir (the watchdog and the next start may race)."""
    import fcntl

    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def reap(run_file: Path) -> list[str]:
    """Stop what the run file's owner started, if the owner is gone; remove the file.

    Returns what was done (empty if the owner is alive or the file was already reaped)."""
    with _reap_lock(run_file.parent):
        record = _read_json(run_file, None)
        if not isinstance(record, dict):
            with contextlib.suppress(OSError):
                run_file.unlink()
            return []
        owner: Identity = record.get("owner") or {}
        if alive(owner):
            return []
        done = []
        for proc in record.get("processes", []):
            if terminate(proc, grace_s=1.0):
                done.append(f"{proc.get('kind', 'process')} {proc['pid']} stopped")
        for pgdata in record.get("postgres", []):
            done.append(release_pgdata(Path(pgdata), int(owner.get("pid", -1))))
        watchdog = record.get("watchdog")
        if watchdog and int(watchdog["pid"]) != os.getpid() and terminate(watchdog, 1.0):
            done.append(f"watchdog {watchdog['pid']} stopped")
        with contextlib.suppress(OSError):
            run_file.unlink()
        return done


def reap_stale(run_dir: Path) -> list[str]:
    """Reap the run files under `run_dir` whose owners are gone."""
    done: list[str] = []
    if not run_dir.is_dir():
        return done
    for run_file in sorted(run_dir.glob("*.json")):
        record = _read_json(run_file, None)
        if isinstance(record, dict) and alive(record.get("owner") or {}):
            continue
        what = reap(run_file)
        if what:
            log.warning("%s: its owner is gone; %s", run_file, "; ".join(what))
        done.extend(what)
    return done


_write_ends: set[int] = set()


def _close_write_ends_in_child() -> None:
    # A forked child must not keep our watchdogs waiting: only our death is their signal.
    for fd in list(_write_ends):
        with contextlib.suppress(OSError):
            os.close(fd)
    _write_ends.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_write_ends_in_child)

_ROOT = str(Path(__file__).resolve().parent.parent)
_BOOT = (f"import sys; sys.path.insert(0, {_ROOT!r}); from shared.supervise import watch; "
         "raise SystemExit(watch(int(sys.argv[1]), sys.argv[2]))")


class Supervisor:
    """The run file of this process under `run_dir`, and the watchdog that acts on it if this
    process dies. Use as a context manager around everything it is told about."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir.resolve()
        self.path = self.run_dir / f"{os.getpid()}.json"
        self._record: dict[str, Any] = {}
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._write_end: int | None = None
        self._lock = threading.Lock()

    def start(self) -> Self:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        reap_stale(self.run_dir)
        self._record = {"owner": identity(os.getpid()), "watchdog": None, "processes": [],
                        "postgres": []}
        self._save()
        if os.name == "posix":
            self._start_watchdog()
        return self

    def _start_watchdog(self) -> None:
        read_end, write_end = os.pipe()  # both non-inheritable: only pass_fds hands one on
        try:
            with (self.run_dir / "watchdog.log").open("ab") as log:
                self._watchdog = subprocess.Popen(
                    [sys.executable, "-I", "-c", _BOOT, str(read_end), str(self.path)],
                    pass_fds=(read_end,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=log, cwd="/", start_new_session=True)
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        self._write_end = write_end
        _write_ends.add(write_end)
        # No name: it may not have exec'd the interpreter yet.
        ident = identity(self._watchdog.pid) or {"pid": self._watchdog.pid, "started": 0.0}
        self._record["watchdog"] = {"pid": ident["pid"], "started": ident["started"]}
        self._save()

    def _save(self) -> None:
        _write_json(self.path, self._record)

    def watch_process(self, kind: str, pid: int) -> None:
        """A process we started, to stop if we die."""
        ident = identity(pid)
        if ident is None:
            return
        with self._lock:
            self._record["processes"].append({"kind": kind, **ident})
            self._save()

    def forget_process(self, pid: int) -> None:
        with self._lock:
            self._record["processes"] = [p for p in self._record["processes"]
                                         if p["pid"] != pid]
            self._save()

    def watch_postgres(self, pgdata: Path) -> None:
        """A pgserver handle we are about to take on `pgdata`, to give up if we die."""
        with self._lock:
            if str(pgdata) not in self._record["postgres"]:
                self._record["postgres"].append(str(pgdata))
                self._save()

    def forget_postgres(self, pgdata: Path) -> None:
        with self._lock:
            self._record["postgres"] = [p for p in self._record["postgres"] if p != str(pgdata)]
            self._save()

    def close(self) -> None:
        """Everything was stopped cleanly: drop the run file and dismiss the watchdog."""
        with contextlib.suppress(OSError):
            self.path.unlink()
        if self._write_end is not None:
            with contextlib.suppress(OSError):
                os.write(self._write_end, b"q")
            _write_ends.discard(self._write_end)
            os.close(self._write_end)
            self._write_end = None
        if self._watchdog is not None:
            # It leaves at once (or as soon as it has started): no need to wait for that; the
            # subprocess module reaps it later.
            self._watchdog.poll()
            self._watchdog = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


_shared: dict[tuple[int, Path], tuple[Supervisor, int]] = {}
_shared_lock = threading.Lock()


def acquire(run_dir: Path) -> Supervisor:
    """This process's supervisor for `run_dir`, started by the first user (one run file and one
    watchdog per process and run dir, however many servers it starts there)."""
    key = (os.getpid(), run_dir.resolve())
    with _shared_lock:
        sup, users = _shared.get(key) or (None, 0)
        if sup is None:
            sup = Supervisor(run_dir).start()
        _shared[key] = (sup, users + 1)
        return sup


def release(sup: Supervisor) -> None:
    """One user of `sup` is done; the last one closes it."""
    key = (os.getpid(), sup.run_dir)
    with _shared_lock:
        found, users = _shared.get(key) or (None, 0)
        if found is not sup:
            return
        if users > 1:
            _shared[key] = (sup, users - 1)
            return
        del _shared[key]
    sup.close()


def watch(read_end: int, run_file: str) -> int:
    """The watchdog: wait for the owner to go, then reap its run file."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    logging.basicConfig(format=f"%(asctime)s watchdog[{os.getpid()}] %(message)s")
    while True:
        try:
            data = os.read(read_end, 64)
        except InterruptedError:
            continue
        if not data:
            break  # every write end closed: the owner is gone
        if b"q" in data:
            return 0  # clean exit: the owner stopped everything itself
    path = Path(run_file)
    started = time.monotonic()
    record = _read_json(path, None)
    if not isinstance(record, dict):
        return 0
    owner = record.get("owner") or {}
    while alive(owner):  # end-of-file without the owner dying: wait until it really does
        time.sleep(0.2)
    done = reap(path)
    if done:
        log.warning("owner %s gone; %s (%.2fs)", owner.get("pid"), "; ".join(done),
                    time.monotonic() - started)
    return 0
