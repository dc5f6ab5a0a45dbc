"""Replay: historic events from JSONL, CSV or the archive, produced as fast as the broker takes.

Event time travels inside each event, so a replay is processed exactly like live traffic. Every
input line ends accepted or rejected with its line number and reason; none is dropped silently.
"""

from __future__ import annotations

import csv
import io
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from services.ingest.handlers import Ingestor, Refused, Verdict
from shared.events import JsonRejected, Problem, loads_json

CSV_COLUMNS = ("event_id", "type", "schema_version", "shop_id", "member_id", "occurred_at",
               "payload")
CHUNK = 2000


@dataclass
class ReplayReport:
    accepted: int = 0
    rejected: list[Verdict] = field(default_factory=list)
    seconds: float = 0.0
    duplicates: int = 0          # accepted before: recognised by id and content
    late: int = 0                # accepted, but too late for campaign attribution
    refused: int = 0             # archived bodies the contract no longer accepts (skipped)
    newest: datetime | None = None   # the newest event time accepted

    @property
    def total(self) -> int:
        return self.accepted + len(self.rejected)


def count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def read_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    """(ref, raw line) for every non-blank line."""
    with path.open("rb") as fh:
        for n, line in enumerate(fh, start=1):
            if line.strip():
                yield f"line {n}", line.strip()


def read_csv(path: Path) -> Iterator[tuple[str, Any]]:
    """(ref, event object) per row; `payload` is a JSON object in its cell."""
    # utf-8-sig: spreadsheet exports often start with a byte-order mark.
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh, restkey="(cells beyond the header)")
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: CSV header lacks column(s) {', '.join(missing)}")
        for row in reader:
            ref = f"line {reader.line_num}"
            # A short row leaves its missing cells as None: absent, so the contract names them.
            obj: dict[str, Any] = {
                k: v for k, v in row.items() if k in CSV_COLUMNS and v is not None and v != ""
            }
            version = obj.get("schema_version")
            if isinstance(version, str) and version.isascii() and version.isdigit():
                obj["schema_version"] = int(version)
            extra = [k for k in row if k not in CSV_COLUMNS]
            for key in extra:
                obj[str(key)] = row[key]
            problem = None
            if "payload" in obj:
                try:
                    obj["payload"] = loads_json(obj["payload"])
                except JsonRejected as exc:   # a repeated key, nesting too deep, NaN
                    inner = exc.problem
                    problem = Problem(f"payload.{inner.field}" if inner.field else "payload",
                                      inner.problem)
                except ValueError as exc:
                    problem = Problem("payload", f"the cell is not a JSON object ({exc})")
            # A payload cell that is not JSON is refused naming it and why, the cell kept as text.
            yield ref, (obj if problem is None else Refused(obj, (problem,)))


def read_file(path: Path) -> Iterator[tuple[str, Any]]:
    """Events from a .jsonl/.ndjson/.json-lines or .csv file."""
    if path.suffix.lower() == ".csv":
        return read_csv(path)
    return read_jsonl(path)


class Progress:
    """A one-line progress bar on a terminal; a line per 10% elsewhere."""

    def __init__(self, total: int | None, stream: IO[str] = sys.stderr, label: str = "replay"):
        self.total = total
        self.stream = stream
        self.label = label
        self.started = time.monotonic()
        self._last = 0.0
        self._last_decile = -1
        self._final_done = False
        self.tty = stream.isatty()

    def update(self, done: int, rejected: int, final: bool = False) -> None:
        now = time.monotonic()
        rate = done / max(now - self.started, 1e-9)
        if self.total:
            frac = min(1.0, done / self.total)
            bar = "#" * int(frac * 30)
            line = (f"{self.label} [{bar:<30}] {done:,}/{self.total:,} {frac:4.0%} "
                    f"{rate:,.0f} ev/s, {rejected:,} rejected")
            decile = int(frac * 10)
        else:
            line = f"{self.label} {done:,} events {rate:,.0f} ev/s, {rejected:,} rejected"
            decile = done // 100_000
        if self.tty:
            if final or now - self._last > 0.2:
                self.stream.write("\r" + line + ("\n" if final else ""))
                self.stream.flush()
                self._last = now
        elif decile != self._last_decile or (final and not self._final_done):
            self.stream.write(line + "\n")
            self._last_decile = decile
        self._final_done = self._final_done or final or (self.total is not None
                                                          and done >= self.total)


async def replay(items: Iterator[tuple[str, Any]], ingestor: Ingestor,
                 progress: Progress | None = None) -> ReplayReport:
    """Validate and produce every item; returns the accepted count and each rejection."""
    report = ReplayReport()
    started = time.monotonic()
    chunk: list[tuple[str, Any]] = []

    async def flush() -> None:
        for verdict in await ingestor.submit(chunk):
            if verdict.accepted:
                report.accepted += 1
                report.duplicates += verdict.status == "duplicate"
                report.late += bool(verdict.notes)
                if verdict.occurred_at is not None and (report.newest is None
                                                        or verdict.occurred_at > report.newest):
                    report.newest = verdict.occurred_at
            else:
                report.rejected.append(verdict)
        chunk.clear()
        if progress:
            progress.update(report.total, len(report.rejected))

    for item in items:
        chunk.append(item)
        if len(chunk) >= CHUNK:
            await flush()
    if chunk:
        await flush()
    if progress:
        progress.update(report.total, len(report.rejected), final=True)
    report.seconds = time.monotonic() - started
    return report


def format_rejections(report: ReplayReport, limit: int = 20) -> str:
    """The rejected lines, one per line, for the operator."""
    out = io.StringIO()
    for verdict in report.rejected[:limit]:
        reasons = "; ".join(str(p) for p in verdict.problems)
        out.write(f"  {verdict.ref}: {reasons}\n")
    if len(report.rejected) > limit:
        out.write(f"  ... and {len(report.rejected) - limit} more (all on the dead-letter topic)\n")
    return out.getvalue()
