"""Commands beside a running `memberflow up` on the same data dir: reads ask its API (loading no
database driver) and answer as the database would; `worker` joins its stack unprompted; when it
stops, its record and its token go with it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from memberflow import local
from shared.db import make_engine
from tests.e2e.test_cli import mf, run_example_shop
from tests.running import RunningUp, command
from tests.support import wait_until

# Runs a command in this interpreter and reports whether it loaded a database driver.
LOADED = """
import sys
from memberflow.cli import main
main(sys.argv[1:], standalone_mode=False)
print(json.dumps(sorted(m for m in ("sqlalchemy", "psycopg", "pydantic") if m in sys.modules)),
      file=sys.stderr)
""".replace("import sys", "import json, sys", 1)


def recomputed_to_now(data: Path) -> bool:
    """`up` ticks with the wall clock, so its clock jumps from the history's last event to now:
    whether tiering's classes, RFM scores and predictions have caught up with that jump (the
    reads compared below would otherwise race their recomputes)."""
    record = local.running(data)
    assert record is not None
    engine = make_engine(record.database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql(
                "SELECT count(*) FROM abc_shops WHERE applying_as_of IS NOT NULL "
                "OR rfm_applying_as_of IS NOT NULL "
                "OR coalesce(computed_as_of, '-infinity') < now() - interval '1 hour' "
                "OR coalesce(rfm_computed_as_of, '-infinity') < now() - interval '1 hour' "
                "OR coalesce(predicted_as_of, '-infinity') < now() - interval '1 day'"
            ).scalar() == 0
    finally:
        engine.dispose()


@pytest.fixture
def up(tmp_path: Path) -> Iterator[tuple[RunningUp, Path]]:
    _, data = run_example_shop(tmp_path, members=300, days=60, seed=5)
    running = RunningUp(data)
    try:
        running.wait_up()
        wait_until(lambda: recomputed_to_now(data), deadline_s=120,
                   what="tiering's recomputes to reach the wall clock", interval=0.5)
        yield running, data
    finally:
        running.stop()


def direct(data: Path, *args: str) -> str:
    """The same command reading the database itself (a URL given: the API is not asked)."""
    record = local.running(data)
    assert record is not None
    out = mf(*args, "--database-url", record.database_url, cwd=data.parent)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_reads_ask_the_running_api_and_answer_as_the_database(
        up: tuple[RunningUp, Path], tmp_path: Path) -> None:
    running, data = up
    record_file = data / "run" / local.RECORD
    assert stat.S_IMODE(record_file.stat().st_mode) == 0o600   # it holds a token
    record = local.running(data)
    assert record is not None and record.pid == running.proc.pid and record.token

    shop = ["--shop", "demo-shop"]
    for args in (["members", "list", *shop, "--format", "json"],
                 ["members", "list", *shop, "--format", "csv"],
                 ["members", "list", *shop, "--min-spend", "1,000", "--format", "csv"],
                 ["members", "list", *shop, "--level", "2", "--abc", "A"],
                 ["members", "blacklisted", *shop], ["members", "blacklisted", *shop,
                                                      "--format", "json"],
                 ["tags", "list", *shop], ["tags", "list", *shop, "--format", "json"],
                 ["campaigns", "list", *shop], ["campaigns", "list", *shop, "--format", "json"],
                 ["report", "abc-customers", *shop, "--format", "csv"],
                 ["dead-letters", "list", *shop], ["dead-letters", "list", *shop, "--limit", "1"]):
        listed = [sys.executable, "-c", LOADED, *args, "--data-dir", str(data)]
        fast = subprocess.run(listed, capture_output=True, text=True, timeout=120, check=False)
        assert fast.returncode == 0, fast.stderr
        assert json.loads(fast.stderr.strip().splitlines()[-1]) == [], (args, "loaded a driver")
        assert fast.stdout == direct(data, *args), args
    assert len(json.loads(direct(data, "members", "list", "--shop", "demo-shop"))) > 100

    # An unknown shop is still the database's own error (the API's 404 is not trusted alone).
    unknown = mf("members", "list", "--shop", "nope", "--data-dir", str(data), cwd=tmp_path)
    assert unknown.returncode != 0 and "no shop 'nope' here (shops: demo-shop)" in unknown.stderr

    # A worker started with only the data dir joins the running stack.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMBERFLOW_")}
    worker = subprocess.Popen([*command(), "-v", "worker", "tagging", "--data-dir", str(data)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=env)
    lines: list[str] = []
    assert worker.stderr is not None
    err = worker.stderr
    threading.Thread(target=lambda: lines.extend(iter(err.readline, "")), daemon=True).start()

    def joined() -> bool:
        assert worker.poll() is None, "".join(lines)
        return any("tagging assigned memberflow." in x for x in lines)
    try:
        wait_until(joined, deadline_s=120, what="the extra worker to join the group")
    finally:
        worker.terminate()
        assert worker.wait(60) == 0, "".join(lines)

    # Stopped: the record goes, the run's token is revoked, reads open the database again.
    assert running.interrupt() == 0
    assert not record_file.exists()
    listed = mf("tokens", "list", "--data-dir", str(data), "--format", "json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    (made,) = [t for t in json.loads(listed.stdout) if t["name"] == local.token_name(data)]
    assert made["status"] == "revoked"
    again = mf("members", "list", "--shop", "demo-shop", "--data-dir", str(data), cwd=tmp_path)
    assert again.returncode == 0 and len(json.loads(again.stdout)) > 100


def test_a_worker_without_a_stack_says_where_it_looked(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMBERFLOW_")}
    out = subprocess.run([*command(), "worker", "tiering", "--data-dir", str(tmp_path / "x")],
                         capture_output=True, text=True, env=env, timeout=60, check=False)
    assert out.returncode == 2
    assert "or a `memberflow up` running on the data dir" in out.stderr
    assert str(tmp_path / "x") in out.stderr
