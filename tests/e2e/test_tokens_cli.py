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
