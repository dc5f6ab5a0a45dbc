"""One meaning of a day: product-report periods in the shop's days, dormancy in 24-hour days,
and the shop's time zone stated (and its default said) rather than silently assumed."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from memberflow.abc_report import BadPeriod, Period, day_start
from services.tagging.rules import compile_rule
from shared.filters import MemberFilter, _shop_clock_sql
from shared.shopconfig import DEFAULT_TIMEZONE, ShopConfig, parse

SHANGHAI = ZoneInfo("Asia/Shanghai")
ONE_US = timedelta(microseconds=1)


def test_a_shop_day_starts_at_its_own_midnight() -> None:
    assert day_start(date(2026, 3, 1), SHANGHAI) == datetime(2026, 2, 28, 16, tzinfo=UTC)
    assert day_start(date(2026, 3, 1), ZoneInfo("UTC")) == datetime(2026, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize(("zone", "day"), [
    ("Asia/Shanghai", date(2026, 3, 1)),
    ("America/New_York", date(2026, 3, 8)),     # 23 hours long (clocks forward at 02:00)
    ("America/New_York", date(2026, 11, 1)),    # 25 hours long (clocks back at 02:00)
    ("America/Santiago", date(2022, 9, 11)),    # midnight skipped: clocks go 00:00 -> 01:00
    ("America/Havana", date(2025, 11, 2)),      # midnight twice: clocks go 01:00 -> 00:00
    ("Pacific/Apia", date(2011, 12, 31)),       # a day that never happened there
])
def test_day_start_is_the_first_instant_of_the_day(zone: str, day: date) -> None:
    tz = ZoneInfo(zone)
    start = day_start(day, tz)
    if zone == "Pacific/Apia":  # 2011-12-30 was skipped: the 31st follows the 29th
        assert (start - ONE_US).astimezone(tz).date() == date(2011, 12, 29)
        return
    assert start.astimezone(tz).date() == day
    assert (start - ONE_US).astimezone(tz).date() == day - timedelta(days=1)


def test_shop_days_are_whole_days_from_the_first_midnight_to_the_one_after_the_last() -> None:
    period = Period.days(date(2026, 3, 1), date(2026, 3, 2), "Asia/Shanghai")
    assert (period.start, period.end) == (datetime(2026, 2, 28, 16, tzinfo=UTC),
                                          datetime(2026, 3, 2, 16, tzinfo=UTC))
    assert (period.includes_start, period.includes_end) == (True, False)
    doc = period.to_dict()
    assert doc == {"kind": "days", "timezone": "Asia/Shanghai", "first_day": "2026-03-01",
                   "last_day": "2026-03-02", "rolling_days": None,
                   "from": "2026-03-01T00:00:00+08:00", "to": "2026-03-03T00:00:00+08:00",
                   "includes_from": True, "includes_to": False,
                   "description": period.describe()}
    assert period.describe() == (
        "orders completed from 2026-03-01 00:00:00+08:00 up to, not including, "
        "2026-03-03 00:00:00+08:00: the shop's days 2026-03-01 to 2026-03-02 "
        "(time zone Asia/Shanghai)")
    one = Period.days(date(2026, 3, 8), date(2026, 3, 8), "America/New_York")
    assert one.end - one.start == timedelta(hours=23)


def test_the_last_day_before_the_first_is_refused() -> None:
    with pytest.raises(BadPeriod, match="before the first"):
        Period.days(date(2026, 3, 2), date(2026, 3, 1), "UTC")
    with pytest.raises(BadPeriod, match="beyond the dates"):
        Period.days(date(9999, 12, 31), date(9999, 12, 31), "UTC")


def test_a_rolling_period_is_n_times_24_hours_up_to_and_including_the_clock() -> None:
    clock = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
    period = Period.rolling(clock, 7, "America/New_York")  # across the DST change of 03-08
    assert (period.start, period.end) == (clock - timedelta(hours=168), clock)
    assert (period.includes_start, period.includes_end) == (False, True)
    assert period.to_dict()["rolling_days"] == 7
    assert period.to_dict()["from"] == "2026-03-03T07:30:00-05:00"
    assert period.to_dict()["to"] == "2026-03-10T08:30:00-04:00"
    assert period.describe() == (
        "orders completed after 2026-03-03 07:30:00-05:00 up to and including "
        "2026-03-10 08:30:00-04:00: the 7 x 24 hours up to the shop's clock "
        "(time zone America/New_York)")
    bare = Period.rolling(clock, 7, "UTC", configured=False)
    assert bare.describe().endswith("(time zone UTC: the shop has no configuration)")


def test_the_dormancy_filter_is_the_tag_rule_days_since_last_purchase() -> None:
    where, params = MemberFilter(dormant_days=90).where("s")
    rule, rule_params = compile_rule("days_since_last_purchase >= 90").sql(
        facts="m", clock=_shop_clock_sql(), prefix="f_dormant")
    assert f"(m.last_purchase_at IS NULL OR {rule})" in where
    assert params == {"f_shop": "s", **rule_params}
    assert "days =>" not in where and rule_params == {"f_dormant_0": 90 * 24}
    assert _shop_clock_sql() in where


@pytest.mark.parametrize("days", [-1, 2_000_000])
def test_a_dormancy_the_tag_rules_cannot_express_is_refused(days: int) -> None:
    with pytest.raises(ValueError, match=f"dormant_days={days}"):
        MemberFilter(dormant_days=days).where("s")


def test_the_default_time_zone_is_asia_shanghai_and_said_to_be_the_default() -> None:
    assert DEFAULT_TIMEZONE == "Asia/Shanghai"
    about = ShopConfig.model_fields["timezone"].description or ""
    assert "Asia/Shanghai" in about and "Default" in about
    bare = parse({"shop_id": "s", "name": "n"})
    assert bare.timezone == "Asia/Shanghai" and bare.timezone_is_default
    assert bare.timezone_line() == (
        "time zone: Asia/Shanghai (the default; set `timezone:` to change it)")
    named = parse({"shop_id": "s", "name": "n", "timezone": "Asia/Shanghai"})
    assert not named.timezone_is_default
    assert named.timezone_line() == "time zone: Asia/Shanghai"
    assert parse({"shop_id": "s", "name": "n", "timezone": "Europe/Berlin"}
                 ).timezone_line() == "time zone: Europe/Berlin"
