"""The strict event contract (shared/events.py): every input that used to slip through or crash.

Each regression test below names one input that the contract once accepted (or that crashed
`decode`); they use only the long-standing API (`decode`, `validate`, `loads_json`, `Problem`,
`EventRejected`) so that each one fails on its own against the old code. Newer API is reached
through the module (`events.TimeBounds`, `events.digest`, ...).
"""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import shared.events as events
from shared.events import EventRejected, Problem, decode, loads_json, validate

FAST = settings(max_examples=100, deadline=None, database=None)
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
MONEY_FORM = re.compile(r"[0-9]+(\.[0-9]{1,2})?")  # the documented form, ASCII only


def completed(amount: str = '"8.50"', **envelope: str) -> str:
    """An order.completed body; `amount` and any envelope field are JSON literals, verbatim."""
    fields = {"event_id": '"e1"', "type": '"order.completed"', "schema_version": "1",
              "shop_id": '"s"', "member_id": '"m"', "occurred_at": '"2026-01-31T12:00:00Z"'}
    fields.update(envelope)
    head = ",".join(f'"{k}":{v}' for k, v in fields.items())
    return '{' + head + ',"payload":{"order_id":"o","amount":' + amount + '}}'


def placed() -> dict[str, Any]:
    return {"event_id": "e1", "type": "order.placed", "schema_version": 1, "shop_id": "s",
            "member_id": "m", "occurred_at": "2026-01-31T20:00:00+08:00",
            "payload": {"order_id": "o", "amount": "8.50", "region": "north",
                        "items": [{"sku": "k1", "qty": 2, "unit_price": "4.25"}]}}


def tick(**overrides: Any) -> dict[str, Any]:
    out = {"event_id": "tick-1", "type": "clock.ticked", "schema_version": 1,
           "occurred_at": "2026-01-31T12:00:00Z", "payload": {"source": "ingest"}}
    out.update(overrides)
    return out


def problems_of(raw: Any, **kwargs: Any) -> list[Problem]:
    with pytest.raises(EventRejected) as info:
        if isinstance(raw, bytes | str):
            decode(raw, **kwargs)
        else:
            validate(raw, **kwargs)
    return info.value.problems


def fields_of(raw: Any) -> list[str]:
    return [p.field for p in problems_of(raw)]


# --- money: regressions -----------------------------------------------------------------------


@pytest.mark.parametrize("literal", [
    '"１２３"',        # full-width digits
    '"١٢٣"',           # Arabic-Indic digits
    '"1_000"',         # Python's digit separator
    '" 12.5 "',        # padding
    '"12.50\\n"',      # a trailing newline ($ would match before it)
    '"1e2"',           # exponent, as a string
    '"+12.50"',        # a sign
])
def test_money_text_other_than_plain_ascii_decimals_is_refused(literal: str) -> None:
    [problem] = problems_of(completed(literal))
    assert problem.field == "payload.amount"
    assert problem.problem.startswith('must be a plain decimal such as "129.90"')


@pytest.mark.parametrize("literal", ["1e2", "1E2", "1.5e1", "125E-2"])
def test_money_as_a_json_number_with_an_exponent_is_refused(literal: str) -> None:
    assert problems_of(completed(literal)) == [Problem(
        "payload.amount", "must be written in plain decimal notation (such as 129.90), "
                          "not with an exponent")]
    assert fields_of(loads_json(completed(literal))) == ["payload.amount"]  # the HTTP path


def test_an_exponent_is_refused_in_an_item_price_too() -> None:
    raw = json.dumps(placed()).replace('"unit_price": "4.25"', '"unit_price": 425e-2')
    assert fields_of(raw) == ["payload.items[0].unit_price"]


@pytest.mark.parametrize("amount", [1.5, 8.0, 0.0])
def test_binary_float_money_from_a_python_caller_is_refused_saying_why(amount: float) -> None:
    raw = json.loads(completed())
    raw["payload"]["amount"] = amount
    [problem] = problems_of(raw)
    assert problem.field == "payload.amount"
    assert "binary floats are not accepted" in problem.problem


@pytest.mark.parametrize("literal", ["true", "false"])
def test_money_given_as_a_boolean_is_refused(literal: str) -> None:
    assert problems_of(completed(literal)) == [
        Problem("payload.amount", "must be an amount, not true or false")]


@pytest.mark.parametrize("literal", ['"-0"', "-0.0", '"-0.00"'])
def test_negative_zero_is_refused_rather_than_written_as_minus_zero(literal: str) -> None:
    assert problems_of(completed(literal)) == [Problem("payload.amount", "must be >= 0")]


@pytest.mark.parametrize(("given_", "wire"), [
    ('"12.5"', "12.50"), ("12.5", "12.50"), ("12.50", "12.50"), ('"12.50"', "12.50"),
    ("12", "12.00"), ('"0"', "0.00"), ("0", "0.00"), ('"007.1"', "7.10"),
])
def test_money_is_written_with_exactly_two_decimals(given_: str, wire: str) -> None:
    decoded = decode(completed(given_))
    assert json.loads(decoded.to_json())["payload"]["amount"] == wire
    assert str(decoded.payload.amount) == wire  # type: ignore[union-attr]


@pytest.mark.parametrize("amount", [Decimal("12.5"), 12, Decimal("1E+2")])
def test_python_callers_may_pass_an_int_or_a_decimal(amount: Decimal | int) -> None:
    raw = json.loads(completed())
    raw["payload"]["amount"] = amount
    assert validate(raw).payload.amount == amount  # type: ignore[union-attr]


def test_a_refund_of_nothing_is_refused_in_every_spelling() -> None:
    for literal in ('"0"', "0", "0.00", '"0.0"'):
        raw = completed(literal, type='"order.refunded"')
        assert problems_of(raw) == [Problem("payload.amount", "must be > 0")]


# --- money: properties ------------------------------------------------------------------------

documented_money = st.from_regex(r"[0-9]{1,12}(\.[0-9]{1,2})?", fullmatch=True)


@FAST
@given(documented_money)
def test_any_money_string_of_the_documented_form_round_trips_exactly(text: str) -> None:
    for decoded in (decode(completed(json.dumps(text))), validate(loads_json(completed(
            json.dumps(text))))):
        amount = decoded.payload.amount  # type: ignore[union-attr]
        assert amount == Decimal(text)
        assert json.loads(decoded.to_json())["payload"]["amount"] == f"{Decimal(text):.2f}"
        assert decode(decoded.to_json()) == decoded


@FAST
@given(documented_money)
def test_any_json_number_in_plain_notation_is_read_exactly(text: str) -> None:
    assume(text == "0" or not text.startswith("0") or text.startswith("0."))  # JSON: no 007
    assert decode(completed(text)).payload.amount == Decimal(text)  # type: ignore[union-attr]


near_misses = st.one_of(
    st.text(max_size=20),
    st.from_regex(r"[+\- ]?[0-9]{1,4}([.,_][0-9]{0,4})?([eE][+-]?[0-9]{1,3})?[ \n\t]?",
                  fullmatch=True),
    st.text(alphabet=st.characters(categories=("Nd", "No", "Nl")), min_size=1, max_size=6),
)


@FAST
@given(near_misses)
def test_any_other_money_string_is_refused_naming_the_field(text: str) -> None:
    assume(MONEY_FORM.fullmatch(text) is None)
    assert fields_of(completed(json.dumps(text))) == ["payload.amount"]
    raw = placed()
    raw["payload"]["items"][0]["unit_price"] = text
    assert fields_of(raw) == ["payload.items[0].unit_price"]


# --- ids --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "code_point", "position"), [
    ("\u200b", "U+200B", 0),         # only a zero-width space
    ("a\u200bb", "U+200B", 1),
    ("m\x00", "U+0000", 1),          # NUL: PostgreSQL text cannot even hold it
    ("m\x01", "U+0001", 1),
    ("m\x7f", "U+007F", 1),          # DEL
    ("m\u20281", "U+2028", 1),       # line separator
    ("\ufeffm", "U+FEFF", 0),        # byte-order mark
    ("\ud800", "U+D800", 0),         # a lone surrogate: not encodable as UTF-8
    ("\u00a0m", "U+00A0", 0),        # no-break space
    ("m\tn", "U+0009", 1),
])
def test_ids_must_be_printable_naming_the_first_bad_character(
        value: str, code_point: str, position: int) -> None:
    expected = [Problem("member_id", f"must be printable text: character {code_point} at "
                                     f"position {position} is not allowed")]
    body = completed(member_id=json.dumps(value))  # \u escapes, as a storefront would send
    assert problems_of(body) == expected
    assert problems_of(json.loads(body)) == expected


@pytest.mark.parametrize("key", ["event_id", "shop_id", "member_id"])
def test_every_envelope_id_is_checked(key: str) -> None:
    assert fields_of(completed(**{key: json.dumps("\u200b")})) == [key]


def test_payload_ids_are_checked_with_their_path() -> None:
    raw = placed()
    raw["payload"]["items"][0]["sku"] = "k\x00"
    raw["payload"]["region"] = "\u2028"
    assert fields_of(raw) == ["payload.items[0].sku", "payload.region"]


@pytest.mark.parametrize("value", ["a b", "SKU/0001:x", "茶客-42", "ü", "x" * 128, "😀"])
def test_printable_ids_with_inner_spaces_and_any_script_are_accepted(value: str) -> None:
    assert validate(json.loads(completed(member_id=json.dumps(value)))).member_id == value


@pytest.mark.parametrize(("value", "problem"), [
    ("", "must not be empty"),
    (" m", "must not start or end with a space"),
    ("m ", "must not start or end with a space"),
    ("x" * 129, "must be at most 128 characters (has 129)"),
])
def test_blank_padded_and_long_ids_get_their_own_reason(value: str, problem: str) -> None:
    assert problems_of(completed(member_id=json.dumps(value))) == [Problem("member_id", problem)]


# --- schema_version ---------------------------------------------------------------------------


@pytest.mark.parametrize(("literal", "shown"), [
    ("true", "true"), ("1.0", "the number 1.0"), ('"1"', "'1'"), ("null", "null"),
])
def test_schema_version_must_be_a_json_integer(literal: str, shown: str) -> None:
    assert problems_of(completed(schema_version=literal)) == [
        Problem("schema_version", f"must be a JSON integer (supported: 1), not {shown}")]


# --- the JSON itself --------------------------------------------------------------------------


def test_a_repeated_type_is_refused_instead_of_turning_a_completion_into_a_refund() -> None:
    raw = completed().replace('"type":"order.completed"',
                              '"type":"order.completed","type":"order.refunded"')
    assert problems_of(raw) == [Problem("type", "duplicate key; each key may appear once")]


def test_a_repeated_key_is_refused_in_a_nested_object_too() -> None:
    raw = completed('"8.50","amount":"0.01"')
    assert problems_of(raw) == [Problem("amount", "duplicate key; each key may appear once")]


def test_loads_json_refuses_repeated_keys_with_a_value_error_naming_the_key() -> None:
    with pytest.raises(ValueError) as info:
        loads_json('[{"a": 1}, {"b": 1, "b": 2}]')
    assert isinstance(info.value, events.JsonRejected)
    assert info.value.problem == Problem("b", "duplicate key; each key may appear once")
    assert loads_json('[{"a": 1}, {"a": 2}]') == [{"a": 1}, {"a": 2}]  # once per object


@pytest.mark.parametrize("depth", [33, 100, 10_000])
def test_deep_nesting_is_refused_cleanly(depth: int) -> None:
    text = '{"a":' * depth + "1" + "}" * depth
    too_deep = Problem("", "nested deeper than 32 levels")
    with pytest.raises(ValueError) as info:
        loads_json(text)
    assert info.value.problem == too_deep  # type: ignore[attr-defined]
    assert problems_of("[" * depth + "]" * depth) == [too_deep]
    assert problems_of(text) == [too_deep]


def test_deeply_nested_python_values_are_refused_before_anything_recurses() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(10_000):
        node["a"] = {}
        node = node["a"]
    raw = placed()
    raw["payload"]["items"][0]["sku"] = deep
    assert problems_of(raw) == [Problem("", "nested deeper than 32 levels")]
    cycle: list[Any] = []
    cycle.append(cycle)
    assert problems_of({**placed(), "colour": cycle}) == [
        Problem("", "nested deeper than 32 levels")]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(constant: str) -> None:
    with pytest.raises(ValueError, match=f"{constant} is not a JSON number"):
        loads_json('{"colour": ' + constant + "}")
    assert problems_of(completed(constant)) == [
        Problem("", f"{constant} is not a JSON number")]


def test_nesting_up_to_the_limit_is_read() -> None:
    assert loads_json("[" * 32 + "]" * 32) is not None
    assert loads_json('"' + "{{{{[[[[" * 40 + '"') == "{{{{[[[[" * 40  # brackets in text


# --- occurred_at ------------------------------------------------------------------------------


@pytest.mark.parametrize("literal", ["1769860800", "1769860800.5", "1769860800000"])
def test_an_epoch_number_is_refused(literal: str) -> None:
    [problem] = problems_of(completed(occurred_at=literal))
    assert problem.field == "occurred_at"
    assert problem.problem.endswith("not a number (epoch times are not accepted)")


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_a_time_with_no_utc_equivalent_is_out_of_range(when: str) -> None:
    assert fields_of(completed(occurred_at=json.dumps(when))) == ["occurred_at"]
    # Even with no time bounds at all (re-reading the archive) it cannot become a UTC time.
    assert problems_of(completed(occurred_at=json.dumps(when)), bounds=events.ARCHIVED_BOUNDS
                       ) == [Problem("occurred_at", f"is out of range: '{when}' has no time "
                                                    "in UTC")]


@pytest.mark.parametrize("when", [
    "2026-01-31", "2026-01-31T12:00:00", "2026-01-31T12", "2026-01-31T12:00:00+0800",
    "2026-01-31T12:00:00+08", "20260131T120000Z", "2026-W05-6T12:00:00Z", "2026-01-31T12:00:00Z ",
    "２０２６-01-31T12:00:00Z", "2026-01-31T12:00:00,5Z",
])
def test_anything_but_date_time_and_zone_is_refused(when: str) -> None:
    [problem] = problems_of(completed(occurred_at=json.dumps(when)))
    assert problem.field == "occurred_at"
    assert "with a timezone" in problem.problem


@pytest.mark.parametrize(("when", "utc"), [
    ("2026-01-31T12:00:00Z", datetime(2026, 1, 31, 12, tzinfo=UTC)),
    ("2026-01-31T12:00Z", datetime(2026, 1, 31, 12, tzinfo=UTC)),
    ("2026-01-31T20:00:00.25+08:00", datetime(2026, 1, 31, 12, 0, 0, 250_000, tzinfo=UTC)),
    ("2026-01-31 12:00:00-00:00", datetime(2026, 1, 31, 12, tzinfo=UTC)),
    ("2026-01-31t12:00:00.123456789z", datetime(2026, 1, 31, 12, 0, 0, 123_456, tzinfo=UTC)),
])
def test_iso_times_with_a_zone_are_stored_in_utc(when: str, utc: datetime) -> None:
    at = decode(completed(occurred_at=json.dumps(when))).occurred_at
    assert at == utc
    assert at.utcoffset() == timedelta(0)


def test_an_event_days_ahead_of_the_clock_is_refused() -> None:
    raw = completed(occurred_at='"2026-06-04T12:00:00Z"')
    assert problems_of(raw, now=NOW) == [Problem(
        "occurred_at", "is 3 days ahead of the clock (at most 0:05:00 ahead is accepted)")]


def test_an_event_before_the_floor_is_refused() -> None:
    raw = completed(occurred_at='"1999-12-31T23:59:59Z"')
    assert problems_of(raw, now=NOW) == [Problem(
        "occurred_at", "is before the earliest accepted time 2000-01-01T00:00:00Z")]


def test_time_bounds_default_to_the_documented_window() -> None:
    assert events.TimeBounds() == events.DEFAULT_BOUNDS
    assert events.DEFAULT_BOUNDS.floor == datetime(2000, 1, 1, tzinfo=UTC)
    assert events.DEFAULT_BOUNDS.max_skew == timedelta(minutes=5)
    with pytest.raises(TypeError):
        events.TimeBounds(floor=datetime(2000, 1, 1))
    with pytest.raises(TypeError):
        decode(completed(), now=datetime(2026, 1, 1))  # a naive clock is a programming error


@FAST
@given(ahead=st.integers(min_value=-10 * 86400, max_value=10 * 86400),
       skew=st.integers(min_value=0, max_value=3600),
       offset=st.integers(min_value=-14 * 4, max_value=14 * 4))
def test_time_bounds_are_enforced_against_the_injected_clock(ahead: int, skew: int,
                                                             offset: int) -> None:
    bounds = events.TimeBounds(floor=NOW - timedelta(days=5), max_skew=timedelta(seconds=skew))
    at = NOW + timedelta(seconds=ahead)
    zone = timezone(timedelta(minutes=15 * offset))
    body = completed(occurred_at=json.dumps(at.astimezone(zone).isoformat()))
    if NOW - timedelta(days=5) <= at <= NOW + timedelta(seconds=skew):
        assert decode(body, bounds=bounds, now=NOW).occurred_at == at
        assert validate(json.loads(body), bounds=bounds, now=NOW).occurred_at == at
    else:
        assert fields_of_with(body, bounds, NOW) == ["occurred_at"]


def fields_of_with(body: str, bounds: Any, now: datetime) -> list[str]:
    return [p.field for p in problems_of(body, bounds=bounds, now=now)]


def test_the_real_clock_is_the_default() -> None:
    soon = datetime.now(UTC) + timedelta(minutes=1)
    later = datetime.now(UTC) + timedelta(hours=2)
    assert decode(completed(occurred_at=json.dumps(soon.isoformat()))).occurred_at == soon
    [problem] = problems_of(completed(occurred_at=json.dumps(later.isoformat())))
    assert problem.problem == "is 2 hours ahead of the clock (at most 0:05:00 ahead is accepted)"


def test_archived_bounds_accept_any_representable_time() -> None:
    raw = completed(occurred_at='"0001-01-01T00:00:00Z"')
    assert decode(raw, bounds=events.ARCHIVED_BOUNDS).occurred_at.year == 1


# --- huge inputs never make huge reasons -----------------------------------------------------

HUGE = 5_000_000


def test_a_five_megabyte_type_makes_a_short_reason() -> None:
    raw = json.loads(completed())
    raw["type"] = "x" * HUGE
    [problem] = problems_of(raw)
    assert problem.field == "type"
    assert problem.problem.startswith("unknown event type '" + "x" * 64 + "…'")
    assert len(str(problem)) < 300


@pytest.mark.parametrize("junk", ["x" * HUGE, "\x00" * HUGE, "\U000e0001" * HUGE, " 1" * HUGE])
def test_no_problem_quotes_more_than_a_few_hundred_characters(junk: str) -> None:
    raw = placed()
    for key in ("event_id", "type", "shop_id", "occurred_at"):
        raw[key] = junk
    raw[junk] = 1
    raw["payload"]["amount"] = junk
    with pytest.raises(EventRejected) as info:
        validate(raw)
    assert all(len(p.field) <= 70 and len(p.problem) <= 400 for p in info.value.problems)
    assert len(info.value.reason) < 2000
    raw["type"] = "order.placed"
    raw["payload"]["items"][0].update(sku=junk, unit_price=junk)
    raw["schema_version"] = junk
    with pytest.raises(EventRejected) as info:
        validate(raw)
    assert len(info.value.problems) >= 6
    assert all(len(p.field) <= 70 and len(p.problem) <= 400 for p in info.value.problems)
    assert len(info.value.reason) < 3000


def test_thousands_of_problems_are_summarised() -> None:
    raw = placed()
    raw.update({f"extra-{i}": i for i in range(5000)})
    problems = problems_of(raw)
    assert len(problems) == events.MAX_PROBLEMS + 1
    assert problems[-1] == Problem("", f"and {5000 - events.MAX_PROBLEMS} more problems")


# --- clock.ticked -----------------------------------------------------------------------------


def test_a_clock_tick_belongs_to_no_member_and_has_no_key() -> None:
    decoded = validate(tick())
    assert isinstance(decoded, events.ClockTicked)
    assert decoded.type == "clock.ticked" and decoded.payload.source == "ingest"
    assert decoded.key is None
    assert not hasattr(decoded, "shop_id")
    assert decode(decoded.to_json()) == decoded
    assert json.loads(decoded.to_json()) == {
        "event_id": "tick-1", "schema_version": 1, "occurred_at": "2026-01-31T12:00:00Z",
        "type": "clock.ticked", "payload": {"source": "ingest"}}


def test_a_clock_tick_may_not_name_a_shop_or_member() -> None:
    assert problems_of(tick(shop_id="s", member_id="m")) == [
        Problem("shop_id", "not allowed: clock.ticked belongs to no shop or member"),
        Problem("member_id", "not allowed: clock.ticked belongs to no shop or member")]


def test_a_clock_tick_is_held_to_the_same_rules() -> None:
    assert fields_of(tick(payload={"source": "\u200b"})) == ["payload.source"]
    assert fields_of(tick(payload={})) == ["payload.source"]
    assert fields_of(tick(occurred_at=1769860800)) == ["occurred_at"]


def test_event_type_sets_include_the_clock_apart_from_the_inbound_topics() -> None:
    assert frozenset({"clock.ticked"}) == events.CLOCK_TYPES
    assert events.EVENT_TYPES == (events.ORDER_TYPES | events.CAMPAIGN_TYPES
                                  | events.BROWSING_TYPES | events.CLOCK_TYPES)
    assert "clock.ticked" not in events.ORDER_TYPES | events.CAMPAIGN_TYPES | events.BROWSING_TYPES
    assert events.SCHEMA_VERSIONS["clock.ticked"] == frozenset({1})


# --- the content digest -----------------------------------------------------------------------


def _shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        keys = list(value)
        rng.shuffle(keys)
        return {k: _shuffled(value[k], rng) for k in keys}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


@st.composite
def spellings(draw: st.DrawFn) -> tuple[str, str]:
    """Two bodies of one order.placed event, spelled differently."""
    cents = draw(st.integers(min_value=0, max_value=99_999_999_999_999))
    at = draw(st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2026, 5, 1),
                           timezones=st.just(UTC)))
    event = placed()
    event["occurred_at"] = "AT"
    event["payload"]["amount"] = "AMOUNT"

    def spell(seed: int) -> str:
        rng = random.Random(seed)
        zone = timezone(timedelta(minutes=15 * rng.randint(-14 * 4, 14 * 4)))
        shown = at.astimezone(zone).isoformat()
        whole, frac = divmod(cents, 100)
        amount = rng.choice([f'"{whole}.{frac:02d}"', f"{whole}.{frac:02d}",
                             f'"{whole}.{frac:02d}"'.replace(".00", "")]
                            + ([f"{whole}.{frac // 10}"] if frac % 10 == 0 else []))
        text = json.dumps(_shuffled(event, rng), indent=rng.choice([None, 0, 2, "\t"]),
                          separators=rng.choice([(",", ":"), (", ", ": "), (" ,", " : ")]))
        return text.replace('"AT"', json.dumps(shown)).replace('"AMOUNT"', amount)

    return spell(draw(st.integers())), spell(draw(st.integers()))


@FAST
@given(spellings())
def test_the_digest_does_not_depend_on_spelling(bodies: tuple[str, str]) -> None:
    first, second = (decode(b, now=NOW) for b in bodies)
    assert first.to_json() == second.to_json()
    assert events.digest(first) == events.digest(second)
    assert len(events.digest(first)) == 32


@pytest.mark.parametrize(("path", "value"), [
    (("event_id",), "e2"), (("member_id",), "m2"), (("occurred_at",), "2026-01-31T12:00:01Z"),
    (("payload", "amount"), "8.51"), (("payload", "region"), "south"),
    (("payload", "items", 0, "qty"), 3), (("payload", "items", 0, "sku"), "k2"),
])
def test_any_difference_in_meaning_changes_the_digest(path: tuple[Any, ...], value: Any) -> None:
    changed = placed()
    node: Any = changed
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert events.digest(validate(changed)) != events.digest(validate(placed()))


def test_the_digest_is_sha256_of_the_canonical_form() -> None:
    import hashlib

    decoded = validate(placed())
    assert events.digest(decoded) == hashlib.sha256(decoded.to_json()).digest()
    without_region = placed()
    del without_region["payload"]["region"]
    with_null = placed()
    with_null["payload"]["region"] = None
    assert events.digest(validate(without_region)) == events.digest(validate(with_null))


# --- loads_json: msgspec where it can, the standard library where it must ------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8)
    | st.decimals(allow_nan=False, allow_infinity=False, places=3).map(lambda d: float(d)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=20)


def _standard_library(raw: bytes) -> Any:
    """What the long way alone makes of `raw` (the reference)."""
    text = raw.decode("utf-8", "surrogatepass")
    obj = events._DECODER.decode(text)
    if events._too_deep(obj):
        raise events.JsonRejected(Problem("", "nested deeper than 32 levels"))
    return obj


@FAST
@given(json_values, st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")]),
       st.booleans(), st.integers(min_value=0, max_value=3))
def test_loads_json_reads_any_json_as_the_standard_library_does(
        value: Any, separators: tuple[str, str], ascii_only: bool, repeat: int) -> None:
    text = json.dumps(value, separators=separators, ensure_ascii=ascii_only)
    if repeat and text.startswith("{") and len(text) > 2:   # a repeated key, spelled as written
        first = text[1:text.index(separators[1].strip()) + 1] if ":" in text else ""
        text = "{" + first + " 1" + separators[0] + text[1:] if first else text
    raw = text.encode("utf-8", "surrogatepass")
    try:
        expected = _standard_library(raw)
    except ValueError as exc:
        with pytest.raises(ValueError) as info:
            loads_json(raw)
        assert type(info.value) is type(exc)
        return
    assert loads_json(raw) == expected
    assert loads_json(text) == expected


def test_a_colon_inside_a_string_is_not_taken_for_a_key() -> None:
    assert loads_json(b'{"a": "b", ": x": 1, "c": "\\": y"}') == {"a": "b", ": x": 1,
                                                                   "c": '": y'}
    with pytest.raises(events.JsonRejected):
        loads_json(b'{"a": "b", ": x": 1, ": x": 2}')
