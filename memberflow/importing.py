"""Importing a shop's existing customers from CSV or XLSX, as shops keep them in spreadsheets.

A file has a header row; its columns are found by name, in English or as Chinese spreadsheets
name them (`member_id`/`会员ID`/`买家会员名`, `name`/`姓名`, `phone`/`手机`, `address`/`地址`,
`region`/`地区`, `tags`/`标签`, `level`/`等级`). Only `member_id` is required; an empty cell
changes nothing.

Every row is checked before anything is written, and every problem is reported with its line
and column (`line 7, phone: ...`). One problem and nothing is imported: a file goes in whole or
not at all. Importing the same file again changes nothing (each write compares first), and an
erased member's personal data is never written back.

What a row sets:
- personal data (name, phone, address) into `member_profiles`, kept apart from the figures;
- `region`, where the member's orders have not told it yet;
- `tags`: manual tags of the shop's configuration (`|` or `,` between them), added, never
  removed; a tag a rule maintains is refused;
- `level`: a level number or name of the shop's ladder, set by hand (recorded as a manual level
  change with the file's name as the reason).
Members not known yet are created with no trades.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from services.tagging import operations as tagging_ops
from services.tiering import operations as tiering_ops
from shared.audit import OperationRefused, audit
from shared.events import ID_MAX_LENGTH
from shared.filters import MemberFilter
from shared.shopconfig import ShopConfig
from shared.shops import shop_configs
from shared.topics import Topics

COLUMNS: dict[str, tuple[str, ...]] = {
    "member_id": ("member_id", "member", "会员id", "会员ID", "买家会员名", "客户id", "客户ID",
                  "会员编号"),
    "name": ("name", "姓名", "收货人姓名", "客户姓名"),
    "phone": ("phone", "mobile", "手机", "手机号", "手机号码", "联系电话"),
    "address": ("address", "地址", "收货地址", "详细地址"),
    "region": ("region", "地区", "省份", "所在地区"),
    "tags": ("tags", "标签"),
    "level": ("level", "等级", "会员等级"),
}
MAX_ROWS = 1_000_000
_PHONE = re.compile(r"\+?[0-9][0-9 \-]{4,23}")
_TAG_SPLIT = re.compile(r"[|,，、]")


@dataclass(frozen=True)
class Problem:
    line: int
    column: str
    problem: str

    def __str__(self) -> str:
        return f"line {self.line}, {self.column}: {self.problem}"


class ImportRefused(OperationRefused):
    """The file has problems; nothing was imported."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        shown = "\n  ".join(str(p) for p in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{len(problems)} problem(s), nothing imported:\n  {shown}{more}")


@dataclass
class Row:
    line: int
    member_id: str
    name: str | None = None
    phone: str | None = None
    address: str | None = None
    region: str | None = None
    tags: tuple[str, ...] = ()
    level: int | None = None


@dataclass
class Imported:
    rows: int
    members_created: int = 0
    profiles_changed: int = 0
    regions_set: int = 0
    levels_changed: int = 0
    tags_added: int = 0
    erased_skipped: int = 0
    already: bool = False           # this very file was imported before


def read_table(name: str, data: bytes) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, {header: cell}) per data row of a CSV (UTF-8, with or without BOM, or
    GB18030 as Excel in China saves it) or XLSX file; a file that is neither is refused."""
    if name.lower().endswith(".xlsx"):
        try:
            yield from _xlsx_rows(data)
        except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
            raise ImportRefused([Problem(1, "", f"not a readable XLSX workbook ({exc})")]
                                ) from None
        return
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("gb18030")
        except UnicodeDecodeError:
            raise ImportRefused([Problem(1, "", "not text in UTF-8 or GB18030: is it a CSV "
                                                "file?")]) from None
    if "\x00" in text:
        raise ImportRefused([Problem(text[:text.index("\x00")].count("\n") + 1, "",
                                     "contains a NUL character: is it a CSV file?")])
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return
        for row in reader:
            if any(cell.strip() for cell in row):
                yield reader.line_num, dict(zip((h.strip() for h in header), row,
                                                strict=False))
    except csv.Error as exc:
        raise ImportRefused([Problem(reader.line_num, "", f"not CSV as written ({exc})")]
                            ) from None


def _xlsx_rows(data: bytes) -> Iterator[tuple[int, dict[str, str]]]:
    from openpyxl import load_workbook

    book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    sheet = book.worksheets[0]
    rows = sheet.iter_rows(values_only=True)
    header = next(rows, None)
    if header is None:
        return
    names = [str(h).strip() if h is not None else "" for h in header]
    for line, values in enumerate(rows, start=2):
        cells = ["" if v is None else _cell_text(v) for v in values]
        if any(c.strip() for c in cells):
            yield line, dict(zip(names, cells, strict=False))


def _cell_text(value: Any) -> str:
    # Excel keeps phone numbers and ids as numbers: 13812345678.0 is "13812345678".
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def find_columns(header: list[str], columns: dict[str, tuple[str, ...]] = COLUMNS
                 ) -> dict[str, str]:
    """Our field -> the file's header naming it (the first of its names the file uses)."""
    found: dict[str, str] = {}
    lowered = {h.strip().lower(): h for h in header}
    for ours, names in columns.items():
        for n in names:
            if n.lower() in lowered:
                found[ours] = lowered[n.lower()]
                break
    return found


def check(table: Iterator[tuple[int, dict[str, str]]], config: ShopConfig | None,
          progress: Callable[[int], None] | None = None) -> list[Row]:
    """Every row checked; raises ImportRefused naming every problem, or returns the rows."""
    problems: list[Problem] = []
    rows: list[Row] = []
    seen: dict[str, int] = {}
    ladder = config.levels.ladder if config and config.levels else []
    by_name = {step.name: n for n, step in enumerate(ladder, start=1)}
    manual = _manual_tags(config)
    columns: dict[str, str] | None = None
    for read, (line, cells) in enumerate(table, start=1):
        if columns is None:
            columns = find_columns(list(cells))
            if "member_id" not in columns:
                raise ImportRefused([Problem(1, "member_id", "no member id column (named "
                                             "member_id, 会员ID or 买家会员名)")])
        if read > MAX_ROWS:
            raise ImportRefused([Problem(line, "", f"more than {MAX_ROWS:,} rows: split the "
                                                   "file")])

        def cell(ours: str, cells: dict[str, str] = cells,
                 columns: dict[str, str] = columns) -> str:
            return cells.get(columns[ours], "").strip() if ours in columns else ""

        before = len(problems)
        member_id = cell("member_id")
        if not member_id:
            problems.append(Problem(line, "member_id", "is empty"))
        elif len(member_id) > ID_MAX_LENGTH or not member_id.isprintable():
            problems.append(Problem(line, "member_id", f"must be 1 to {ID_MAX_LENGTH} "
                                                      "printable characters"))
        elif member_id in seen:
            problems.append(Problem(line, "member_id", f"{member_id!r} is already on line "
                                                      f"{seen[member_id]}"))
        else:
            seen[member_id] = line
        row = Row(line, member_id)
        for text_field, limit in (("name", 100), ("address", 300), ("region", 100)):
            value = cell(text_field)
            if value and (len(value) > limit or not value.isprintable()):
                problems.append(Problem(line, text_field, f"must be at most {limit} printable "
                                                          "characters"))
            setattr(row, text_field, value or None)
        phone = cell("phone")
        if phone:
            if not _PHONE.fullmatch(phone):
                problems.append(Problem(line, "phone", f"{phone[:40]!r} is not a phone number "
                                                       "(digits, optionally +, spaces, -)"))
            else:
                row.phone = re.sub(r"[ \-]", "", phone)
        level = cell("level")
        if level:
            if level.isdigit() and int(level) <= len(ladder):
                row.level = int(level)
            elif level in by_name:
                row.level = by_name[level]
            else:
                known = ", ".join(f"{n} {s.name}" for n, s in enumerate(ladder, start=1))
                problems.append(Problem(line, "level", f"{level!r} is not a level of this shop "
                                                       f"(0, {known or 'no ladder'})"))
        tags = tuple(dict.fromkeys(t.strip() for t in _TAG_SPLIT.split(cell("tags"))
                                   if t.strip()))
        for tag in tags:
            if tag not in manual:
                problems.append(Problem(line, "tags", _tag_problem(config, tag)))
        row.tags = tuple(manual.get(t, t) for t in tags)
        if len(problems) == before:
            rows.append(row)
        if progress is not None and read % 10_000 == 0:
            progress(read)
    if columns is None:
        raise ImportRefused([Problem(1, "", "the file has no rows")])
    if problems:
        raise ImportRefused(problems)
    return rows


def _manual_tags(config: ShopConfig | None) -> dict[str, str]:
    """Tags that can be added by hand, by id and by name -> id."""
    if config is None:
        return {}
    ruled = config.tagging.rule_maintained()
    out: dict[str, str] = {}
    for tag in config.tagging.tags:
        if tag.id not in ruled:
            out[tag.id] = tag.id
            out[tag.name] = tag.id
    return out


def _tag_problem(config: ShopConfig | None, tag: str) -> str:
    if config is None:
        return f"{tag!r}: the shop has no configuration, so no tags"
    rule = config.tagging.rule_maintained().get(tag)
    if rule is not None:
        return f"{tag!r} follows rule {rule.id!r}; it cannot be set by import"
    return f"{tag!r} is not a tag of this shop"


def import_members(conn: Connection, topics: Topics, shop_id: str, file_name: str,
                   data: bytes, operator: str,
                   progress: Callable[[int], None] | None = None) -> Imported:
    """Check the whole file, then import it in the caller's transaction (see the module)."""
    entry = shop_configs(conn, [shop_id]).get(shop_id)
    config = entry[1] if entry else None
    rows = check(read_table(file_name, data), config, progress)
    digest = hashlib.sha256(data).digest()
    now = datetime.now(UTC)
    result = Imported(len(rows))
    ids = [r.member_id for r in rows]
    result.members_created = len(conn.exec_driver_sql(
        "INSERT INTO members (shop_id, member_id) SELECT %s, unnest(%s::text[]) "
        "ON CONFLICT DO NOTHING RETURNING member_id", (shop_id, ids)).all())
    with_profile = [r for r in rows if r.name or r.phone or r.address]
    if with_profile:
        result.erased_skipped = int(conn.exec_driver_sql(
            "SELECT count(*) FROM member_profiles WHERE shop_id = %s AND member_id = ANY(%s) "
            "AND erased_at IS NOT NULL", (shop_id, [r.member_id for r in with_profile]))
            .scalar_one())
        result.profiles_changed = len(conn.exec_driver_sql(
            "INSERT INTO member_profiles AS p (shop_id, member_id, name, phone, address, source) "
            "SELECT %s, m, n, ph, a, %s FROM unnest(%s::text[], %s::text[], %s::text[], "
            "%s::text[]) AS u(m, n, ph, a) "
            "ON CONFLICT (shop_id, member_id) DO UPDATE SET "
            "  name = coalesce(excluded.name, p.name), phone = coalesce(excluded.phone, p.phone),"
            "  address = coalesce(excluded.address, p.address), source = excluded.source, "
            "  updated_at = now() "
            "WHERE p.erased_at IS NULL AND (p.name, p.phone, p.address) IS DISTINCT FROM "
            "  (coalesce(excluded.name, p.name), coalesce(excluded.phone, p.phone), "
            "   coalesce(excluded.address, p.address)) RETURNING member_id",
            (shop_id, f"import:{file_name}", [r.member_id for r in with_profile],
             [r.name for r in with_profile], [r.phone for r in with_profile],
             [r.address for r in with_profile])).all())
    regions = [r for r in rows if r.region]
    if regions:
        result.regions_set = len(conn.exec_driver_sql(
            "UPDATE members m SET region = u.r, updated_at = now() "
            "FROM unnest(%s::text[], %s::text[]) AS u(id, r) "
            "WHERE m.shop_id = %s AND m.member_id = u.id AND m.region IS NULL RETURNING 1",
            ([r.member_id for r in regions], [r.region for r in regions], shop_id)).all())
    reason = f"import {file_name}"
    by_level: dict[int, list[str]] = defaultdict(list)
    for r in rows:
        if r.level is not None:
            by_level[r.level].append(r.member_id)
    for level, members in sorted(by_level.items()):
        result.levels_changed += tiering_ops.set_level(
            conn, topics.member_events, shop_id, MemberFilter(member_ids=tuple(members)), level,
            operator, reason, now).changed
    by_tag: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        for tag in r.tags:
            by_tag[tag].append(r.member_id)
    for tag, members in sorted(by_tag.items()):
        added = tagging_ops.add_to(conn, topics.tag_events, shop_id,
                                   MemberFilter(member_ids=tuple(members)), tag, operator,
                                   reason, now).changed
        result.tags_added += added
    if len(rows) >= 10_000:
        # Fresh statistics for the tables a large import filled: until autovacuum comes by,
        # the planner would take them for nearly empty and filter members one by one.
        conn.exec_driver_sql("ANALYZE members, member_profiles, member_tags")
    result.already = conn.exec_driver_sql(
        "INSERT INTO imports (shop_id, kind, digest, file_name, rows, operator) "
        "VALUES (%s, 'members', %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING id",
        (shop_id, digest, file_name, len(rows), operator)).first() is None
    audit(conn, shop_id, None, "members.import", operator, {
        "file": file_name, "sha256": digest.hex(), "rows": len(rows),
        "created": result.members_created, "profiles_changed": result.profiles_changed,
        "levels_changed": result.levels_changed, "tags_added": result.tags_added})
    return result
