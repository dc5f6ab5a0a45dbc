"""Tags from the command line, as an operator uses them: rules from the example configuration,
manual tagging, previews, history, refusals with their messages."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import yaml

from tests.e2e.test_cli import mf, run_example_shop


def test_tags_from_rules_by_hand_and_their_history(tmp_path: Path) -> None:
    history, data = run_example_shop(tmp_path, members=200, days=240, seed=3)
    config = tmp_path / "shop.yaml"

    def cli(*args: str) -> str:
        out = mf(*args, "--data-dir", str(data), cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def members(*filters: str) -> list[dict[str, str]]:
        return list(csv.DictReader(io.StringIO(
            cli("members", "list", "--shop", "demo-shop", "--format", "csv", *filters))))

    everyone = members()
    clock = max(datetime.fromisoformat(e["occurred_at"]) for e in history
                if e["type"].startswith("order."))
    for m in everyone:
        tags = set(m["tags"].split("|")) - {""}
        big = Decimal(m["spend"]) >= 500 and int(m["completed_trades"]) >= 3
        assert ("big-spender" in tags) == big, m
        last = m["last_purchase_at"]
        dormant = bool(last) and datetime.fromisoformat(last) <= clock - timedelta(days=180)
        assert ("dormant-180" in tags) == dormant, m
    dormant_ids = {m["member_id"] for m in everyone if "dormant-180" in m["tags"]}
    assert dormant_ids and {m["member_id"] for m in members("--tag", "dormant-180")} == dormant_ids

    listed = cli("tags", "list", "--shop", "demo-shop")
    assert "6 of 100 tags" in listed and "r-big-spender: when spend >= 500" in listed
    counted = json.loads(cli("tags", "preview", "--shop", "demo-shop", "--rule",
                             "spend >= 500 and trades >= 3", "--format", "json"))
    assert counted["members"] == sum("big-spender" in m["tags"] for m in everyone)

    # By hand: everyone dormant gets VIP care (add to). A change to a filtered set shows what
    # it would do first; without a terminal to ask on it needs --yes.
    args = ("tags", "add", "vip-care", "--shop", "demo-shop", "--tag", "dormant-180",
            "--reason", "win-back calls", "--operator", "ana")
    looked = cli(*args, "--dry-run")
    assert f"{len(dormant_ids)} selected, {len(dormant_ids)} would gain 'vip-care' (dry run" \
        in looked
    assert not [m for m in members("--tag", "vip-care")]
    unasked = mf(*args, "--data-dir", str(data), cwd=tmp_path)
    assert unasked.returncode != 0 and "confirm with --yes" in unasked.stderr
    assert f"{len(dormant_ids)} would gain" in unasked.stdout
    assert not [m for m in members("--tag", "vip-care")]
    added = cli(*args, "--yes")
    assert f"{len(dormant_ids)} selected, {len(dormant_ids)} gained 'vip-care'" in added
    ghost = mf("tags", "add", "vip-care", "--shop", "demo-shop", "--member", first_dormant(
        dormant_ids), "--member", "ghost", "--reason", "x", "--data-dir", str(data), cwd=tmp_path)
    assert ghost.returncode != 0 and "no member 'ghost' in shop 'demo-shop'" in ghost.stderr
    refused = mf("tags", "add", "big-spender", "--shop", "demo-shop", "--all",
                 "--reason", "x", "--data-dir", str(data), cwd=tmp_path)
    assert refused.returncode != 0
    assert "tag 'big-spender' follows rule 'r-big-spender'" in refused.stderr
    unnamed = mf("tags", "remove", "vip-care", "--shop", "demo-shop", "--reason", "x",
                 "--data-dir", str(data), cwd=tmp_path)
    assert unnamed.returncode == 2 and "--all" in unnamed.stderr
    first = sorted(dormant_ids)[0]
    cli("members", "important", "--shop", "demo-shop", "--member", first, "--reason", "VIP")
    assert [m["member_id"] for m in members("--important")] == [first]
    story = json.loads(cli("tags", "history", "--shop", "demo-shop", "--member", first,
                           "--format", "json"))
    shown = cli("tags", "history", "--shop", "demo-shop", "--member", first).splitlines()
    assert shown[0].split()[:4] == ["when", "(UTC)", "tag", "change"]
    assert "(vip-care)" in shown[-1] and "ana" in shown[-1] and "win-back calls" in shown[-1]
    assert any(s["tag_id"] == "dormant-180" and s["cause"] == "rule" for s in story)
    times = [s["effective_at"] for s in story]
    assert times == sorted(times)   # each member's history is in order
    assert story[-1]["tag_id"] == "vip-care" and story[-1]["operator"] == "ana"
    assert story[-1]["reason"] == "win-back calls"

    # A stricter rule: preview first, then apply; both report the same numbers.
    doc = yaml.safe_load(config.read_text(encoding="utf-8"))
    doc["tagging"]["rules"][0]["when"] = "spend >= 1000 and trades >= 3"
    stricter = tmp_path / "stricter.yaml"
    stricter.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    would = json.loads(cli("tags", "preview", "--shop", "demo-shop", "--config", str(stricter),
                           "--format", "json"))
    assert [o["tag_id"] for o in would] == ["big-spender"]
    losing = sum(1 for m in everyone if "big-spender" in m["tags"]
                 and Decimal(m["spend"]) < 1000)
    assert would[0]["lost"] == losing and would[0]["gained"] == 0
    applied = cli("config", "apply", str(stricter))
    assert f"tag big-spender (r-big-spender) re-evaluated: 0 gained, {losing:,} lost" in applied

    # Refusals name the key and the rule broken; nothing is applied.
    doc["tagging"]["rules"][0]["when"] = "spnd >= 1000"
    doc["tagging"]["rules"][4]["goods"] = [f"SKU-{i:04d}" for i in range(1, 12)]
    doc["tagging"]["tags"] += [{"id": f"t{i}", "name": f"T{i}"} for i in range(95)]
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    check = mf("config", "check", str(broken), cwd=tmp_path)
    assert check.returncode != 0
    assert "tagging.rules[0].when: unknown field 'spnd' at column 1" in check.stderr
    assert "tagging.rules[4].goods[10]: a goods rule names at most 10 SKUs: 'SKU-0011'" \
        in check.stderr
    assert "tagging.tags[100]: a shop has at most 100 tags: 't94' would be tag number 101" \
        in check.stderr

    doc = yaml.safe_load(stricter.read_text(encoding="utf-8"))
    doc["tagging"]["groups"] = [g for g in doc["tagging"]["groups"] if g["id"] != "interests"]
    doc["tagging"]["tags"] = [t for t in doc["tagging"]["tags"] if t["id"] != "tea-lover"]
    doc["tagging"]["rules"] = [r for r in doc["tagging"]["rules"] if r["tag"] != "tea-lover"]
    no_group = tmp_path / "no-group.yaml"
    no_group.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    refused = mf("config", "apply", str(no_group), "--data-dir", str(data), cwd=tmp_path)
    assert refused.returncode != 0
    assert "group 'interests' cannot be deleted while it holds tag 'tea-lover'" in refused.stderr
    assert "tea-lover" in cli("tags", "list", "--shop", "demo-shop")  # nothing was applied


def first_dormant(ids: set[str]) -> str:
    return sorted(ids)[0]
