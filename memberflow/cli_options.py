"""The options and output every command shares, kept light: a command that only asks the
running API (see `memberflow.local`) loads this and nothing of the database."""

from __future__ import annotations

import csv
import json
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

kafka_opt = click.option("--kafka", "kafka_", metavar="HOST:PORT",
                         help="Kafka bootstrap servers (default: $MEMBERFLOW_KAFKA, else embedded)")
db_opt = click.option("--database-url", metavar="URL",
                      help="PostgreSQL URL (default: $MEMBERFLOW_DATABASE_URL, else embedded)")
dir_opt = click.option("--data-dir", type=click.Path(path_type=Path),
                       help="where the embedded database lives (default: .memberflow)")
dry_run_opt = click.option("--dry-run", is_flag=True,
                           help="show what would change, change nothing")
yes_opt = click.option("--yes", is_flag=True,
                       help="apply a change to a filtered set or --all without asking")


class Amount(click.ParamType):
    """A money amount as people type it: 5000, 5,000 or 5,000.00 (never a float)."""

    name = "amount"
    _form = re.compile(r"\d{1,3}(,\d{3})+(\.\d{1,2})?|\d+(\.\d{1,2})?")

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Decimal:
        if isinstance(value, Decimal):
            return value
        text = str(value).strip()
        if not self._form.fullmatch(text):
            self.fail(f"{text!r} is not an amount like 5000, 5,000 or 5,000.00", param, ctx)
        return Decimal(text.replace(",", ""))


def filter_options(func: F) -> F:
    """--member/--level/--abc/--min-spend/--max-spend/--dormant-days/--tag/--important/
    --rfm-segment/--max-p-alive/--min-expected-value (AND)."""
    options = [
        click.option("--member", "f_member", multiple=True, help="member id (repeatable)"),
        click.option("--level", "f_level", type=int, multiple=True,
                     help="members at this level (repeatable)"),
        click.option("--abc", "f_abc", multiple=True,
                     type=click.Choice(["A", "B", "C", "none"]),
                     help="members of this customer ABC class (repeatable; none = unclassified)"),
        click.option("--min-spend", "f_min", type=Amount(), help="net spend at least this"),
        click.option("--max-spend", "f_max", type=Amount(), help="net spend at most this"),
        click.option("--dormant-days", "f_dormant", type=click.IntRange(min=1),
                     help="no completed trade in this many days (event time)"),
        click.option("--tag", "f_tag", multiple=True,
                     help="members holding this tag (repeatable: all of them)"),
        click.option("--important", "f_important", is_flag=True, default=None,
                     help="members marked important"),
        click.option("--rfm-segment", "f_rfm", multiple=True,
                     help="members in this RFM segment (repeatable: any of them; none = no "
                          "purchase in the RFM period)"),
        click.option("--max-p-alive", "f_alive", type=click.FloatRange(0, 1),
                     help="predicted probability of being active at most this (e.g. 0.3)"),
        click.option("--min-expected-value", "f_value", type=Amount(),
                     help="predicted value over the shop's horizon at least this"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def emit(rows: Iterable[dict[str, Any]], columns: Iterable[str], fmt: str,
         document: Any = None) -> None:
    """Rows as CSV (lists joined with "|"), or `document` (default: the rows) as JSON, on stdout."""
    if fmt == "json":
        click.echo(json.dumps(document if document is not None else list(rows), indent=2,
                              ensure_ascii=False))
        return
    writer = csv.DictWriter(sys.stdout, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: "|".join(v) if isinstance(v, list) else v for k, v in row.items()}
                     for row in rows)


def _width(text: str) -> int:
    """Columns a string takes in a terminal: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> None:
    """Rows as aligned columns under headers; `columns` is (key, header)."""
    cells = [[("" if r.get(k) is None else str(r.get(k))) for k, _ in columns] for r in rows]
    widths = [max([_width(h)] + [_width(c[i]) for c in cells]) for i, (_, h) in
              enumerate(columns)]

    def line(values: list[str]) -> str:
        return "  ".join(v + " " * (w - _width(v)) for v, w in zip(values, widths,
                                                                     strict=True)).rstrip()

    click.echo(line([h for _, h in columns]))
    for c in cells:
        click.echo(line(c))
