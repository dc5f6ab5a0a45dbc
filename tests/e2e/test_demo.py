"""The README's main job, small: generate, replay through the pipeline, summarise, exit."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def demo(where: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "memberflow", "demo", "--no-serve", "--members", "300",
         "--data-dir", str(where), "--http-port", "0"],
        capture_output=True, text=True, timeout=600, cwd=where.parent)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_demo_replays_a_sample_shop_and_prints_a_summary(tmp_path: Path) -> None:
    out = demo(tmp_path / "demo")
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
