"""The strict YAML shop configuration (shared/shopconfig.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.shopconfig import ConfigError, ShopConfig, load, parse


def problems_of(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(data)
    return info.value.problems


def test_minimal_config_gets_the_defaults() -> None:
    config = parse({"shop_id": "shop-1", "name": "Tea House"})
    assert config == ShopConfig(shop_id="shop-1", name="Tea House", currency="CNY",
                                timezone="Asia/Shanghai")


def test_every_setting_can_be_given() -> None:
    config = parse({"shop_id": "shop-1", "name": "茶馆", "currency": "USD",
                    "timezone": "America/New_York"})
    assert (config.shop_id, config.name, config.currency, config.timezone) == (
        "shop-1", "茶馆", "USD", "America/New_York")


def test_unknown_key_is_refused_with_its_path() -> None:
    assert problems_of({"shop_id": "s", "name": "n", "colour": "red"}) == ["colour: unknown key"]


def test_misspelt_key_is_refused_not_ignored() -> None:
    problems = problems_of({"shop_id": "s", "name": "n", "time_zone": "UTC"})
    assert problems == ["time_zone: unknown key"]


@pytest.mark.parametrize("zone", ["Mars/Base", "", "../etc/passwd", "Asia/Shanghai "])
def test_unknown_time_zone_is_refused_naming_timezone(zone: str) -> None:
    [problem] = problems_of({"shop_id": "s", "name": "n", "timezone": zone})
    assert problem.startswith("timezone: ")
    assert f"unknown time zone {zone!r}" in problem


def test_time_zone_must_be_text() -> None:
    [problem] = problems_of({"shop_id": "s", "name": "n", "timezone": 8})
    assert problem.startswith("timezone: ")


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "Asia/Shanghai"])
def test_known_time_zones_are_accepted(zone: str) -> None:
    assert parse({"shop_id": "s", "name": "n", "timezone": zone}).timezone == zone


def test_missing_keys_are_required() -> None:
    assert problems_of({}) == ["shop_id: required", "name: required"]


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of({"shop_id": "has space", "currency": "usd", "timezone": "Nowhere",
                            "colour": "red"})
    assert sorted(p.split(":", 1)[0] for p in problems) == [
        "colour", "currency", "name", "shop_id", "timezone"]
    assert "colour: unknown key" in problems
    assert "name: required" in problems


@pytest.mark.parametrize("currency", ["usd", "US", "EURO", "", "12A"])
def test_currency_must_be_a_three_letter_code(currency: str) -> None:
    [problem] = problems_of({"shop_id": "s", "name": "n", "currency": currency})
    assert problem.startswith("currency: ")


@pytest.mark.parametrize("shop_id", ["", "a b", " s", "x" * 129])
def test_shop_id_must_be_one_word(shop_id: str) -> None:
    [problem] = problems_of({"shop_id": shop_id, "name": "n"})
    assert problem.startswith("shop_id: ")


def test_empty_name_is_refused() -> None:
    [problem] = problems_of({"shop_id": "s", "name": ""})
    assert problem.startswith("name: ")


@pytest.mark.parametrize("data", [None, [], ["shop_id"], "shop_id: s", 5])
def test_top_level_must_be_a_mapping(data: Any) -> None:
    assert problems_of(data) == ["(top level): must be a mapping of settings"]


def test_error_names_its_source() -> None:
    with pytest.raises(ConfigError) as info:
        parse({"shop_id": "s", "name": "n", "colour": "red"}, source="shops/tea.yaml")
    assert str(info.value) == "shops/tea.yaml: colour: unknown key"
    assert isinstance(info.value, ValueError)


def test_config_cannot_be_changed_after_loading() -> None:
    config = parse({"shop_id": "s", "name": "n"})
    with pytest.raises(ValueError):
        config.name = "other"  # type: ignore[misc]


# --- files ------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "shop.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_reads_a_yaml_file(tmp_path: Path) -> None:
    path = write(tmp_path, "shop_id: tea-1\nname: 茶馆\ncurrency: CNY\ntimezone: UTC\n")
    assert load(path) == ShopConfig(shop_id="tea-1", name="茶馆", currency="CNY",
                                    timezone="UTC")


def test_load_refuses_an_unknown_key_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "shop_id: s\nname: n\ncolour: red\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.problems == ["colour: unknown key"]
    assert str(info.value).startswith(f"{path}: ")


def test_load_refuses_invalid_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "shop_id: [\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    [problem] = info.value.problems
    assert problem.startswith("not valid YAML")


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "- shop_id: s\n", "just text\n"])
def test_load_refuses_a_file_that_is_not_a_mapping(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text))
    assert info.value.problems == ["(top level): must be a mapping of settings"]


def test_yaml_values_of_the_wrong_type_are_refused(tmp_path: Path) -> None:
    # YAML reads 123 as a number and `no` as a boolean: neither is text.
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, "shop_id: 123\nname: no\n"))
    assert sorted(p.split(":", 1)[0] for p in info.value.problems) == ["name", "shop_id"]


def test_unsafe_yaml_tags_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "shop_id: !!python/object/apply:os.system ['true']\nname: n\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.problems[0].startswith("not valid YAML")


def test_load_refuses_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "shop.yaml"
    path.write_bytes("shop_id: s\nname: 茶馆\n".encode("gb18030"))
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(path) in str(info.value)
