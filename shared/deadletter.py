"""The dead-letter message: a rejected input with its reason, enough to inspect and re-drive."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from shared.events import Problem

RAW_LIMIT = 64 * 1024


@dataclass(frozen=True)
class DeadLetter:
    source: str        # "http", "replay", "worker:<name>"
    source_ref: str    # where it came from: "line 12", "orders/3@1200", "request 9f2c #4"
    problems: tuple[Problem, ...]
    raw: str
    rejected_at: datetime

    @property
    def reason(self) -> str:
        return "; ".join(str(p) for p in self.problems)

    def to_json(self) -> bytes:
        return json.dumps({
            "source": self.source,
            "source_ref": self.source_ref,
            "reason": self.reason,
            "problems": [asdict(p) for p in self.problems],
            "raw": self.raw,
            "rejected_at": self.rejected_at.isoformat(),
        }).encode()

    @classmethod
    def from_json(cls, data: bytes) -> DeadLetter:
        obj: dict[str, Any] = json.loads(data)
        return cls(
            source=str(obj["source"]),
            source_ref=str(obj.get("source_ref", "")),
            problems=tuple(Problem(str(p["field"]), str(p["problem"])) for p in obj["problems"]),
            raw=str(obj["raw"]),
            rejected_at=datetime.fromisoformat(obj["rejected_at"]),
        )


def dead_letter(source: str, source_ref: str, raw: bytes | str,
                problems: list[Problem] | tuple[Problem, ...]) -> DeadLetter:
    """Build a dead letter; an oversized input is kept truncated and says so."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    if len(text) > RAW_LIMIT:
        text = text[:RAW_LIMIT] + f"... [truncated, {len(text)} characters in all]"
    return DeadLetter(source, source_ref, tuple(problems), text, datetime.now(UTC))
