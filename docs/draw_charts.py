"""Draw the charts the README shows, from the sample shop of `make demo`.

    .venv/bin/python docs/draw_charts.py     (or: make charts)

Replays the sample shop into a scratch data dir and writes each report's chart to
docs/charts/NAME.png and its CSV to docs/charts/NAME.csv (the README quotes from them), with
the commands an operator would type.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "charts"
SHOP = "demo-shop"
# Each report as the README shows it: its name and its options beyond the defaults.
REPORTS: dict[str, list[str]] = {
    "levels": [], "time": [], "amounts": [], "counts": [],
    # The sample covers 180 days: weeks, and a dormancy that half a year can show.
    "growth": ["--unit", "week", "--dormant-after", "45", "--lost-after", "90", "--days", "182"],
    "rfm": [], "coupons": [], "predicted": []}


def memberflow(*args: str) -> None:
    command = [str(Path(sys.executable).parent / "memberflow"), *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr}")


def main() -> None:
    OUT.mkdir(exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="memberflow-charts-"))
    try:
        data = ["--data-dir", str(scratch)]
        memberflow("demo", "--no-serve", *data)
        for name, options in REPORTS.items():
            memberflow("report", name, "--shop", SHOP, *options, *data, "--format", "csv",
                       "--out", str(OUT / f"{name}.csv"), "--chart", str(OUT / f"{name}.png"))
            print(f"docs/charts/{name}.png, .csv")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
