"""The `tagging` section of the shop configuration (services/tagging/config.py), through parse()."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.tagging.config import MAX_GOODS_SKUS, MAX_TAGS, Tagging
from services.tagging.rules import RuleError, compile_rule
from shared.shopconfig import ConfigError, ShopConfig, parse


def shop(tagging: dict[str, Any], **settings: Any) -> dict[str, Any]:
    return {"shop_id": "shop-1", "name": "Tea House", **settings, "tagging": tagging}


def tagging_of(tagging: dict[str, Any], **settings: Any) -> Tagging:
    return parse(shop(tagging, **settings)).tagging


def problems_of(tagging: dict[str, Any], **settings: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(shop(tagging, **settings))
    return info.value.problems


def tags(*ids: str) -> list[dict[str, Any]]:
    return [{"id": i, "name": i.title()} for i in ids]


def when(rule_id: str, tag: str, condition: str = "spend >= 500") -> dict[str, Any]:
    return {"id": rule_id, "tag": tag, "when": condition}


def goods(rule_id: str, tag: str, skus: list[str]) -> dict[str, Any]:
    return {"id": rule_id, "tag": tag, "goods": skus}


FULL = {
    "groups": [
        {"id": "value", "name": "Value", "groups": [
            {"id": "value-top", "name": "Top spenders"},
            {"id": "value-lapsed", "name": "Lapsed"},
        ]},
        {"id": "taste", "name": "Taste"},
    ],
    "tags": [
        {"id": "big-spender", "name": "大客户", "group": "value-top"},
        {"id": "dormant", "name": "Dormant", "group": "value-lapsed"},
        {"id": "tea-lover", "name": "Tea lover", "group": "taste",
         "description": "bought tea at least once"},
        {"id": "vip-care", "name": "VIP care"},
    ],
    "rules": [
        when("r-big", "big-spender", "spend >= 500 and trades >= 3"),
        goods("g-tea", "tea-lover", ["SKU-0001", "SKU-0002"]),
        when("r-dormant", "dormant", "days_since_last_purchase >= 180"),
        goods("g-tea-2", "tea-lover", ["SKU-0003"]),
    ],
}


# --- what a valid section gives ----------------------------------------------------------------


def test_a_full_tagging_section_parses() -> None:
    config = parse(shop(FULL))
    assert isinstance(config, ShopConfig)
    assert [t.id for t in config.tagging.tags] == ["big-spender", "dormant", "tea-lover",
                                                   "vip-care"]
    assert [r.id for r in config.tagging.rules] == ["r-big", "g-tea", "r-dormant", "g-tea-2"]
    assert [r.kind for r in config.tagging.rules] == ["rule", "goods", "rule", "goods"]


def test_a_shop_without_a_tagging_section_has_no_tags_or_rules() -> None:
    tagging = parse({"shop_id": "shop-1", "name": "Tea House"}).tagging
    assert (tagging.groups, tagging.tags, tagging.rules) == ([], [], [])
    assert tagging.group_ids() == {}
    assert tagging.rule_maintained() == {}
    assert tagging.goods_rules() == []


def test_group_ids_name_every_group_and_sub_group_with_its_parent() -> None:
    assert tagging_of(FULL).group_ids() == {
        "value": None, "value-top": "value", "value-lapsed": "value", "taste": None}


def test_rule_maintained_maps_each_when_tag_to_its_rule() -> None:
    maintained = tagging_of(FULL).rule_maintained()
    assert {tag: rule.id for tag, rule in maintained.items()} == {
        "big-spender": "r-big", "dormant": "r-dormant"}
    assert maintained["dormant"].when == "days_since_last_purchase >= 180"


def test_goods_rules_are_listed_in_configuration_order() -> None:
    rules = tagging_of(FULL).goods_rules()
    assert [(r.id, r.tag, r.goods) for r in rules] == [
        ("g-tea", "tea-lover", ["SKU-0001", "SKU-0002"]),
        ("g-tea-2", "tea-lover", ["SKU-0003"]),
    ]


def test_tag_looks_a_tag_up_by_id() -> None:
    tagging = tagging_of(FULL)
    tag = tagging.tag("tea-lover")
    assert tag is not None
    assert (tag.id, tag.name, tag.group) == ("tea-lover", "Tea lover", "taste")
    assert tagging.tag("big-spender") == tagging.tags[0]
    assert tagging.tag("no-such-tag") is None


def test_a_tag_without_a_rule_is_neither_maintained_nor_a_goods_tag() -> None:
    tagging = tagging_of(FULL)
    assert tagging.tag("vip-care") is not None
    assert "vip-care" not in tagging.rule_maintained()
    assert all(r.tag != "vip-care" for r in tagging.goods_rules())


# --- limits ------------------------------------------------------------------------------------


def test_a_hundred_tags_are_accepted() -> None:
    assert len(tagging_of({"tags": tags(*(f"t{i}" for i in range(MAX_TAGS)))}).tags) == 100


def test_the_101st_tag_is_refused_naming_its_path_the_limit_and_its_id() -> None:
    [problem] = problems_of({"tags": tags(*(f"t{i}" for i in range(100)), "one-too-many")})
    assert problem.startswith("tagging.tags[100]: ")
    assert "at most 100 tags" in problem
    assert "'one-too-many'" in problem
    assert "tag number 101" in problem


def test_a_goods_rule_with_ten_skus_is_accepted() -> None:
    skus = [f"SKU-{i}" for i in range(MAX_GOODS_SKUS)]
    tagging = tagging_of({"tags": tags("tea"), "rules": [goods("g", "tea", skus)]})
    assert tagging.goods_rules()[0].goods == skus


def test_the_eleventh_sku_of_a_goods_rule_is_refused_naming_its_path_and_the_sku() -> None:
    skus = [f"SKU-{i}" for i in range(10)] + ["SKU-ELEVEN"]
    [problem] = problems_of({"tags": tags("tea", "cake"), "rules": [
        goods("g-cake", "cake", ["CAKE-1"]), goods("g-tea", "tea", skus)]})
    assert problem.startswith("tagging.rules[1].goods[10]: ")
    assert "at most 10 SKUs" in problem
    assert "'SKU-ELEVEN'" in problem
    assert "SKU number 11" in problem


def test_a_goods_rule_must_name_at_least_one_sku() -> None:
    assert problems_of({"tags": tags("tea"), "rules": [goods("g", "tea", [])]}) == [
        "tagging.rules[0].goods: name at least one SKU"]


def test_a_sku_listed_twice_in_one_goods_rule_is_refused() -> None:
    assert problems_of({"tags": tags("tea"), "rules": [goods("g", "tea", ["A", "B", "A"])]}) == [
        "tagging.rules[0].goods: SKU 'A' is listed more than once"]


def test_the_same_sku_in_two_goods_rules_is_allowed() -> None:
    tagging = tagging_of({"tags": tags("tea", "cake"), "rules": [
        goods("g-tea", "tea", ["A"]), goods("g-cake", "cake", ["A"])]})
    assert [r.id for r in tagging.goods_rules()] == ["g-tea", "g-cake"]


@pytest.mark.parametrize("sku", ["", " A", "A ", "A\n"])
def test_a_sku_must_not_be_empty_or_padded(sku: str) -> None:
    [problem] = problems_of({"tags": tags("tea"), "rules": [goods("g", "tea", ["A", sku])]})
    assert problem.startswith("tagging.rules[0].goods[1]: ")


# --- groups ------------------------------------------------------------------------------------


def test_a_sub_group_holding_groups_is_refused_as_more_than_two_levels() -> None:
    [problem] = problems_of({"groups": [{"id": "a", "name": "A", "groups": [
        {"id": "b", "name": "B", "groups": [{"id": "c", "name": "C"}]}]}]})
    assert problem.startswith("tagging.groups[0].groups[0].groups: ")
    assert "two levels" in problem


@pytest.mark.parametrize("groups", [
    [{"id": "a", "name": "A"}, {"id": "a", "name": "Again"}],
    [{"id": "a", "name": "A", "groups": [{"id": "a", "name": "Sub"}]}],
    [{"id": "a", "name": "A", "groups": [{"id": "s", "name": "S"}]},
     {"id": "b", "name": "B", "groups": [{"id": "s", "name": "S too"}]}],
    [{"id": "a", "name": "A"}, {"id": "b", "name": "B", "groups": [{"id": "a", "name": "S"}]}],
], ids=["two-groups", "group-and-its-sub-group", "sub-groups-of-two-groups",
        "group-and-a-later-sub-group"])
def test_a_group_id_used_twice_at_any_level_is_refused(groups: list[dict[str, Any]]) -> None:
    [problem] = problems_of({"groups": groups})
    assert problem.startswith("tagging.groups: ")
    assert "is used more than once" in problem


def test_a_tag_may_sit_in_a_group_or_a_sub_group() -> None:
    sub_groups = [{"id": "s", "name": "S"}]
    tagging = tagging_of({"groups": [{"id": "g", "name": "G", "groups": sub_groups}],
                          "tags": [{"id": "t1", "name": "T1", "group": "g"},
                                   {"id": "t2", "name": "T2", "group": "s"}]})
    assert [t.group for t in tagging.tags] == ["g", "s"]


def test_a_tag_in_an_unknown_group_is_refused_naming_the_tag_and_the_groups() -> None:
    assert problems_of({"groups": [{"id": "g", "name": "G"}],
                        "tags": [{"id": "t1", "name": "T1", "group": "g"},
                                 {"id": "t2", "name": "T2", "group": "nope"}]}) == [
        "tagging.tags[1].group: no group 'nope' (groups: g)"]


# --- tags and rules ----------------------------------------------------------------------------


def test_a_tag_id_used_twice_is_refused() -> None:
    assert problems_of({"tags": tags("a", "b", "a")}) == [
        "tagging.tags: tag id 'a' is used more than once"]


def test_a_rule_id_used_twice_is_refused() -> None:
    assert problems_of({"tags": tags("a", "b"), "rules": [
        when("r", "a"), goods("r", "b", ["S"])]}) == [
        "tagging.rules: rule id 'r' is used more than once"]


def test_a_rule_for_an_unknown_tag_is_refused() -> None:
    assert problems_of({"tags": tags("a"), "rules": [when("r1", "a"), goods("g", "ghost", ["S"])]}
                       ) == ["tagging.rules[1].tag: no tag 'ghost' in tags"]


@pytest.mark.parametrize("rule", [
    {"id": "r", "tag": "a", "when": "spend >= 1", "goods": ["S"]},
    {"id": "r", "tag": "a"},
], ids=["both", "neither"])
def test_a_rule_needs_exactly_one_of_when_and_goods(rule: dict[str, Any]) -> None:
    [problem] = problems_of({"tags": tags("a"), "rules": [rule]})
    assert problem.startswith("tagging.rules[0]: give exactly one of when")


def test_a_tag_follows_at_most_one_when_rule() -> None:
    [problem] = problems_of({"tags": tags("a"), "rules": [
        when("r1", "a", "spend >= 500"), when("r2", "a", "trades >= 3")]})
    assert problem.startswith("tagging.rules[1].tag: ")
    assert "already follows rule 'r1'" in problem


@pytest.mark.parametrize(("rules", "goods_at"), [
    ([goods("g", "a", ["S"]), when("r", "a")], 0),
    ([when("r", "a"), goods("g", "a", ["S"])], 1),
], ids=["goods-first", "when-first"])
def test_a_goods_rule_cannot_apply_a_tag_that_follows_a_when_rule(
        rules: list[dict[str, Any]], goods_at: int) -> None:
    [problem] = problems_of({"tags": tags("a"), "rules": rules})
    assert problem.startswith(f"tagging.rules[{goods_at}].tag: ")
    assert "follows the condition of rule 'r'" in problem


def test_a_when_that_does_not_compile_is_refused_with_the_rule_languages_message() -> None:
    text = "spend >= 500 and spnd > 3"
    with pytest.raises(RuleError) as compiled:
        compile_rule(text)
    [problem] = problems_of({"tags": tags("a", "b"), "rules": [when("r", "a", text)]})
    assert problem == f"tagging.rules[0].when: {compiled.value}"
    assert problem.startswith("tagging.rules[0].when: unknown field 'spnd' at column 18 ")
    assert "did you mean 'spend'?" in problem


def test_a_second_broken_when_names_its_own_index() -> None:
    [problem] = problems_of({"tags": tags("a", "b"), "rules": [
        when("r1", "a", "trades >= 3"), when("r2", "b", "region >= 'North'")]})
    assert problem.startswith("tagging.rules[1].when: ")
    assert "at column 8" in problem


def test_a_when_that_cannot_compile_in_the_shops_time_zone_is_refused() -> None:
    # 0001-01-01 in Asia/Shanghai (UTC+8) is before the first representable UTC instant.
    text = "first_purchase >= 0001-01-01"
    compile_rule(text)  # fine in UTC
    with pytest.raises(RuleError):
        compile_rule(text, ZoneInfo("Asia/Shanghai"))
    [problem] = problems_of({"tags": tags("a"), "rules": [when("r", "a", text)]},
                            timezone="Asia/Shanghai")
    assert problem.startswith("tagging.rules[0].when: not a valid date or time")


# --- strictness --------------------------------------------------------------------------------


@pytest.mark.parametrize(("section", "path"), [
    ({"labels": []}, "tagging.labels"),
    ({"groups": [{"id": "g", "name": "G", "colour": "red"}]}, "tagging.groups[0].colour"),
    ({"groups": [{"id": "g", "name": "G", "groups": [{"id": "s", "name": "S", "x": 1}]}]},
     "tagging.groups[0].groups[0].x"),
    ({"tags": [{"id": "t", "name": "T", "grp": "g"}]}, "tagging.tags[0].grp"),
    ({"tags": tags("t"), "rules": [{"id": "r", "tag": "t", "wen": "spend > 1"}]},
     "tagging.rules[0].wen"),
])
def test_unknown_keys_are_refused_with_their_path(section: dict[str, Any], path: str) -> None:
    assert f"{path}: unknown key" in problems_of(section)


@pytest.mark.parametrize("tag_id", ["", "two words", "x" * 65])
def test_a_tag_id_is_one_short_word(tag_id: str) -> None:
    [problem] = problems_of({"tags": [{"id": tag_id, "name": "T"}]})
    assert problem.startswith("tagging.tags[0].id: ")


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of({"tags": tags("a", "a"), "rules": [
        when("r", "ghost"), goods("g", "a", [])]})
    assert problems == [
        "tagging.tags: tag id 'a' is used more than once",
        "tagging.rules[0].tag: no tag 'ghost' in tags",
        "tagging.rules[1].goods: name at least one SKU",
    ]
