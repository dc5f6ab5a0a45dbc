"""`memberflow api`: the HTTP front alone, as a platform engineer runs it beside the workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support import wait_until


def call(url: str, token: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_api_serves_ingest_and_the_admin_api_without_workers(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMBERFLOW_")}
    cli = [sys.executable, "-m", "memberflow"]
    state = ["--data-dir", str(tmp_path / "state")]
    made = subprocess.run([*cli, "tokens", "create", "--shop", "s1", "--rights",
                           "ingest,read,write", *state], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    proc = subprocess.Popen([*cli, "api", *state, "--http-port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    assert proc.stdout is not None
    out = proc.stdout
    threading.Thread(target=lambda: lines.extend(iter(out.readline, "")), daemon=True).start()
    try:
        def started() -> str | None:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            line = next((x for x in lines if x.startswith("memberflow api:")), None)
            return line.split("ingest ")[1].split("/v1/")[0] if line else None
        base = wait_until(started, deadline_s=120, what="memberflow api to start")
        status, answer = call(base + "/v1/events", token, {
            "event_id": "e1", "type": "order.completed", "schema_version": 1, "shop_id": "s1",
            "member_id": "m1", "occurred_at": "2026-05-01T08:00:00Z",
            "payload": {"order_id": "o1", "amount": "10.00"}})
        assert (status, answer["status"]) == (202, "accepted")
        status, me = call(base + "/api/v1/me", token)
        assert status == 200 and me["shops"] == ["s1"]
        # No worker runs here: the event is archived, and no member exists until one does.
        status, fate = call(base + "/v1/events/e1", token)
        assert status == 200 and fate["archived"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
