"""The README's main job, small: generate, replay through the pipeline, summarise, exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_replays_a_sample_shop_and_prints_a_summary(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "memberflow", "demo", "--no-serve", "--members", "300",
         "--data-dir", str(tmp_path / "demo"), "--http-port", "0"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)

    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "memberflow summary: shop demo-shop" in out
    assert "consumer lag          0 on every worker" in out
    assert "accepted over HTTP    2" in out
    assert "Top 10 members by net spend" in out
    assert "not valid JSON" in out  # the malformed sample line is parked and shown
