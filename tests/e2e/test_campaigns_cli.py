"""Campaigns from the command line: define, confirm, send, the frozen window, and the effect
report as JSON, CSV, XLSX and a chart."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from openpyxl import load_workbook

from tests.e2e.test_cli import mf, run_example_shop


def test_define_confirm_send_and_report(tmp_path: Path) -> None:
    history, data = run_example_shop(tmp_path, members=300, days=120, seed=4)

    def cli(*args: str) -> str:
        out = mf(*args, "--data-dir", str(data), cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        return out.stdout

    # The history's campaigns (messages sent by an earlier tool) are reported as they are.
    report = json.loads(cli("report", "campaign", "--shop", "demo-shop"))
    sent = sum(1 for e in {e["event_id"]: e for e in history}.values()
               if e["type"] == "campaign.message_sent")
    assert sum(r["sent"] for r in report["rows"]) == sent
    assert {t["campaign_id"] for t in report["totals"]} == {"cmp-01", "cmp-02", "cmp-03"}
    assert all(r["status"] in ("final", "provisional") for r in report["rows"])
    rows = list(csv.DictReader(io.StringIO(cli("report", "campaign", "--shop", "demo-shop",
                                               "--campaign", "cmp-02", "--format", "csv"))))
    assert rows and {r["campaign_id"] for r in rows} == {"cmp-02"}
    assert [r["channel"] for r in rows if not r["day"]] == ["all"]    # the totals row
    # Beside the credited last click, the other attribution models on the totals row.
    (models,) = [m for m in report["attribution_models"] if m["campaign_id"] == "cmp-02"]
    (total,) = [r for r in rows if not r["day"]]
    assert {k: total[k] for k in ("first_click_orders", "linear_revenue")} == {
        "first_click_orders": str(models["first_click_orders"]),
        "linear_revenue": models["linear_revenue"]}
    assert all(not r["first_click_orders"] for r in rows if r["day"])
    cli("report", "campaign", "--shop", "demo-shop", "--format", "xlsx", "--out",
        str(tmp_path / "effect.xlsx"), "--chart", str(tmp_path / "effect.png"))
    book = load_workbook(tmp_path / "effect.xlsx")
    assert book.sheetnames[:2] == ["by day", "totals"] and book.sheetnames[-1] == "about"
    assert book["by day"].max_row == len(report["rows"]) + 1
    assert book["by day"]["C1"].value == "day" and book["by day"]["E1"].value == "sent"
    assert isinstance(book["by day"]["C2"].value, datetime)       # a date, not text
    assert (tmp_path / "effect.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A new campaign for big spenders, running now: draft, confirmed, sent.
    now = datetime.now(UTC).replace(microsecond=0)
    definition = {"id": "win-back", "name": "Win back big spenders",
                  "target": {"tags": ["big-spender"]},
                  "offer": {"kind": "coupon", "amount": "20.00", "min_spend": "199.00",
                            "code": "BACK20", "valid_days": 14},
                  "channels": ["sms", "email"], "starts_at": (now - timedelta(hours=1)),
                  "ends_at": (now + timedelta(days=7)),
                  "attribution": {"click_window_hours": 24, "send_window_hours": 12}}
    file = tmp_path / "win-back.yaml"
    file.write_text(yaml.safe_dump(definition), encoding="utf-8")
    assert "saved as a draft" in cli("campaigns", "create", str(file), "--shop", "demo-shop")
    members = list(csv.DictReader(io.StringIO(cli(
        "members", "list", "--shop", "demo-shop", "--format", "csv", "--tag", "big-spender"))))
    assert members
    confirmed = cli("campaigns", "confirm", "--shop", "demo-shop", "--campaign", "win-back")
    assert f"audience of {len(members):,} member(s)" in confirmed
    out = tmp_path / "outgoing"
    sent_now = cli("campaigns", "send", "--shop", "demo-shop", "--campaign", "win-back",
                   "--out", str(out))
    assert f"{2 * len(members):,} message(s)" in sent_now
    lines = (out / "demo-shop--win-back.jsonl").read_text(encoding="utf-8").splitlines()
    assert {json.loads(line)["member_id"] for line in lines} == {m["member_id"] for m in members}
    listed = json.loads(cli("campaigns", "list", "--shop", "demo-shop", "--format", "json"))
    [win_back] = [c for c in listed if c["campaign_id"] == "win-back"]
    assert win_back["status"] == "sent" and win_back["audience"] == len(members)
    # The history's campaigns were sent by an earlier tool: listed with what went out.
    earlier = {c["campaign_id"]: c for c in listed if c["status"] == "history"}
    assert set(earlier) == {"cmp-01", "cmp-02", "cmp-03"}
    assert sum(c["messages_sent"] for c in earlier.values()) == sent
    assert win_back["offer"] == "coupon BACK20: 20.00 off on orders of 199.00 or more, " \
                                "valid 14 days"

    # Confirmed: the window is frozen, and a second send is refused.
    definition["ends_at"] = now + timedelta(days=14)
    file.write_text(yaml.safe_dump(definition), encoding="utf-8")
    moved = mf("campaigns", "create", str(file), "--shop", "demo-shop", "--data-dir", str(data),
               cwd=tmp_path)
    assert moved.returncode != 0 and "its time window cannot change" in moved.stderr
    again = mf("campaigns", "send", "--shop", "demo-shop", "--campaign", "win-back",
               "--data-dir", str(data), cwd=tmp_path)
    assert again.returncode != 0 and "was sent at" in again.stderr

    definition["offer"] = {"kind": "discount", "amount": "5.00"}
    file.write_text(yaml.safe_dump(definition), encoding="utf-8")
    bad = mf("campaigns", "create", str(file), "--shop", "demo-shop", "--data-dir", str(data),
             cwd=tmp_path)
    assert bad.returncode != 0
    assert "offer.rate: required for a discount offer" in bad.stderr
    assert "offer.amount: not part of a discount offer" in bad.stderr
