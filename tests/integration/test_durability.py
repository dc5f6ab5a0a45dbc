"""An acknowledged event survives a SIGKILL of any process of the embedded default: of `up`
right after the 202, of the broker, of PostgreSQL. The next `up` finds it in the archive and,
on its fresh broker, gives the workers what they had not applied."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.integration.test_supervision import Up, gone, storefront_key_for
from tests.support import key_header, wait_until


def post(url: str, body: dict[str, Any], key: str) -> tuple[int, Any]:
    request = urllib.request.Request(url + "/v1/events", data=json.dumps(body).encode(),
                                     headers=key_header(key))
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def member(url: str, shop: str, member_id: str, key: str) -> dict[str, Any] | None:
    request = urllib.request.Request(f"{url}/v1/shops/{shop}/members/{member_id}",
                                     headers=key_header(key))
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            record: dict[str, Any] = json.loads(r.read())
            return record
    except urllib.error.HTTPError:
        return None


def completed(n: int) -> dict[str, Any]:
    return {"event_id": f"d{n}", "type": "order.completed", "schema_version": 1,
            "shop_id": "s", "member_id": f"m{n}", "occurred_at": "2026-11-01T10:00:00Z",
            "payload": {"order_id": f"o{n}", "amount": "12.50"}}


def child(up: Up, kind: str) -> psutil.Process:
    """The embedded broker or PostgreSQL (the postmaster) that `up` started."""
    return up.started()[kind]


def test_an_event_acknowledged_right_before_a_sigkill_of_up_is_applied_after(
        tmp_path: Path) -> None:
    data = tmp_path / "state"
    key = storefront_key_for(data)
    first = Up(data)
    try:
        url = first.wait_up()
        status, answer = post(url, completed(1), key)
        assert (status, answer["status"]) == (202, "accepted")
    finally:
        first.stop()   # SIGKILL: no time for any worker to have applied it

    second = Up(data)
    try:
        url = second.wait_up()
        record = wait_until(lambda: member(url, "s", "m1", key), deadline_s=90,
                            what="the acknowledged trade to be applied after the restart")
        assert (record["completed_trades"], record["spend"]) == (1, "12.50")
    finally:
        second.stop()


@pytest.mark.parametrize(("kind", "named"), [("broker", "embedded broker"),
                                             ("postmaster", "embedded PostgreSQL")])
def test_when_a_part_of_the_stack_dies_up_stops_and_the_next_up_loses_nothing(
        tmp_path: Path, kind: str, named: str) -> None:
    data = tmp_path / "state"
    key = storefront_key_for(data)
    first = Up(data)
    try:
        url = first.wait_up()
        assert post(url, completed(2), key)[0] == 202
        victim = child(first, kind)
        victim.send_signal(signal.SIGKILL)
        # `up` notices that what it started is gone and stops, saying so, rather than
        # answer 503 for ever; what else it started goes with it.
        assert first.proc.wait(60) != 0
        assert named in first.log.read_text()
        wait_until(lambda: gone(victim), deadline_s=10, what=f"the {kind} to be gone")
    finally:
        first.stop()

    second = Up(data)
    try:
        url = second.wait_up()
        assert post(url, completed(3), key)[0] == 202
        for n in (2, 3):
            record = wait_until(lambda n=n: member(url, "s", f"m{n}", key),  # type: ignore[misc]
                                deadline_s=90, what=f"trade {n} to be applied")
            assert (record["completed_trades"], record["spend"]) == (1, "12.50")
    finally:
        second.stop()
