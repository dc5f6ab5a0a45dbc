"""The operator's commands, as a person runs them: a one-shot run into a data dir, then reads."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from memberflow.sample import bad_lines, generate, write_jsonl
from shared.money import from_cents
from tests.support import expected_member_figures

EXAMPLE = Path(__file__).parents[2] / "examples" / "shop.yaml"


def mf(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "memberflow", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=600)


def run_example_shop(tmp_path: Path, **sample: Any) -> tuple[list[dict[str, Any]], Path]:
    """A sample history run into a fresh data dir under the example shop configuration;
    returns the history and the data dir (the configuration is at tmp_path/shop.yaml)."""
    history = generate(**sample)
    events_file = tmp_path / "history.jsonl"
    write_jsonl(history, events_file)
    config = tmp_path / "shop.yaml"
    shutil.copy(EXAMPLE, config)
    data = tmp_path / "state"
    run = mf("run", "--events", str(events_file), "--data-dir", str(data), "--config",
             str(config), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "applied as version 1" in run.stdout
    return history, data


def test_run_then_list_members_and_apply_config(tmp_path: Path) -> None:
    history = generate(members=150, days=60, seed=2)
    events_file = tmp_path / "history.jsonl"
    write_jsonl(history, events_file, extra_lines=bad_lines())
    config = tmp_path / "shop.yaml"
    config.write_text("shop_id: demo-shop\nname: Demo Shop\n")
    data = tmp_path / "state"

    run = mf("run", "--events", str(events_file), "--data-dir", str(data), "--config",
             str(config), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert f"{len(history):,} accepted, {len(bad_lines())} rejected" in run.stdout
    assert "line " in run.stderr  # each rejected line is reported by number

    listed = mf("members", "list", "--data-dir", str(data), "--shop", "demo-shop",
                "--format", "json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    records = {r["member_id"]: r for r in json.loads(listed.stdout)}
    want = expected_member_figures(history)
    assert set(records) == {m for (_, m) in want}
    for (_, member), fig in want.items():
        assert records[member]["completed_trades"] == fig["completed_trades"]
        assert records[member]["spend"] == str(from_cents(fig["spend_cents"]))

    as_csv = mf("members", "list", "--data-dir", str(data), "--shop", "demo-shop",
                "--format", "csv", cwd=tmp_path)
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(rows) == len(records)

    again = mf("config", "apply", str(config), "--data-dir", str(data), cwd=tmp_path)
    assert again.returncode == 0 and "unchanged (version 1)" in again.stdout

    config.write_text("shop_id: demo-shop\nname: Demo Shop\nlevles: []\n")
    refused = mf("config", "apply", str(config), "--data-dir", str(data), cwd=tmp_path)
    assert refused.returncode != 0
    assert "levles: unknown key" in refused.stderr


def test_run_from_csv_names_the_payload_problem_and_parks_the_row(tmp_path: Path) -> None:
    header = "event_id,type,schema_version,shop_id,member_id,occurred_at,payload"
    good = ('c-1,order.completed,1,csv-shop,m1,2026-03-01T10:00:00Z,'
            '"{""order_id"":""o-1"",""amount"":""20.00""}"')
    # A spreadsheet edit left the amount twice: neither may silently win.
    twice = ('c-2,order.completed,1,csv-shop,m2,2026-03-01T11:00:00Z,'
             '"{""order_id"":""o-2"",""amount"":""5.00"",""amount"":""500.00""}"')
    events_file = tmp_path / "orders.csv"
    events_file.write_text("\n".join([header, good, twice]) + "\n")
    data = tmp_path / "state"

    run = mf("run", "--events", str(events_file), "--data-dir", str(data), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "1 accepted, 1 rejected" in run.stdout
    assert "line 3: payload.amount: duplicate key; each key may appear once" in run.stderr

    listed = mf("members", "list", "--data-dir", str(data), "--shop", "csv-shop",
                "--format", "json", cwd=tmp_path)
    assert [(r["member_id"], r["spend"]) for r in json.loads(listed.stdout)] == [("m1", "20.00")]
    letters = mf("dead-letters", "list", "--data-dir", str(data), cwd=tmp_path)
    assert letters.returncode == 0, letters.stderr
    assert "payload.amount: duplicate key" in letters.stdout
    assert "shop=csv-shop event=c-2" in letters.stdout
