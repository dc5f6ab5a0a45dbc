"""Level policy and ABC settings validation (services/tiering/policy.py), directly and through
the shop configuration (shared/shopconfig.py `parse`), where every problem names its key path."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from services.tiering.policy import (
    AbcSettings,
    CustomerAbc,
    Level,
    LevelPolicy,
    ProductAbc,
)
from shared.config_types import RuleBroken
from shared.shopconfig import ConfigError, parse

FAST = settings(max_examples=100, deadline=None, database=None)
NAMES = ["普通会员", "高级会员", "VIP会员", "至尊VIP会员"]


def taobao(basis: str = "amount") -> list[dict[str, Any]]:
    thresholds = (["100.00", "500.00", "2000.00", "5000.00"] if basis == "amount"
                  else ["1", "3", "10", "30"])
    return [{"name": n, "threshold": t, "discount": d}
            for n, t, d in zip(NAMES, thresholds, ["0.98", "0.95", "0.90", "0.85"], strict=True)]


def marketplace(ladder: list[dict[str, Any]], basis: str | None = "amount",
                **extra: Any) -> dict[str, Any]:
    policy: dict[str, Any] = {"preset": "marketplace", "ladder": ladder, **extra}
    if basis is not None:
        policy["basis"] = basis
    return policy


def custom(*levels: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"preset": "custom", "ladder": [
        {"name": f"tier {i}", "discount": "0.95", **spec} for i, spec in enumerate(levels, 1)],
        **extra}


def rule_problems(model: type[BaseModel], data: dict[str, Any]) -> list[tuple[str, str]]:
    """The problems of the one RuleBroken a model refuses `data` with."""
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    broken = [e["ctx"]["error"] for e in info.value.errors(include_url=False)
              if isinstance((e.get("ctx") or {}).get("error"), RuleBroken)]
    assert len(broken) == 1, info.value
    problems: list[tuple[str, str]] = broken[0].problems
    return problems


def paths(problems: list[tuple[str, str]]) -> list[str]:
    return [path for path, _ in problems]


def config_problems(levels: Any = None, abc: Any = None) -> list[str]:
    data: dict[str, Any] = {"shop_id": "shop-1", "name": "Tea House"}
    if levels is not None:
        data["levels"] = levels
    if abc is not None:
        data["abc"] = abc
    with pytest.raises(ConfigError) as info:
        parse(data)
    return info.value.problems


# --- marketplace preset: accepted --------------------------------------------------------------


def test_taobao_ladder_by_amount_is_accepted() -> None:
    policy = LevelPolicy.model_validate(marketplace(taobao()))
    assert policy.basis == "amount" and policy.auto_upgrade is True
    assert [(lv.name, lv.threshold, lv.discount) for lv in policy.ladder] == [
        ("普通会员", Decimal("100.00"), Decimal("0.98")),
        ("高级会员", Decimal("500.00"), Decimal("0.95")),
        ("VIP会员", Decimal("2000.00"), Decimal("0.90")),
        ("至尊VIP会员", Decimal("5000.00"), Decimal("0.85"))]
    assert [n for n, _ in policy.enabled_levels()] == [1, 2, 3, 4]


def test_taobao_ladder_by_count_is_accepted_with_whole_thresholds_written_with_decimals() -> None:
    ladder = taobao("count")
    ladder[0]["threshold"] = "1.00"
    policy = LevelPolicy.model_validate(marketplace(ladder, basis="count"))
    assert [lv.threshold for lv in policy.ladder] == [1, 3, 10, 30]


def test_equal_discounts_are_allowed_for_everyone_gets_the_same() -> None:
    ladder = taobao()
    for level in ladder:
        level["discount"] = "0.90"
    policy = LevelPolicy.model_validate(marketplace(ladder, auto_upgrade=False))
    assert {lv.discount for lv in policy.ladder} == {Decimal("0.90")}
    assert policy.auto_upgrade is False


def test_discount_of_exactly_seventy_percent_is_the_deepest_allowed() -> None:
    ladder = taobao()
    ladder[3]["discount"] = "0.70"
    assert LevelPolicy.model_validate(marketplace(ladder)).ladder[3].discount == Decimal("0.70")


def test_disabled_levels_are_kept_but_not_enabled() -> None:
    ladder = taobao()
    ladder[1]["enabled"] = False
    policy = LevelPolicy.model_validate(marketplace(ladder))
    assert [n for n, _ in policy.enabled_levels()] == [1, 3, 4]
    assert policy.name_of(2) == "高级会员"


# --- marketplace preset: each broken rule names the level and the key --------------------------


def test_marketplace_needs_a_basis() -> None:
    assert rule_problems(LevelPolicy, marketplace(taobao(), basis=None)) == [
        ("basis", "required under the marketplace preset (amount or count)")]


def test_marketplace_allows_at_most_four_levels() -> None:
    ladder = [*taobao(), {"name": "传奇会员", "threshold": "9000.00", "discount": "0.80"}]
    problems = rule_problems(LevelPolicy, marketplace(ladder))
    assert paths(problems) == ["ladder"]
    assert problems[0][1].startswith("at most 4 levels under the marketplace preset (got 5)")


def test_every_marketplace_level_needs_a_threshold() -> None:
    ladder = taobao()
    del ladder[1]["threshold"]
    assert rule_problems(LevelPolicy, marketplace(ladder)) == [
        ("ladder[1].threshold", "required for level 2 (高级会员)")]


def test_equal_thresholds_are_refused_naming_both_levels() -> None:
    ladder = taobao()
    ladder[2]["threshold"] = "500.00"
    assert rule_problems(LevelPolicy, marketplace(ladder)) == [
        ("ladder[2].threshold",
         "level 3 (VIP会员): 500.00 must be higher than level 2 (高级会员)'s 500.00")]


def test_falling_thresholds_are_refused_at_the_higher_level() -> None:
    ladder = taobao()
    ladder[1]["threshold"] = "99.99"
    assert rule_problems(LevelPolicy, marketplace(ladder)) == [
        ("ladder[1].threshold",
         "level 2 (高级会员): 99.99 must be higher than level 1 (普通会员)'s 100.00")]


def test_thresholds_must_rise_across_a_disabled_level_too() -> None:
    ladder = taobao()
    ladder[1]["enabled"] = False
    ladder[2]["threshold"] = "400.00"
    assert paths(rule_problems(LevelPolicy, marketplace(ladder))) == ["ladder[2].threshold"]


def test_shallower_discount_at_a_higher_level_is_refused() -> None:
    ladder = taobao()
    ladder[1]["discount"] = "0.99"
    assert rule_problems(LevelPolicy, marketplace(ladder)) == [
        ("ladder[1].discount",
         "level 2 (高级会员): 0.99 must not be shallower than level 1 (普通会员)'s 0.98")]


def test_discount_below_seventy_percent_is_refused_under_the_preset() -> None:
    ladder = taobao()
    ladder[3]["discount"] = "0.69"
    assert rule_problems(LevelPolicy, marketplace(ladder)) == [
        ("ladder[3].discount",
         "level 4 (至尊VIP会员): 0.69 is deeper than the preset allows (not below 0.70)")]


@pytest.mark.parametrize("second", ["VIP", "vip", "  Vip  ", "vIP"])
def test_level_names_must_be_unique_ignoring_case(second: str) -> None:
    ladder = taobao()
    ladder[0]["name"], ladder[1]["name"] = "VIP", second
    problems = rule_problems(LevelPolicy, marketplace(ladder))
    assert problems == [("ladder[1].name", f"{second.strip()!r} is already the name of level 1")]


def test_count_threshold_must_be_a_whole_number() -> None:
    ladder = taobao("count")
    ladder[2]["threshold"] = "10.5"
    assert rule_problems(LevelPolicy, marketplace(ladder, basis="count")) == [
        ("ladder[2].threshold", "a count of trades must be a whole number")]


def test_amount_threshold_may_have_cents() -> None:
    ladder = taobao()
    ladder[2]["threshold"] = "1999.99"
    assert LevelPolicy.model_validate(marketplace(ladder)).ladder[2].threshold == Decimal(
        "1999.99")


@pytest.mark.parametrize(("key", "value"), [("min_amount", "100.00"), ("min_trades", 2),
                                            ("within_days", 30)])
def test_custom_keys_are_refused_under_the_marketplace_preset(key: str, value: Any) -> None:
    ladder = taobao()
    ladder[1][key] = value
    assert rule_problems(LevelPolicy, marketplace(ladder)) == [
        (f"ladder[1].{key}", "only for preset: custom (use threshold)")]


def test_every_broken_rule_is_reported_at_once_in_ladder_order() -> None:
    ladder = taobao()
    ladder[1].update(threshold="50.00", discount="0.99")
    ladder[2]["name"] = "普通会员"
    ladder[3]["discount"] = "0.50"
    problems = rule_problems(LevelPolicy, marketplace(ladder, basis=None))
    assert sorted(paths(problems)) == sorted([
        "basis", "ladder[3].discount", "ladder[1].discount", "ladder[1].threshold",
        "ladder[2].name"])
    assert str(RuleBroken(problems)).count("; ") == len(problems) - 1


def test_rule_broken_reads_path_then_message() -> None:
    broken = RuleBroken([("ladder[1].threshold", "too low"), ("basis", "required")])
    assert str(broken) == "ladder[1].threshold: too low; basis: required"
    assert isinstance(broken, ValueError)


# --- custom preset -----------------------------------------------------------------------------


def test_custom_ladder_beyond_four_levels_is_accepted() -> None:
    # basic, ordinary, quality, loyal, important: amount, frequency and recency.
    policy = LevelPolicy.model_validate(custom(
        {"min_trades": 1},
        {"min_trades": 2, "min_amount": "200.00"},
        {"min_trades": 4, "min_amount": "1000.00"},
        {"min_trades": 4, "min_amount": "1000.00", "within_days": 180},
        {"min_trades": 8, "min_amount": "5000.00", "within_days": 90, "discount": "0.60"}))
    assert len(policy.ladder) == 5
    assert policy.windows() == {180, 90}
    assert policy.ladder[4].discount == Decimal("0.60")  # the 0.70 floor is the preset's


def test_custom_ladder_refuses_a_basis() -> None:
    assert paths(rule_problems(LevelPolicy, custom({"min_trades": 1}, basis="amount"))) == [
        "basis"]


def test_custom_ladder_refuses_thresholds() -> None:
    problems = rule_problems(LevelPolicy, custom({"min_trades": 1, "threshold": "10.00"}))
    assert problems == [("ladder[0].threshold",
                         "only for the marketplace preset (use min_amount or min_trades)")]


def test_custom_level_needs_an_amount_or_a_trade_count() -> None:
    problems = rule_problems(LevelPolicy, custom({"min_trades": 1}, {"within_days": 30}))
    assert ("ladder[1]", "level 2 (tier 2) needs min_amount or min_trades") in problems


@pytest.mark.parametrize("upper", [
    {"min_trades": 3},                                       # the same bar
    {"min_trades": 2},                                       # a lower bar
    {"min_trades": 5, "min_amount": "50.00"},                # more trades but a lower amount
    {"min_trades": 3, "min_amount": "100.00", "within_days": 400},  # a longer window
])
def test_custom_level_must_ask_for_more_than_the_one_below(upper: dict[str, Any]) -> None:
    lower = {"min_trades": 3, "min_amount": "100.00", "within_days": 365}
    if "min_amount" not in upper:
        lower = {"min_trades": 3}
    problems = rule_problems(LevelPolicy, custom(lower, upper))
    assert len(problems) == 1
    path, message = problems[0]
    assert path == "ladder[1]"
    assert message.startswith("level 2 (tier 2) must ask for more than level 1 (tier 1)")


@pytest.mark.parametrize("upper", [
    {"min_trades": 4},                                       # more trades
    {"min_trades": 3, "min_amount": "0.01"},                 # an amount on top
    {"min_trades": 3, "within_days": 30},                    # a window on top
])
def test_custom_level_asking_for_more_is_accepted(upper: dict[str, Any]) -> None:
    policy = LevelPolicy.model_validate(custom({"min_trades": 3}, upper))
    assert len(policy.ladder) == 2


def test_custom_discounts_must_still_deepen() -> None:
    assert rule_problems(LevelPolicy, custom({"min_trades": 1, "discount": "0.80"},
                                             {"min_trades": 2, "discount": "0.90"})) == [
        ("ladder[1].discount",
         "level 2 (tier 2): 0.90 must not be shallower than level 1 (tier 1)'s 0.80")]


# --- level fields -------------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value"), [
    ("discount", "0"), ("discount", "1.01"), ("discount", "0.12345"),
    ("threshold", "-0.01"), ("threshold", "1.001"), ("name", "   "), ("name", "x" * 41),
    ("min_trades", 0), ("within_days", 3661),
])
def test_bad_level_field_is_refused(field: str, value: Any) -> None:
    data = {"name": "L", "discount": "0.9", field: value}
    with pytest.raises(ValidationError) as info:
        Level.model_validate(data)
    assert [e["loc"] for e in info.value.errors()] == [(field,)]


def test_level_is_frozen_and_strict_about_keys() -> None:
    with pytest.raises(ValidationError):
        Level.model_validate({"name": "L", "discount": "0.9", "colour": "gold"})
    level = Level(name="L", discount=Decimal("0.9"))
    with pytest.raises(ValidationError):
        level.discount = Decimal("0.5")  # type: ignore[misc]


# --- ABC settings --------------------------------------------------------------------------------


def test_abc_defaults() -> None:
    abc = AbcSettings()
    assert (abc.customers.period_days, abc.customers.a_share, abc.customers.b_share) == (
        365, Decimal("0.05"), Decimal("0.20"))
    assert (abc.products.period_days, abc.products.a_cutoff, abc.products.b_cutoff) == (
        365, Decimal("0.70"), Decimal("0.90"))


@pytest.mark.parametrize("a_share", ["0.20", "0.25"])
def test_customer_a_share_must_be_below_b_share(a_share: str) -> None:
    assert rule_problems(CustomerAbc, {"a_share": a_share}) == [
        ("a_share", f"{a_share} must be below b_share 0.20")]


def test_customer_ten_percent_a_is_accepted() -> None:
    assert CustomerAbc.model_validate({"a_share": "0.10"}).a_share == Decimal("0.10")


@pytest.mark.parametrize("a_cutoff", ["0.60", "0.80"])
def test_product_a_cutoff_may_be_set_from_sixty_to_eighty_percent(a_cutoff: str) -> None:
    assert ProductAbc.model_validate({"a_cutoff": a_cutoff}).a_cutoff == Decimal(a_cutoff)


@pytest.mark.parametrize(("a_cutoff", "b_cutoff"), [("0.80", "0.80"), ("0.75", "0.70")])
def test_product_b_cutoff_must_be_above_a_cutoff(a_cutoff: str, b_cutoff: str) -> None:
    assert rule_problems(ProductAbc, {"a_cutoff": a_cutoff, "b_cutoff": b_cutoff}) == [
        ("b_cutoff", f"{b_cutoff} must be above a_cutoff {a_cutoff}")]


# --- through the shop configuration: paths start at the section ---------------------------------


def test_config_without_levels_has_no_policy() -> None:
    assert parse({"shop_id": "s", "name": "n"}).levels is None


def test_config_with_a_valid_ladder_carries_the_policy() -> None:
    config = parse({"shop_id": "s", "name": "n", "levels": marketplace(taobao())})
    assert config.levels == LevelPolicy.model_validate(marketplace(taobao()))


def test_config_names_the_level_and_the_key_of_a_rising_threshold_problem() -> None:
    ladder = taobao()
    ladder[1]["threshold"] = "80.00"
    assert config_problems(marketplace(ladder)) == [
        "levels.ladder[1].threshold: "
        "level 2 (高级会员): 80.00 must be higher than level 1 (普通会员)'s 100.00"]


def test_config_reports_every_level_problem_with_its_path() -> None:
    ladder = [*taobao(), {"name": "vip会员", "threshold": "10.00", "discount": "0.50"}]
    problems = config_problems(marketplace(ladder, basis=None))
    assert problems[0] == "levels.basis: required under the marketplace preset (amount or count)"
    assert problems[1].startswith("levels.ladder: at most 4 levels")
    assert sorted(problems[2:]) == sorted([
        "levels.ladder[4].discount: "
        "level 5 (vip会员): 0.50 is deeper than the preset allows (not below 0.70)",
        "levels.ladder[4].name: 'vip会员' is already the name of level 3",
        "levels.ladder[4].threshold: "
        "level 5 (vip会员): 10.00 must be higher than level 4 (至尊VIP会员)'s 5000.00"])


def test_config_names_a_missing_threshold() -> None:
    ladder = taobao("count")
    del ladder[0]["threshold"]
    assert config_problems(marketplace(ladder, basis="count")) == [
        "levels.ladder[0].threshold: required for level 1 (普通会员)"]


def test_config_names_a_custom_level_that_asks_for_too_little() -> None:
    problems = config_problems(custom({"min_amount": "500.00"}, {"min_amount": "400.00"}))
    assert len(problems) == 1
    assert problems[0].startswith(
        "levels.ladder[1]: level 2 (tier 2) must ask for more than level 1 (tier 1)")


@pytest.mark.parametrize(("levels", "expected"), [
    (marketplace([{"name": "a", "threshold": "1", "discount": "1.5"}]),
     "levels.ladder[0].discount: input should be less than or equal to 1"),
    (marketplace([{"name": "a", "threshold": "1", "discount": "0.9", "colour": "red"}]),
     "levels.ladder[0].colour: unknown key"),
    (marketplace([{"name": "a", "threshold": "1"}]), "levels.ladder[0].discount: required"),
    (marketplace([{"name": "a", "threshold": "1", "discount": "0.9"}], basis="weight"),
     "levels.basis: input should be 'amount' or 'count'"),
    (marketplace([]), "levels.ladder: list should have at least 1 item after validation, not 0"),
])
def test_config_names_field_problems_of_the_ladder(levels: dict[str, Any], expected: str) -> None:
    assert config_problems(levels) == [expected]


def test_config_names_abc_problems_with_their_section() -> None:
    problems = config_problems(abc={"customers": {"a_share": "0.30", "b_share": "0.20"},
                                    "products": {"a_cutoff": "0.80", "b_cutoff": "0.75"}})
    assert problems == ["abc.customers.a_share: 0.30 must be below b_share 0.20",
                        "abc.products.b_cutoff: 0.75 must be above a_cutoff 0.80"]


def test_config_names_an_a_cutoff_outside_sixty_to_eighty_percent() -> None:
    assert config_problems(abc={"products": {"a_cutoff": "0.85"}}) == [
        "abc.products.a_cutoff: input should be less than or equal to 0.80"]


# --- properties ---------------------------------------------------------------------------------


@st.composite
def valid_ladders(draw: st.DrawFn) -> tuple[str, list[dict[str, Any]]]:
    basis = draw(st.sampled_from(["amount", "count"]))
    n = draw(st.integers(min_value=2, max_value=4))
    top = 1_000_000 if basis == "amount" else 500
    bars = sorted(draw(st.lists(st.integers(0, top), min_size=n, max_size=n, unique=True)))
    thresholds = [str(Decimal(b) / 100) if basis == "amount" else str(b) for b in bars]
    discounts = sorted(draw(st.lists(st.integers(70, 100), min_size=n, max_size=n)),
                       reverse=True)
    return basis, [{"name": NAMES[i], "threshold": thresholds[i],
                    "discount": str(Decimal(discounts[i]) / 100),
                    "enabled": draw(st.booleans())} for i in range(n)]


@FAST
@given(valid_ladders())
def test_any_rising_ladder_with_deepening_discounts_is_accepted(
        ladder: tuple[str, list[dict[str, Any]]]) -> None:
    basis, levels = ladder
    policy = LevelPolicy.model_validate(marketplace(levels, basis=basis))
    assert [str(lv.threshold) for lv in policy.ladder] == [lv["threshold"] for lv in levels]


@FAST
@given(valid_ladders(), st.data())
def test_a_threshold_not_above_the_one_below_is_named_at_its_level(
        ladder: tuple[str, list[dict[str, Any]]], data: st.DataObject) -> None:
    basis, levels = ladder
    i = data.draw(st.integers(min_value=1, max_value=len(levels) - 1))
    levels[i]["threshold"] = data.draw(st.sampled_from(
        [lv["threshold"] for lv in levels[:i]]))
    problems = config_problems(marketplace(levels, basis=basis))
    assert [p for p in problems if ".threshold" in p] == [
        f"levels.ladder[{i}].threshold: level {i + 1} ({NAMES[i]}): {levels[i]['threshold']} "
        f"must be higher than level {i} ({NAMES[i - 1]})'s {levels[i - 1]['threshold']}"]


@FAST
@given(valid_ladders(), st.data())
def test_a_shallower_discount_is_named_at_its_level(
        ladder: tuple[str, list[dict[str, Any]]], data: st.DataObject) -> None:
    basis, levels = ladder
    i = data.draw(st.integers(min_value=1, max_value=len(levels) - 1))
    below = Decimal(levels[i - 1]["discount"])
    assume(below < 1)
    shallower = data.draw(st.integers(int(below * 100) + 1, 100).map(lambda d: Decimal(d) / 100))
    levels[i]["discount"] = str(shallower)
    problems = config_problems(marketplace(levels, basis=basis))
    assert f"levels.ladder[{i}].discount: level {i + 1} ({NAMES[i]}): {shallower} must not be " \
           f"shallower than level {i} ({NAMES[i - 1]})'s {below}" in problems


@FAST
@given(st.lists(st.sampled_from(["gold", "GOLD", "Gold", "silver", "Silver", "铜"]),
                min_size=1, max_size=4))
def test_names_are_refused_exactly_where_they_repeat_ignoring_case(names: list[str]) -> None:
    levels = [{"name": name, "threshold": str(i), "discount": "0.90"}
              for i, name in enumerate(names)]
    first: dict[str, int] = {}
    expected = []
    for i, name in enumerate(names):
        if name.casefold() in first:
            expected.append(f"levels.ladder[{i}].name: {name!r} is already the name of level "
                            f"{first[name.casefold()] + 1}")
        first.setdefault(name.casefold(), i)
    if not expected:
        assert parse({"shop_id": "s", "name": "n",
                      "levels": marketplace(levels, basis="count")}).levels is not None
        return
    assert config_problems(marketplace(levels, basis="count")) == expected
