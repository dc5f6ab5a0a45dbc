"""Replay input readers and progress output (services/ingest/replay.py), without a broker."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from services.ingest import replay as replay_module
from services.ingest.handlers import Refused, Verdict
from services.ingest.replay import (
    CSV_COLUMNS,
    Progress,
    ReplayReport,
    count_lines,
    format_rejections,
    read_csv,
    read_file,
    read_jsonl,
)
from shared.events import EventRejected, Problem, decode, validate

HEADER = ",".join(CSV_COLUMNS)
PAYLOAD_CELL = '"{""order_id"":""o-1"",""amount"":123456789012.17}"'
GOOD_ROW = f"evt-1,order.completed,1,shop-1,mem-1,2026-01-31T20:00:00+08:00,{PAYLOAD_CELL}"
GOOD_LINE = json.dumps({
    "event_id": "evt-1", "type": "order.completed", "schema_version": 1, "shop_id": "shop-1",
    "member_id": "mem-1", "occurred_at": "2026-01-31T20:00:00+08:00",
    "payload": {"order_id": "o-1", "amount": "123456789012.17"}})


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def problems_of(obj: Any) -> list[Problem]:
    with pytest.raises(EventRejected) as info:
        validate(obj)
    return info.value.problems


# --- JSON lines -------------------------------------------------------------------------------


def test_jsonl_yields_each_line_with_its_physical_line_number(tmp_path: Path) -> None:
    path = write(tmp_path, "events.jsonl", f'{GOOD_LINE}\n\n   \n{{"b": 2}}\r\n  {{"c": 3}}  ')
    assert list(read_jsonl(path)) == [
        ("line 1", GOOD_LINE.encode()),
        ("line 4", b'{"b": 2}'),
        ("line 5", b'{"c": 3}'),
    ]


def test_jsonl_lines_are_passed_on_raw_for_the_contract_to_judge(tmp_path: Path) -> None:
    path = write(tmp_path, "events.jsonl", "not json at all\n" + GOOD_LINE + "\n")
    [(_, bad), (_, good)] = list(read_jsonl(path))
    assert bad == b"not json at all"
    assert decode(good).event_id == "evt-1"


def test_empty_jsonl_file_yields_nothing(tmp_path: Path) -> None:
    assert list(read_jsonl(write(tmp_path, "empty.jsonl", "\n\n"))) == []


def test_count_lines_counts_non_blank_lines(tmp_path: Path) -> None:
    assert count_lines(write(tmp_path, "events.jsonl", "a\n\n  \nb\nc")) == 3


@pytest.mark.parametrize("name", ["events.jsonl", "events.ndjson", "events.json-lines",
                                  "events.txt", "events"])
def test_anything_but_csv_is_read_as_json_lines(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, name, GOOD_LINE + "\n")
    assert list(read_file(path)) == [("line 1", GOOD_LINE.encode())]


@pytest.mark.parametrize("name", ["events.csv", "EVENTS.CSV", "events.Csv"])
def test_csv_files_are_read_as_csv_whatever_the_case_of_the_suffix(tmp_path: Path,
                                                                    name: str) -> None:
    path = write(tmp_path, name, f"{HEADER}\n{GOOD_ROW}\n")
    [(ref, obj)] = list(read_file(path))
    assert ref == "line 2"
    assert isinstance(obj, dict)


# --- CSV --------------------------------------------------------------------------------------


def test_csv_row_becomes_an_event_object_with_exact_money(tmp_path: Path) -> None:
    path = write(tmp_path, "events.csv", f"{HEADER}\n{GOOD_ROW}\n")
    [(ref, obj)] = list(read_csv(path))
    assert ref == "line 2"
    assert obj == {"event_id": "evt-1", "type": "order.completed", "schema_version": 1,
                   "shop_id": "shop-1", "member_id": "mem-1",
                   "occurred_at": "2026-01-31T20:00:00+08:00",
                   "payload": {"order_id": "o-1", "amount": Decimal("123456789012.17")}}
    assert isinstance(obj["payload"]["amount"], Decimal)


def test_csv_row_and_json_line_decode_to_the_same_event(tmp_path: Path) -> None:
    csv_path = write(tmp_path, "events.csv", f"{HEADER}\n{GOOD_ROW}\n")
    jsonl_path = write(tmp_path, "events.jsonl", GOOD_LINE + "\n")
    [(_, obj)] = list(read_csv(csv_path))
    [(_, raw)] = list(read_jsonl(jsonl_path))
    assert validate(obj) == decode(raw)


def test_csv_columns_may_come_in_any_order(tmp_path: Path) -> None:
    header = "payload,occurred_at,member_id,shop_id,schema_version,type,event_id"
    row = (f"{PAYLOAD_CELL},2026-01-31T12:00:00Z,mem-1,shop-1,1,order.completed,evt-1")
    [(_, obj)] = list(read_csv(write(tmp_path, "events.csv", f"{header}\n{row}\n")))
    assert validate(obj).event_id == "evt-1"


def test_csv_header_without_a_required_column_is_refused_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path, "events.csv", "event_id,type,shop_id,member_id,occurred_at\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) schema_version, payload"):
        list(read_csv(path))


def test_csv_file_with_only_a_header_yields_nothing(tmp_path: Path) -> None:
    assert list(read_csv(write(tmp_path, "events.csv", HEADER + "\n"))) == []


def test_empty_csv_cells_are_left_out_so_the_contract_says_required(tmp_path: Path) -> None:
    row = f"evt-1,order.completed,1,shop-1,,2026-01-31T12:00:00Z,{PAYLOAD_CELL}"
    [(_, obj)] = list(read_csv(write(tmp_path, "events.csv", f"{HEADER}\n{row}\n")))
    assert "member_id" not in obj
    assert problems_of(obj) == [Problem("member_id", "required")]


def test_csv_payload_that_is_not_json_is_kept_as_text_and_refused_naming_payload(
        tmp_path: Path) -> None:
    row = "evt-1,order.completed,1,shop-1,mem-1,2026-01-31T12:00:00Z,{order_id: o-1}"
    [(_, refused)] = list(read_csv(write(tmp_path, "events.csv", f"{HEADER}\n{row}\n")))
    assert isinstance(refused, Refused)
    assert refused.item["payload"] == "{order_id: o-1}"   # the dead letter keeps the cell
    [problem] = refused.problems
    assert problem.field == "payload"
    assert problem.problem.startswith("the cell is not a JSON object (Expecting property name")


@pytest.mark.parametrize(("cell", "expected"), [
    ('"{""order_id"":""o-1"",""amount"":1,""amount"":2}"',
     Problem("payload.amount", "duplicate key; each key may appear once")),
    ('"{""order_id"":""o-1"",""amount"":NaN}"', Problem("payload", "NaN is not a JSON number")),
    ('"' + '[' * 40 + ']' * 40 + '"', Problem("payload", "nested deeper than 32 levels")),
])
def test_csv_payload_the_contract_refuses_as_json_says_what_in_the_payload(
        tmp_path: Path, cell: str, expected: Problem) -> None:
    row = f"evt-1,order.completed,1,shop-1,mem-1,2026-01-31T12:00:00Z,{cell}"
    [(_, refused)] = list(read_csv(write(tmp_path, "events.csv", f"{HEADER}\n{row}\n")))
    assert isinstance(refused, Refused) and refused.problems == (expected,)


@pytest.mark.parametrize(("cell", "expected"), [("1", 1), ("01", 1), ("2", 2), ("v1", "v1"),
                                                ("1.0", "1.0"), (" 1", " 1")])
def test_csv_schema_version_is_a_number_only_when_it_is_all_digits(
        tmp_path: Path, cell: str, expected: Any) -> None:
    row = f'evt-1,order.completed,"{cell}",shop-1,mem-1,2026-01-31T12:00:00Z,{PAYLOAD_CELL}'
    [(_, obj)] = list(read_csv(write(tmp_path, "events.csv", f"{HEADER}\n{row}\n")))
    assert obj["schema_version"] == expected


def test_csv_extra_columns_are_kept_so_the_contract_refuses_them(tmp_path: Path) -> None:
    path = write(tmp_path, "events.csv", f"{HEADER},note\n{GOOD_ROW},hello\n")
    [(_, obj)] = list(read_csv(path))
    assert obj["note"] == "hello"
    assert problems_of(obj) == [Problem("note", "unknown field")]


def test_csv_rows_are_numbered_by_line(tmp_path: Path) -> None:
    rows = [GOOD_ROW.replace("evt-1", f"evt-{i}") for i in range(3)]
    path = write(tmp_path, "events.csv", "\r\n".join([HEADER, *rows]) + "\r\n")
    assert [ref for ref, _ in read_csv(path)] == ["line 2", "line 3", "line 4"]


def test_csv_payload_spanning_lines_is_read_whole(tmp_path: Path) -> None:
    cell = '"{\n""order_id"": ""o-1"",\n""amount"": 5}"'
    row = f"evt-1,order.completed,1,shop-1,mem-1,2026-01-31T12:00:00Z,{cell}"
    [(_, obj)] = list(read_csv(write(tmp_path, "events.csv", f"{HEADER}\n{row}\n")))
    assert obj["payload"] == {"order_id": "o-1", "amount": 5}


def test_csv_bad_row_does_not_stop_the_rows_after_it(tmp_path: Path) -> None:
    bad = "evt-1,order.completed,1,shop-1,mem-1,2026-01-31T12:00:00Z,not json"
    good = GOOD_ROW.replace("evt-1", "evt-2")
    refs = [ref for ref, _ in read_csv(write(tmp_path, "events.csv", f"{HEADER}\n{bad}\n{good}\n"))]
    assert refs == ["line 2", "line 3"]


def test_csv_row_with_missing_cells_is_yielded_for_rejection_not_a_crash(tmp_path: Path) -> None:
    short = "evt-1,order.completed,1,shop-1,mem-1"
    good = GOOD_ROW.replace("evt-1", "evt-2")
    items = list(read_csv(write(tmp_path, "events.csv", f"{HEADER}\n{short}\n{good}\n")))
    assert [ref for ref, _ in items] == ["line 2", "line 3"]
    fields = {p.field for p in problems_of(items[0][1])}
    assert {"occurred_at", "payload"} <= fields


def test_csv_schema_version_in_odd_digits_is_rejected_not_a_crash(tmp_path: Path) -> None:
    row = f"evt-1,order.completed,²,shop-1,mem-1,2026-01-31T12:00:00Z,{PAYLOAD_CELL}"
    [(_, obj)] = list(read_csv(write(tmp_path, "events.csv", f"{HEADER}\n{row}\n")))
    assert [p.field for p in problems_of(obj)] == ["schema_version"]


# --- progress ---------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(replay_module, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_off_a_terminal_writes_one_line_per_tenth(clock: FakeClock) -> None:
    out = io.StringIO()
    progress = Progress(100, out)
    for done in (5, 9, 10, 19, 55, 99):
        clock.now += 1
        progress.update(done, rejected=1)
    lines = out.getvalue().splitlines()
    assert [line.split("] ")[1].split(" ")[0] for line in lines] == ["5/100", "10/100", "55/100",
                                                                     "99/100"]


def test_progress_line_shows_bar_counts_rate_and_rejections(clock: FakeClock) -> None:
    out = io.StringIO()
    progress = Progress(2000, out, label="import")
    clock.now += 2
    progress.update(1000, rejected=3)
    assert out.getvalue() == (f"import [{'#' * 15:<30}] 1,000/2,000  50% 500 ev/s, 3 rejected\n")


def test_progress_final_line_is_written_once(clock: FakeClock) -> None:
    out = io.StringIO()
    progress = Progress(100, out)
    progress.update(50, 0)
    progress.update(50, 0, final=True)
    progress.update(50, 0, final=True)
    assert len(out.getvalue().splitlines()) == 2


def test_progress_reaching_the_total_counts_as_the_final_line(clock: FakeClock) -> None:
    out = io.StringIO()
    progress = Progress(100, out)
    progress.update(100, 2)
    progress.update(100, 2, final=True)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert f"[{'#' * 30}] 100/100 100%" in lines[0]
    assert lines[0].endswith("2 rejected")


def test_progress_never_shows_more_than_the_whole(clock: FakeClock) -> None:
    out = io.StringIO()
    progress = Progress(10, out)
    progress.update(15, 0, final=True)
    assert f"[{'#' * 30}] 15/10 100%" in out.getvalue()


def test_progress_without_a_total_writes_a_line_per_hundred_thousand(clock: FakeClock) -> None:
    out = io.StringIO()
    progress = Progress(None, out)
    for done in (5, 50_000, 100_000, 150_000, 250_000):
        clock.now += 1
        progress.update(done, 0)
    progress.update(260_000, 4, final=True)
    lines = out.getvalue().splitlines()
    assert [line.split(" ")[1] for line in lines] == ["5", "100,000", "250,000", "260,000"]
    assert lines[-1].startswith("replay 260,000 events ")
    assert lines[-1].endswith("4 rejected")


def test_progress_with_a_zero_total_behaves_as_unknown(clock: FakeClock) -> None:
    out = io.StringIO()
    Progress(0, out).update(0, 0, final=True)
    assert out.getvalue().startswith("replay 0 events ")


def test_progress_on_a_terminal_redraws_one_line_at_most_five_times_a_second(
        clock: FakeClock) -> None:
    out = Terminal()
    progress = Progress(100, out)
    progress.update(10, 0)
    clock.now += 0.1
    progress.update(20, 0)          # too soon: skipped
    clock.now += 0.15
    progress.update(30, 0)
    clock.now += 0.01
    progress.update(40, 0, final=True)  # the final line is always drawn, and ends the line
    text = out.getvalue()
    assert text.count("\r") == 3
    assert "20/100" not in text
    assert text.endswith("\n") and text.count("\n") == 1
    assert text.split("\r")[-1].startswith("replay [############")


def test_rejections_are_listed_with_their_line_and_reasons() -> None:
    report = ReplayReport(accepted=5, rejected=[
        Verdict(f"line {n}", None, (Problem("payload.amount", "must be >= 0"),
                                    Problem("", "extra")))
        for n in range(1, 4)])
    assert report.total == 8
    assert format_rejections(report, limit=2) == (
        "  line 1: payload.amount: must be >= 0; extra\n"
        "  line 2: payload.amount: must be >= 0; extra\n"
        "  ... and 1 more (all on the dead-letter topic)\n")
    assert format_rejections(ReplayReport()) == ""
