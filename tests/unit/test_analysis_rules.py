"""The analysis reports' pure rules: bucket edges, labels, dormancy days, months and weeks,
spreadsheet cells, and CJK text in charts."""

from __future__ import annotations

import warnings
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memberflow import analysis
from memberflow.abc_report import Period

amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("10000000"), places=2)


@given(amounts)
def test_a_nice_step_is_round_and_gives_at_most_the_buckets_asked(span: Decimal) -> None:
    step = analysis.nice_step(span)
    digits = step.normalize().as_tuple().digits
    assert step >= 1 and digits[0] in (1, 2, 5) and set(digits[1:]) <= {0}
    assert step * 8 >= span                    # 8 buckets reach the span
    assert span < 8 or step * 8 < span * 5     # and are not absurdly wide


@given(st.lists(amounts, min_size=1, max_size=8, unique=True).map(sorted))
def test_buckets_cover_zero_to_infinity_without_gaps(edges: list[Decimal]) -> None:
    buckets = analysis.buckets_of(edges)
    assert buckets[0][0] == 0 and buckets[-1][1] is None
    assert all(buckets[i][1] == buckets[i + 1][0] for i in range(len(buckets) - 1))
    assert analysis.parse_edges(",".join(str(e) for e in edges)) == edges


@pytest.mark.parametrize("text", ["", "x", "100,50", "0,10", "-5", "10,10"])
def test_bad_bucket_edges_are_refused_naming_the_field(text: str) -> None:
    with pytest.raises(ValueError, match="buckets"):
        analysis.parse_edges(text)


def test_the_labels_read_as_an_operator_writes_them() -> None:
    assert [b[2] for b in analysis.buckets_of([Decimal(50), Decimal(100)])] == [
        "0-50", "50-100", "100+"]


def test_dormancy_is_days_or_the_use_cycle_times_a_multiple() -> None:
    assert analysis.dormant_days(180, None, None) == 180
    assert analysis.dormant_days(None, 90, None) == 180
    assert analysis.dormant_days(None, 45, Decimal("1.5")) == 68     # 67.5 rounds half up
    for given_ in ((None, None, None), (30, 90, None)):
        with pytest.raises(ValueError, match="dormant"):
            analysis.dormant_days(*given_)


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2090, 1, 1)),
       st.integers(1, 800), st.sampled_from(["month", "week"]),
       st.sampled_from(["Asia/Shanghai", "America/New_York", "Australia/Lord_Howe"]))
def test_months_and_weeks_tile_the_period(end_day: date, days: int, unit: str,
                                          zone: str) -> None:
    end = datetime.combine(end_day, datetime.min.time(), tzinfo=ZoneInfo(zone))
    period = Period.rolling(end, days, zone)
    starts = analysis.bucket_starts(period, unit)
    assert starts[0] <= period.start and starts[-1] >= period.end
    assert starts[-2] < period.end                  # no empty bucket at the end
    assert starts == sorted(set(starts))
    for at in starts:
        local = at.astimezone(ZoneInfo(zone))
        assert (local.day == 1 if unit == "month" else local.weekday() == 0)


def test_cells_are_numbers_and_dates_where_they_look_like_them() -> None:
    assert analysis.cell("12.50") == Decimal("12.50")
    assert analysis.cell("2026-03-01") == date(2026, 3, 1)
    assert analysis.cell("2026-03-01T08:00:00Z") == datetime(2026, 3, 1, 8, 0)
    assert analysis.cell("2026-03") == "2026-03" and analysis.cell("4-5") == "4-5"
    assert analysis.cell("Sun") == "Sun" and analysis.cell(3) == 3


def test_a_chart_with_chinese_names_has_every_glyph(tmp_path: Path) -> None:
    from memberflow.charts import cjk_font, pyplot

    if cjk_font() is None:
        pytest.skip("no CJK font installed (Debian: fonts-noto-cjk; .ci/run installs it)")
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.bar(["金卡", "银卡", "普通会员"], [3, 2, 1])
    ax.set_title("会员等级分析")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.savefig(tmp_path / "levels.png")
    plt.close(fig)
    missing = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    assert missing == []


def test_without_the_cjk_font_the_same_chart_misses_glyphs(tmp_path: Path) -> None:
    """The check above can fail: matplotlib's own font has no CJK glyphs."""
    from memberflow.charts import pyplot

    plt = pyplot()
    fig, ax = plt.subplots()
    ax.set_title("会员", fontfamily="DejaVu Sans")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.savefig(tmp_path / "boxes.png")
    plt.close(fig)
    assert any("missing from font" in str(w.message) for w in caught)
