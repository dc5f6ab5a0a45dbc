"""Dead letters (shared/deadletter.py): a rejected input with its reasons, as sent to the DLQ."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.deadletter import RAW_LIMIT, DeadLetter, dead_letter
from shared.events import Problem

FAST = settings(max_examples=100, deadline=None, database=None)

problems = st.builds(Problem, st.text(max_size=30), st.text(max_size=60))
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda m: timezone(timedelta(minutes=m)))
letters = st.builds(
    DeadLetter,
    source=st.sampled_from(["http", "replay", "unknown"]) | st.text(max_size=20).map(
        lambda s: f"worker:{s}"),
    source_ref=st.text(max_size=40),
    problems=st.lists(problems, max_size=4).map(tuple),
    raw=st.text(max_size=300),
    rejected_at=st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1),
                             timezones=offsets),
)


@FAST
@given(letters)
def test_any_dead_letter_survives_the_wire_unchanged(letter: DeadLetter) -> None:
    back = DeadLetter.from_json(letter.to_json())
    assert back == letter
    assert back.rejected_at.utcoffset() == letter.rejected_at.utcoffset()
    assert back.reason == letter.reason


def test_wire_form_carries_reason_problems_raw_and_time() -> None:
    at = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
    letter = DeadLetter("replay", "line 12",
                        (Problem("payload.amount", "must be >= 0"), Problem("", "second")),
                        '{"bad": true}', at)
    assert json.loads(letter.to_json()) == {
        "source": "replay",
        "source_ref": "line 12",
        "reason": "payload.amount: must be >= 0; second",
        "problems": [{"field": "payload.amount", "problem": "must be >= 0"},
                     {"field": "", "problem": "second"}],
        "raw": '{"bad": true}',
        "rejected_at": "2026-01-31T12:00:00+00:00",
    }


def test_reading_a_letter_without_a_source_ref_gives_an_empty_ref() -> None:
    letter = DeadLetter.from_json(json.dumps({
        "source": "http", "problems": [{"field": "type", "problem": "required"}],
        "raw": "{}", "rejected_at": "2026-01-31T12:00:00+00:00"}).encode())
    assert letter.source_ref == ""
    assert letter.problems == (Problem("type", "required"),)


@pytest.mark.parametrize("data", [
    b"not json",
    b"\xff\xfe",
    b"[]",
    b'"text"',
    b"{}",
    b'{"source": "x", "problems": [{"field": "f"}], "raw": "", "rejected_at": "2026-01-01"}',
    b'{"source": "x", "problems": 5, "raw": "", "rejected_at": "2026-01-01"}',
    b'{"source": "x", "problems": [], "raw": "", "rejected_at": "yesterday"}',
    b'{"source": "x", "problems": [], "raw": "", "rejected_at": null}',
])
def test_unreadable_letters_fail_with_an_error_the_recorder_catches(data: bytes) -> None:
    # The dead-letter recorder catches exactly these three and keeps the message visible.
    with pytest.raises((ValueError, KeyError, TypeError)):
        DeadLetter.from_json(data)


def test_dead_letter_keeps_small_input_whole_and_stamps_the_time() -> None:
    before = datetime.now(UTC)
    letter = dead_letter("http", "request 9f2c #4", '{"x": 1}', [Problem("type", "required")])
    after = datetime.now(UTC)
    assert letter.raw == '{"x": 1}'
    assert letter.problems == (Problem("type", "required"),)
    assert letter.reason == "type: required"
    assert before <= letter.rejected_at <= after
    assert letter.rejected_at.utcoffset() == timedelta(0)


def test_dead_letter_decodes_bytes_replacing_what_is_not_utf8() -> None:
    letter = dead_letter("replay", "line 3", b'{"name": "\xe8\x8c\xb6\xff"}', [])
    assert letter.raw == '{"name": "茶\ufffd"}'


def test_input_of_exactly_the_limit_is_kept_whole() -> None:
    raw = "x" * RAW_LIMIT
    assert dead_letter("http", "r", raw, []).raw == raw


def test_oversized_input_is_truncated_and_says_so() -> None:
    raw = "a" * RAW_LIMIT + "b" * 10
    letter = dead_letter("http", "request 1", raw, [Problem("", "too big")])
    assert letter.raw.startswith("a" * RAW_LIMIT)
    assert "b" not in letter.raw
    assert letter.raw.endswith(f"... [truncated, {RAW_LIMIT + 10} characters in all]")
    back = DeadLetter.from_json(letter.to_json())
    assert back == letter


def test_oversized_bytes_are_measured_in_characters_after_decoding() -> None:
    raw = ("茶" * (RAW_LIMIT + 1)).encode()
    letter = dead_letter("replay", "line 1", raw, [])
    assert letter.raw == "茶" * RAW_LIMIT + f"... [truncated, {RAW_LIMIT + 1} characters in all]"


@FAST
@given(st.text(max_size=50), st.integers(min_value=0, max_value=3))
def test_dead_letter_keeps_every_problem_in_order(raw: str, n: int) -> None:
    given_problems = [Problem(f"f{i}", f"problem {i}") for i in range(n)]
    letter = dead_letter("http", "r", raw, given_problems)
    assert letter.problems == tuple(given_problems)
    assert letter.raw == raw
    assert letter.reason == "; ".join(f"f{i}: problem {i}" for i in range(n))
