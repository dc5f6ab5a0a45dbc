"""Dead letters (shared/deadletter.py): a rejected input with its reasons, storable whatever was
sent, with an id derived from what was rejected."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.deadletter import PROBLEM_LIMIT, RAW_LIMIT, REASON_LIMIT, dead_letter, storable
from shared.events import Problem

FAST = settings(max_examples=200, deadline=None, database=None)
AT = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)


def test_wire_form_carries_id_shop_event_reason_problems_raw_and_time() -> None:
    raw = '{"event_id": "e-1", "shop_id": "s-1", "bad": true}'
    letter = dead_letter("replay", "line 12", raw,
                         [Problem("payload.amount", "must be >= 0"), Problem("", "second")],
                         rejected_at=AT)
    assert json.loads(letter.to_json()) == {
        "letter_id": letter.letter_id,
        "source": "replay",
        "source_ref": "line 12",
        "shop_id": "s-1",
        "event_id": "e-1",
        "reason": "payload.amount: must be >= 0; second",
        "problems": [{"field": "payload.amount", "problem": "must be >= 0"},
                     {"field": "", "problem": "second"}],
        "raw": raw,
        "raw_size": len(raw),
        "rejected_at": "2026-01-31T12:00:00+00:00",
    }


def test_the_same_rejection_has_the_same_id_and_another_one_another() -> None:
    one = dead_letter("worker:tiering", "orders/0@5", b"{x", [Problem("", "bad")],
                      key="orders/0@5/1700000000000")
    again = dead_letter("worker:archiver", "orders/0@5", b"{x", [Problem("", "other words")],
                        key="orders/0@5/1700000000000")
    # The same record read by another worker, or the same batch retried: one letter.
    assert one.letter_id == again.letter_id
    # A new record at the same offset after the broker restarted carries another timestamp.
    after_restart = dead_letter("worker:tiering", "orders/0@5", b"{x", [Problem("", "bad")],
                                key="orders/0@5/1800000000000")
    assert after_restart.letter_id != one.letter_id
    other_body = dead_letter("worker:tiering", "orders/0@5", b"{y", [Problem("", "bad")],
                             key="orders/0@5/1700000000000")
    assert other_body.letter_id != one.letter_id


def test_without_a_key_the_source_and_ref_name_the_rejection() -> None:
    a = dead_letter("http", "request ab12 #0", "{}", [Problem("", "x")])
    b = dead_letter("http", "request ab12 #1", "{}", [Problem("", "x")])
    assert a.letter_id != b.letter_id
    assert a.letter_id == dead_letter("http", "request ab12 #0", "{}", [Problem("", "y")]).letter_id


def test_nul_bytes_and_unpaired_surrogates_become_storable_escapes() -> None:
    letter = dead_letter("http", "r", '{"member_id": "a\x00b\ud800"}', [Problem("m", "\x00")])
    assert "\x00" not in letter.raw and "\x00" not in letter.problems[0].problem
    letter.raw.encode("utf-8")  # PostgreSQL text accepts it
    assert "\\u0000" in letter.raw and "\\ud800" in letter.raw


def test_bytes_that_are_not_utf8_are_kept_as_escapes() -> None:
    letter = dead_letter("worker:tiering", "orders/1@2", b'{"a": "\xff\xfe"}', [Problem("", "x")])
    assert letter.raw == '{"a": "\\xff\\xfe"}'


def test_oversized_input_is_cut_and_its_size_kept() -> None:
    raw = "x" * (RAW_LIMIT * 3)
    letter = dead_letter("http", "r", raw, [Problem("type", "y" * 10_000)])
    assert len(letter.raw) < RAW_LIMIT + 100 and letter.raw.endswith("characters]")
    assert letter.raw_size == len(raw)
    assert len(letter.problems[0].problem) < PROBLEM_LIMIT + 50
    assert len(letter.reason) <= REASON_LIMIT + 50
    assert len(letter.to_json()) < RAW_LIMIT + 4096


def test_shop_and_event_are_read_only_when_they_are_short_printable_strings() -> None:
    assert dead_letter("http", "r", {"shop_id": "s", "event_id": 7}, [Problem("", "x")]
                       ).shop_id == "s"
    letter = dead_letter("http", "r", {"shop_id": "s\x00", "event_id": "e" * 500},
                         [Problem("", "x")])
    assert letter.shop_id is None and letter.event_id is None
    assert dead_letter("http", "r", "[1, 2]", [Problem("", "x")]).shop_id is None


def test_a_letter_always_names_at_least_one_problem() -> None:
    assert dead_letter("http", "r", "{}", []).problems == (Problem("", "rejected"),)


@FAST
@given(st.text(max_size=2000), st.lists(st.builds(Problem, st.text(max_size=300),
                                                  st.text(max_size=600)), max_size=5))
def test_any_input_gives_a_letter_postgres_and_the_broker_accept(raw: str,
                                                                problems: list[Problem]) -> None:
    letter = dead_letter("http", "r", raw, problems)
    for text in (letter.raw, letter.reason, letter.source_ref,
                 *(p.field for p in letter.problems), *(p.problem for p in letter.problems)):
        assert "\x00" not in text
        text.encode("utf-8")
    assert storable(letter.raw) == letter.raw
    json.loads(letter.to_json())
