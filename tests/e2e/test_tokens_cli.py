"""Tokens from the command line: created once (last line), listed without secrets, revoked."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.test_cli import mf


def test_create_list_revoke(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "state")]
    made = mf("tokens", "create", "--shop", "tea", "--rights", "read,write", "--expires-in",
              "30d", "--name", "console-alice", *data, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip().splitlines()[-1]
    assert secret.startswith("mf_") and len(secret) == 46
    assert "console-alice" in made.stderr and "read, write" in made.stderr

    platform = mf("tokens", "create", "--all-shops", "--rights", "ingest", "--format", "json",
                  *data, cwd=tmp_path)
    assert platform.returncode == 0, platform.stderr
    doc = json.loads(platform.stdout)
    assert doc["shops"] == "all" and doc["rights"] == ["ingest"] and doc["token"] != secret

    listed = mf("tokens", "list", "--format", "json", *data, cwd=tmp_path)
    rows = json.loads(listed.stdout)
    assert [(r["name"], r["status"]) for r in rows] == [("console-alice", "active"),
                                                         ("platform-ingest", "active")]
    assert secret not in listed.stdout and doc["token"] not in listed.stdout
    only_tea = json.loads(mf("tokens", "list", "--shop", "tea", "--format", "json", *data,
                             cwd=tmp_path).stdout)
    assert [r["name"] for r in only_tea] == ["console-alice", "platform-ingest"]
    other = json.loads(mf("tokens", "list", "--shop", "coffee", "--format", "json", *data,
                          cwd=tmp_path).stdout)
    assert [r["name"] for r in other] == ["platform-ingest"]

    revoked = mf("tokens", "revoke", str(rows[0]["id"]), *data, cwd=tmp_path)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    again = mf("tokens", "revoke", str(rows[0]["id"]), *data, cwd=tmp_path)
    assert again.returncode != 0 and "no active token" in again.stderr
    table = mf("tokens", "list", *data, cwd=tmp_path).stdout
    assert "revoked" in table and "console-alice" in table

    for args, problem in ((["--shop", "tea", "--rights", "read,fly"], "unknown 'fly'"),
                          (["--shop", "tea", "--rights", "read", "--expires-in", "soon"],
                           "not a duration"),
                          (["--rights", "read"], "--shop"),
                          (["--shop", "tea", "--all-shops", "--rights", "read"], "not both")):
        bad = mf("tokens", "create", *args, *data, cwd=tmp_path)
        assert bad.returncode != 0 and problem in bad.stderr, (args, bad.stderr)


def test_import_export_and_erase_from_the_command_line(tmp_path: Path) -> None:
    from openpyxl import Workbook, load_workbook

    data = ["--data-dir", str(tmp_path / "state")]
    config = tmp_path / "tea.yaml"
    config.write_text("shop_id: tea\nname: 茶馆\nlevels:\n  basis: amount\n  ladder:\n"
                      "    - {name: 银卡, threshold: '100.00', discount: '0.98'}\n"
                      "tagging:\n  tags:\n    - {id: vip, name: 贵宾}\n", encoding="utf-8")
    applied = mf("config", "apply", str(config), *data, cwd=tmp_path)
    assert applied.returncode == 0, applied.stderr
    book = Workbook()
    book.active.append(["会员ID", "姓名", "手机", "标签", "等级"])
    book.active.append(["c1", "王五", 13812345678, "贵宾", "银卡"])
    book.active.append(["c2", "赵六", "139-0000-1111", "", ""])
    sheet = tmp_path / "customers.xlsx"
    book.save(sheet)

    bad = tmp_path / "bad.csv"
    bad.write_text("会员ID,手机\nc3,call me\n", encoding="utf-8")
    refused = mf("members", "import", str(bad), "--shop", "tea", *data, cwd=tmp_path)
    assert refused.returncode != 0
    assert "line 2, phone: 'call me' is not a phone number" in refused.stderr
    done = mf("members", "import", str(sheet), "--shop", "tea", *data, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 members created, 2 with personal data changed" in done.stdout
    assert "1 levels set, 1 tags added" in done.stdout
    again = mf("members", "import", str(sheet), "--shop", "tea", *data, cwd=tmp_path)
    assert "(imported before)" in again.stdout and "0 members created" in again.stdout

    out = tmp_path / "members.xlsx"
    exported = mf("members", "export", "--shop", "tea", "--format", "xlsx", "--out", str(out),
                  "--tag", "vip", *data, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    header, *rows = load_workbook(out).active.iter_rows(values_only=True)
    record = dict(zip(header, rows[0], strict=True))
    assert len(rows) == 1 and record["phone"] == "138****5678" and record["level name"] == "银卡"
    plain = mf("members", "export", "--shop", "tea", "--unmasked", "--member", "c2", *data,
               cwd=tmp_path)
    assert "13900001111" in plain.stdout and "赵六" in plain.stdout

    erased = mf("members", "erase", "--shop", "tea", "--member", "c2", "--reason", "asked",
                *data, cwd=tmp_path)
    assert erased.returncode == 0, erased.stderr
    after = mf("members", "export", "--shop", "tea", "--unmasked", "--member", "c2", *data,
               cwd=tmp_path)
    assert "13900001111" not in after.stdout and "赵六" not in after.stdout
    ghost = mf("members", "erase", "--shop", "tea", "--member", "nobody", "--reason", "x",
               *data, cwd=tmp_path)
    assert ghost.returncode != 0 and "no member 'nobody'" in ghost.stderr
