"""What a running `memberflow up` tells the other commands on the same data dir.

`up` (and `api`, and the serving demo) write `run/up.record` under the data dir while they run,
readable by the owner only: the broker's address, the database URL, the HTTP address, and a
read-only platform token made for this run (revoked when it stops, or by the next start if it
died). With it,
- `memberflow worker NAME` joins the running stack without being told where it is;
- read commands ask the running API instead of opening the database themselves, which spares
  them loading the database drivers: they answer in a fraction of a second.

Only the standard library here: the point is what this module does not load.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RECORD = "up.record"   # JSON; not *.json, which names the supervisor's run files
TOKEN_NAME = "memberflow up: local read commands"


def token_name(data_dir: Path) -> str:
    """The run token's name: per machine and data dir, so that the stale tokens a start
    revokes are its own data dir's, never those of another process on the same database."""
    return f"{TOKEN_NAME} ({socket.gethostname()}:{data_dir.resolve()})"[:100]


@dataclass(frozen=True)
class Running:
    pid: int
    bootstrap: str
    database_url: str
    http_url: str | None
    token: str | None


def data_dir_from(given: Path | None) -> Path:
    """The data dir a command works on: given, else $MEMBERFLOW_DATA_DIR, else `.memberflow`
    (the same rule as `shared.config.Settings`)."""
    return given or Path(os.environ.get("MEMBERFLOW_DATA_DIR") or ".memberflow")


def write(run_dir: Path, running: Running) -> None:
    """Record a running stack (replacing the file whole; owner-only: it holds a token)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    part = run_dir / f".{RECORD}.{os.getpid()}"
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(asdict(running), out)
    os.replace(part, run_dir / RECORD)


def remove(run_dir: Path) -> None:
    """Forget the record, if it is still this process's."""
    found = _load(run_dir / RECORD)
    if found is not None and found.pid == os.getpid():
        (run_dir / RECORD).unlink(missing_ok=True)


def running(data_dir: Path) -> Running | None:
    """The stack running on `data_dir`, if its process is alive."""
    found = _load(data_dir / "run" / RECORD)
    if found is None:
        return None
    try:
        os.kill(found.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:   # alive, someone else's
        pass
    return found


def _load(path: Path) -> Running | None:
    try:
        return Running(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def get(stack: Running, path: str, params: list[tuple[str, str]], timeout_s: float = 30.0
        ) -> Any | None:
    """GET a JSON document from the running API with the run's token; None when that cannot
    answer (no HTTP, no token, an error status): the caller then reads the database itself,
    which also gives the error its own words."""
    if stack.http_url is None or stack.token is None:
        return None
    url = f"{stack.http_url}{path}?{urllib.parse.urlencode(params)}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {stack.token}",
                                                   "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
