"""The record a running `up` leaves for the other commands on its data dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from memberflow import local
from memberflow.abc_report import CUSTOMER_COLUMNS
from memberflow.cli_read import ABC_CUSTOMER_COLUMNS, COLUMNS, query
from memberflow.readmodel import MEMBER_COLUMNS


def record(pid: int) -> local.Running:
    return local.Running(pid, "127.0.0.1:9092", "postgresql:///x", "http://127.0.0.1:1", "mf_t")


def test_a_live_record_is_found_and_only_its_owner_removes_it(tmp_path: Path) -> None:
    local.write(tmp_path / "run", record(os.getpid()))
    assert local.running(tmp_path) == record(os.getpid())
    assert oct((tmp_path / "run" / local.RECORD).stat().st_mode & 0o777) == "0o600"
    local.write(tmp_path / "run", record(1))       # another process's (init: alive)
    local.remove(tmp_path / "run")
    assert local.running(tmp_path) == record(1)


def test_a_dead_owner_or_a_damaged_file_is_no_stack(tmp_path: Path) -> None:
    assert local.running(tmp_path) is None
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                            capture_output=True, text=True, check=True)
    local.write(tmp_path / "run", record(int(exited.stdout)))
    assert local.running(tmp_path) is None
    (tmp_path / "run" / local.RECORD).write_text("{not json", encoding="utf-8")
    assert local.running(tmp_path) is None


def test_no_http_means_no_answer() -> None:
    assert local.get(local.Running(1, "b", "d", None, None), "/api/v1/me", []) is None


def test_the_list_columns_and_filters_are_the_databases() -> None:
    assert COLUMNS == MEMBER_COLUMNS and ABC_CUSTOMER_COLUMNS == CUSTOMER_COLUMNS
    from decimal import Decimal
    assert query({"f_member": ("m1",), "f_level": (2,), "f_abc": ("A", "none"),
                  "f_tag": ("vip",), "f_min": Decimal("1000"), "f_max": None,
                  "f_dormant": 30, "f_important": True, "f_rfm": ("at-risk", "lost"),
                  "f_alive": 0.3, "f_value": Decimal("50")}) == [
        ("member", "m1"), ("level", "2"), ("abc", "A"), ("abc", "none"), ("tag", "vip"),
        ("rfm_segment", "at-risk"), ("rfm_segment", "lost"), ("min_spend", "1000"),
        ("dormant_days", "30"), ("max_p_alive", "0.3"), ("min_expected_value", "50"),
        ("important", "true")]
