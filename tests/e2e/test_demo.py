"""The README's main job, small: generate, replay through the pipeline, summarise, exit."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path


def memberflow(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMBERFLOW_")}
    return subprocess.run([sys.executable, "-m", "memberflow", *args], capture_output=True,
                          text=True, timeout=600, cwd=cwd, env=env)


def demo(where: Path) -> str:
    proc = memberflow("demo", "--no-serve", "--members", "300", "--data-dir", str(where),
                      cwd=where.parent)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_demo_replays_a_sample_shop_and_every_command_then_answers_from_it(
        tmp_path: Path) -> None:
    # No --data-dir anywhere: the demo and the commands after it share the one default.
    proc = memberflow("demo", "--no-serve", "--members", "300", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    listed = memberflow("members", "list", "--shop", "demo-shop", "--format", "json",
                        cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) > 100
    assert "memberflow summary: shop demo-shop" in out
    # Measured after catching up, per worker.
    assert "consumer lag          archiver 0, campaigns 0, tagging 0, tiering 0" in out
    assert "accepted over HTTP    2" in out
    assert "Top 10 members by net spend" in out
    assert "not valid JSON" in out  # the malformed sample line is parked and shown


def _without_timings(summary: str) -> str:
    lines = summary.split("memberflow summary:", 1)[1].splitlines()
    return "\n".join(re.sub(r"in [0-9.]+ s.*", "", line) for line in lines
                     if "request " not in line)  # request ids are random


def test_the_same_demo_history_records_the_same_changes_twice(tmp_path: Path) -> None:
    """Two identical demo runs end in the same state and record the same level and tag changes,
    whatever the batching of their runs."""
    first, second = demo(tmp_path / "one"), demo(tmp_path / "two")
    assert "tag changes" in first
    assert _without_timings(first) == _without_timings(second)


def test_the_demo_never_replaces_state_it_did_not_make(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({
        "event_id": "e1", "type": "order.completed", "schema_version": 1, "shop_id": "mine",
        "member_id": "m1", "occurred_at": "2026-05-01T08:00:00Z",
        "payload": {"order_id": "o1", "amount": "10.00"}}) + "\n")
    state = tmp_path / "state"
    ran = memberflow("run", "--events", str(events), "--data-dir", str(state), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    refused = memberflow("demo", "--no-serve", "--members", "50", "--data-dir", str(state),
                         cwd=tmp_path)
    assert refused.returncode != 0
    assert "the demo did not make" in refused.stderr and "Traceback" not in refused.stderr
    kept = memberflow("members", "list", "--shop", "mine", "--format", "json", "--data-dir",
                      str(state), "--min-spend", "5.00", cwd=tmp_path)
    assert [m["member_id"] for m in json.loads(kept.stdout)] == ["m1"]

    # Ordinary mistakes: one clear line each, a non-zero exit, never an empty answer.
    mistakes = {
        ("members", "list", "--shop", "yours", "--data-dir", str(state)):
            "no shop 'yours' here (shops: mine)",
        ("members", "list", "--shop", "mine", "--data-dir", str(tmp_path / "typo")):
            "no memberflow state under",
        ("members", "list", "--shop", "mine", "--data-dir", str(state), "--min-spend", "5,000x"):
            "'5,000x' is not an amount like 5000, 5,000 or 5,000.00",
        ("levels", "history", "--shop", "yours", "--member", "m1", "--data-dir", str(state)):
            "no shop 'yours'",
    }
    for args, said in mistakes.items():
        answer = memberflow(*args, cwd=tmp_path)
        assert answer.returncode != 0 and said in answer.stderr, (args, answer.stderr)
        assert "Traceback" not in answer.stderr and answer.stdout == "", args
    assert not (tmp_path / "typo").exists()
    thousands = memberflow("members", "list", "--shop", "mine", "--data-dir", str(state),
                           "--min-spend", "5,000", "--format", "json", cwd=tmp_path)
    assert thousands.returncode == 0 and json.loads(thousands.stdout) == []


def test_a_busy_port_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = memberflow("api", "--data-dir", str(tmp_path / "state"), "--http-port",
                          str(port), cwd=tmp_path)
    assert proc.returncode != 0
    assert f"127.0.0.1:{port} is in use" in proc.stderr and "MEMBERFLOW_HTTP_PORT" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unreachable_broker_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as closed:       # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    proc = memberflow("api", "--kafka", f"127.0.0.1:{port}", "--data-dir",
                      str(tmp_path / "state"), "--http-port", "0", cwd=tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        f"Error: no Kafka broker answers at 127.0.0.1:{port} (tried for 30 s); check "
        "MEMBERFLOW_KAFKA or --kafka, or leave both unset for the embedded broker"]
