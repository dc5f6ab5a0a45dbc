"""The README shows every customer-analysis report with an example and its chart."""

from __future__ import annotations

import re
from pathlib import Path

from memberflow import analysis

ROOT = Path(__file__).resolve().parents[2]


def test_every_report_has_its_example_and_chart_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = readme[readme.index("### Each report on the sample shop"):]
    charts = set(re.findall(r"\]\((docs/charts/[a-z]+\.png)\)", shown))
    assert charts == {f"docs/charts/{name}.png" for name in analysis.BY_PERIOD}
    for chart in charts:
        assert (ROOT / chart).read_bytes()[:4] == b"\x89PNG", chart
        name = Path(chart).stem
        # Its command, then an example of what it prints, before its chart.
        section = shown[shown.index(f"**{name}**"):shown.index(f"]({chart})")]
        assert f"report {name}" in section and "```" in section, name
