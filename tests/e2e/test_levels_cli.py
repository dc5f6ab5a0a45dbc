"""Levels, blacklist and ABC reports from the command line, as an operator uses them."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path

from tests.e2e.test_cli import mf, run_example_shop


def test_levels_blacklist_and_abc_reports(tmp_path: Path) -> None:
    _, data = run_example_shop(tmp_path, members=200, days=90, seed=5)

    def members(*filters: str) -> list[dict[str, str]]:
        out = mf("members", "list", "--data-dir", str(data), "--shop", "demo-shop",
                 "--format", "csv", *filters, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        return list(csv.DictReader(io.StringIO(out.stdout)))

    everyone = members()
    ladder = {"1": ("regular", "0.98", 100), "2": ("senior", "0.95", 500),
              "3": ("vip", "0.90", 2000), "4": ("supreme", "0.85", 5000)}
    for m in everyone:
        gross = Decimal(m["gross"])
        expected = max([0] + [int(n) for n, (_, _, bar) in ladder.items() if gross >= bar])
        assert int(m["level"]) == expected, m
        if expected:
            assert (m["level_name"], m["discount"]) == ladder[str(expected)][:2]
    seniors = members("--level", "2")
    assert seniors and all(m["level"] == "2" for m in seniors)
    assert {m["member_id"] for m in members("--abc", "A")} == {
        m["member_id"] for m in everyone if m["abc_class"] == "A"}

    # Preview a stricter and a looser ladder; nothing changes.
    looser = tmp_path / "looser.yaml"
    looser.write_text(
        "basis: amount\nladder:\n"
        "  - {name: regular, threshold: '50.00', discount: '0.98'}\n"
        "  - {name: senior, threshold: '300.00', discount: '0.95'}\n")
    preview = mf("levels", "preview", "--shop", "demo-shop", "--policy", str(looser),
                 "--format", "json", "--data-dir", str(data), cwd=tmp_path)
    assert preview.returncode == 0, preview.stderr
    figures = json.loads(preview.stdout)
    assert figures["members"] == len(everyone)
    assert sum(figures["holding"].values()) == len(everyone)
    assert figures["moved_up"] == sum(
        1 for m in everyone
        if max([0] + [n for n, bar in ((1, 50), (2, 300)) if Decimal(m["gross"]) >= bar])
        > int(m["level"]))
    assert members() == everyone

    broken = tmp_path / "broken.yaml"
    broken.write_text("basis: amount\nladder:\n"
                      "  - {name: a, threshold: '500.00', discount: '0.95'}\n"
                      "  - {name: b, threshold: '400.00', discount: '0.60'}\n")
    refused = mf("levels", "preview", "--shop", "demo-shop", "--policy", str(broken),
                 "--data-dir", str(data), cwd=tmp_path)
    assert refused.returncode != 0
    assert "levels.ladder[1].threshold: level 2 (b): 400.00 must be higher" in refused.stderr
    assert "levels.ladder[1].discount" in refused.stderr

    # A manual downgrade, explained by the history; a blacklisted member gets no discount.
    top = max(everyone, key=lambda m: (int(m["level"]), m["member_id"]))
    done = mf("levels", "set", "--shop", "demo-shop", "--member", top["member_id"], "--to", "1",
              "--reason", "staff account", "--operator", "alice", "--data-dir", str(data),
              cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "1 selected, 1 set to level 1" in done.stdout
    history_out = mf("levels", "history", "--shop", "demo-shop", "--member", top["member_id"],
                     "--format", "json", "--data-dir", str(data), cwd=tmp_path)
    changes = json.loads(history_out.stdout)
    table = mf("levels", "history", "--shop", "demo-shop", "--member", top["member_id"],
               "--data-dir", str(data), cwd=tmp_path).stdout.splitlines()
    assert table[0].split() == ["when", "(UTC)", "from", "to", "cause", "by", "reason", "/",
                                "event"]
    assert "staff account" in table[-1] and "alice" in table[-1] and "manual" in table[-1]
    ladder = {1: "regular", 2: "senior", 3: "vip", 4: "supreme"}
    assert table[-1].split()[2:4] == [ladder[changes[-1]["old_level"]], "regular"]
    assert changes[-1]["cause"] == "manual" and changes[-1]["operator"] == "alice"
    assert changes[-1]["reason"] == "staff account"
    assert changes[0]["cause"] == "auto" and changes[0]["triggering_event_id"]
    no_reason = mf("levels", "set", "--shop", "demo-shop", "--all", "--to", "9",
                   "--reason", "x", "--data-dir", str(data), cwd=tmp_path)
    assert no_reason.returncode != 0 and "level 9 does not exist" in no_reason.stderr

    black = mf("members", "blacklist", "--shop", "demo-shop", "--member", top["member_id"],
               "--reason", "fraud", "--data-dir", str(data), cwd=tmp_path)
    assert black.returncode == 0, black.stderr
    [listed] = members("--member", top["member_id"])
    assert listed["blacklisted"] == "True" and listed["discount"] == "1.00"
    ghost = mf("members", "blacklist", "--shop", "demo-shop", "--member", "ghost",
               "--reason", "fraud", "--data-dir", str(data), cwd=tmp_path)
    assert ghost.returncode != 0 and "no member 'ghost'" in ghost.stderr
    shown = json.loads(mf("members", "blacklisted", "--shop", "demo-shop", "--format", "json",
                          "--data-dir", str(data), cwd=tmp_path).stdout)
    assert [(b["member_id"], b["reason"]) for b in shown] == [(top["member_id"], "fraud")]

    # Everyone at once: looked at first, then confirmed.
    level_one = sum(1 for m in members() if m["level"] != "1")
    looked = mf("levels", "set", "--shop", "demo-shop", "--all", "--to", "1", "--reason",
                "reset", "--dry-run", "--data-dir", str(data), cwd=tmp_path)
    assert looked.returncode == 0 and "would be set to level 1 (dry run" in looked.stdout
    assert sum(1 for m in members() if m["level"] != "1") == level_one

    # Customer ABC: counts follow ceil(p·n); product ABC: table, CSV and Pareto PNG.
    customers = mf("report", "abc-customers", "--shop", "demo-shop", "--data-dir", str(data),
                   cwd=tmp_path)
    assert customers.returncode == 0, customers.stderr
    doc = json.loads(customers.stdout)
    n = doc["ranked_members"]
    assert doc["counts"]["A"] == -(-5 * n // 100) and doc["counts"]["A"] + doc["counts"]["B"] \
        == -(-20 * n // 100)
    stored = {m["member_id"]: m["abc_class"] for m in everyone}
    assert {m["member_id"]: m["abc_class"] for m in doc["members"]} == {
        k: v for k, v in stored.items() if v}

    chart = tmp_path / "pareto.png"
    products = mf("report", "abc-products", "--shop", "demo-shop", "--format", "csv",
                  "--chart", str(chart), "--data-dir", str(data), cwd=tmp_path)
    assert products.returncode == 0, products.stderr
    rows = list(csv.DictReader(io.StringIO(products.stdout)))
    assert rows and rows[-1]["cumulative_sales_pct"] == "100.00"
    assert [r["product_class"] for r in rows] == sorted(r["product_class"] for r in rows)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
