"""The event contract: every event the storefront sends and every event memberflow publishes.

JSON is the wire format. Inbound events are validated here, by one codec used by the HTTP
ingest, the replay command and every worker, so a bad event is refused with the same reason
wherever it enters, and nothing malformed reaches a worker or PostgreSQL. The contract is strict:

- **Money** (`amount`, `unit_price`) is a JSON number in plain decimal notation (`129.9`,
  `129.90`, `0`; no exponent) or a JSON string matching `[0-9]+(\\.[0-9]{1,2})?` exactly (ASCII
  digits, no sign, exponent, separator or spaces); Python callers may also pass an `int` or a
  `Decimal` with at most two decimals. A binary float is never money. Amounts are `Decimal`,
  0 to 999999999999.99 (refunds above 0), and are written as strings with exactly two decimals.
- **Ids** are 1 to 128 printable characters (`str.isprintable`: no control, format, surrogate,
  private-use or unassigned code point, no line or paragraph separator, and no space other than
  U+0020) that neither start nor end with a space.
- **`schema_version`** is a JSON integer; version 1 is supported.
- **`occurred_at`** is an ISO-8601 string with a date, a time (seconds and a fraction optional)
  and a timezone (`Z` or `+HH:MM`), stored in UTC, and no later than the clock allows
  (`TimeBounds.max_skew`) nor earlier than `TimeBounds.floor`.
- **The JSON** holds each key at most once per object, nests at most `MAX_DEPTH` levels and
  has no `NaN` or `Infinity`; an event is at most `MAX_EVENT_BYTES`.

Member events (orders, campaign messages, browsing) carry `shop_id` and `member_id`;
`clock.ticked`, the pipeline's own clock, carries neither. Equal events have equal canonical
bytes (`to_json`) and so equal `digest`s: that is how the same `event_id` arriving with a
different body is recognised as a conflict. Problems quote at most `QUOTE_LIMIT` characters of
any input, and at most `MAX_PROBLEMS` are reported, so a huge input never makes a huge reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeAlias, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
)

MAX_EVENT_BYTES = 256 * 1024
MAX_DEPTH = 32
"""Deepest nesting of JSON objects and arrays accepted (an event itself needs four levels)."""
MAX_PROBLEMS = 20
"""At most this many problems are reported for one event; the rest are counted."""
QUOTE_LIMIT = 64
"""At most this many characters of an input are quoted in a problem."""
MAX_MONEY = Decimal("999999999999.99")
SUPPORTED_VERSIONS = frozenset({1})

_CENT = Decimal("0.01")
_PLACES = "must have at most 2 decimal places"


# --- quoting inputs in problems ---------------------------------------------------------------


def _quote(value: str) -> str:
    """`value` as a Python literal of at most QUOTE_LIMIT characters, cut with …."""
    cut = value[:QUOTE_LIMIT]
    text = repr(cut)  # escapes what is not printable, lone surrogates included
    if len(cut) < len(value) or len(text) > QUOTE_LIMIT + 2:
        text = text[: QUOTE_LIMIT + 1] + "…" + text[0]
    return text


def _describe(value: Any) -> str:
    """A short account of a (possibly huge) input of the wrong kind."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, int | float | Decimal):
        if isinstance(value, int) and value.bit_length() > 128:
            return "a very large number"
        return f"the number {_quote(str(value))[1:-1]}"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return f"a {type(value).__name__}"


def _part(name: str) -> str:
    """A key as it appears in a field path: printable and at most QUOTE_LIMIT characters."""
    if len(name) <= QUOTE_LIMIT and name.isprintable():
        return name
    cut = name[:QUOTE_LIMIT]
    if not cut.isprintable():
        cut = repr(cut)[1:-1][:QUOTE_LIMIT]
    return cut + "…" if len(name) > QUOTE_LIMIT or len(cut) == QUOTE_LIMIT else cut


# --- money ------------------------------------------------------------------------------------


class _ExponentNumber(Decimal):
    """A JSON number written with an exponent (`1e2`): kept apart so that money can refuse it."""

    __slots__ = ()


_MONEY_TEXT = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?")  # sign and >2 places get their own text
_MONEY_FORM = ('a plain decimal such as "129.90" (ASCII digits and at most 2 decimals; '
               "no sign, exponent, separator or spaces)")


def _money(value: Any) -> Decimal:
    kind = type(value)
    if kind is str:
        match = _MONEY_TEXT.fullmatch(value)
        if match is None:
            raise ValueError(f"must be {_MONEY_FORM}, not {_quote(value)}")
        places = match.group(3)
        if places is not None and len(places) > 2:
            raise ValueError(_PLACES)
        if match.group(1):
            raise ValueError("must be >= 0")
        amount = Decimal(value)
    elif kind is int:
        amount = Decimal(value)
    elif isinstance(value, Decimal):
        if kind is _ExponentNumber:
            raise ValueError("must be written in plain decimal notation (such as 129.90), "
                             "not with an exponent")
        if not value.is_finite():
            raise ValueError("must be a finite amount")
        if value.as_tuple().exponent < -2:  # type: ignore[operator]
            raise ValueError(_PLACES)
        amount = value
    elif isinstance(value, bool):
        raise ValueError("must be an amount, not true or false")
    elif isinstance(value, float):
        raise ValueError('binary floats are not accepted: a float is never money (send a '
                         'string such as "129.90", or from Python an int or a Decimal)')
    elif isinstance(value, int):
        amount = Decimal(int(value))
    elif isinstance(value, str):
        return _money(str(value))
    else:
        raise ValueError(f'must be an amount (a JSON number or a string such as "129.90"), '
                         f"not {_describe(value)}")
    if amount.is_signed():  # negative, or a negative zero
        raise ValueError("must be >= 0")
    if amount > MAX_MONEY:
        raise ValueError(f"must be <= {MAX_MONEY}")
    return amount.quantize(_CENT)  # canonical: exactly two decimals


def _positive_money(value: Any) -> Decimal:
    amount = _money(value)
    if not amount:
        raise ValueError("must be > 0")
    return amount


def _money_schema(minimum: str) -> dict[str, Any]:
    number: dict[str, Any] = {"type": "number", "maximum": float(MAX_MONEY)}
    text: dict[str, Any] = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]{1,2})?$"}
    if minimum == "exclusive":
        number["exclusiveMinimum"] = 0
        text["pattern"] = r"^(?=.*[1-9])[0-9]+(\.[0-9]{1,2})?$"
    else:
        number["minimum"] = 0
    return {
        "anyOf": [text, number],
        "description": "Money: a string of ASCII digits with at most 2 decimals (\"129.90\"), "
                       "or a JSON number in plain decimal notation (no exponent), at most "
                       f"{MAX_MONEY}; written back as a string with exactly 2 decimals.",
    }


Money = Annotated[Decimal, BeforeValidator(_money), WithJsonSchema(_money_schema("inclusive"))]
PositiveMoney = Annotated[
    Decimal, BeforeValidator(_positive_money), WithJsonSchema(_money_schema("exclusive"))
]


# --- ids, versions ----------------------------------------------------------------------------

ID_MAX_LENGTH = 128


def _id(value: Any) -> str:
    if type(value) is str:
        text: str = value
    elif isinstance(value, str):
        text = str(value)
    else:
        raise ValueError(f"must be text (a JSON string), not {_describe(value)}")
    if (0 < len(text) <= ID_MAX_LENGTH and text.isprintable()
            and text[0] != " " and text[-1] != " "):
        return text
    if not text:
        raise ValueError("must not be empty")
    if len(text) > ID_MAX_LENGTH:
        raise ValueError(f"must be at most {ID_MAX_LENGTH} characters (has {len(text)})")
    for position, char in enumerate(text):
        if not char.isprintable():
            raise ValueError(f"must be printable text: character U+{ord(char):04X} at "
                             f"position {position} is not allowed")
    raise ValueError("must not start or end with a space")


Id = Annotated[str, BeforeValidator(_id), WithJsonSchema({
    "type": "string", "minLength": 1, "maxLength": ID_MAX_LENGTH, "pattern": r"^\S(.*\S)?$",
    "description": "1 to 128 printable characters (no control, format, surrogate, private-use "
                   "or unassigned code point, no line separator, no space but U+0020), not "
                   "starting or ending with a space.",
})]


def _version_problem(value: Any) -> str:
    if type(value) is int:
        shown = str(value) if value.bit_length() <= 128 else "(a very large number)"
        return f"unsupported version {shown} (supported: 1)"
    return f"must be a JSON integer (supported: 1), not {_describe(value)}"


# Checked in pydantic's core, no Python call: a strict integer (never true, 1.0 or "1") within
# the supported versions (a range: 1 to 1 today); `_explain` words the problem.
SchemaVersion = Annotated[int, Field(strict=True, ge=min(SUPPORTED_VERSIONS),
                                     le=max(SUPPORTED_VERSIONS)),
                          WithJsonSchema({"type": "integer", "enum": sorted(SUPPORTED_VERSIONS)})]


# --- event time -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeBounds:
    """The sanity window for `occurred_at`, judged against the clock of whoever validates.

    An event may be at most `max_skew` ahead of that clock (storefront clocks drift a little;
    an event from the future would move shop clocks, dormancy and attribution windows forward
    for good) and no earlier than `floor` (a zero or misread timestamp, not history).
    """

    floor: datetime = field(default_factory=lambda: datetime(2000, 1, 1, tzinfo=UTC))
    max_skew: timedelta = timedelta(minutes=5)

    def __post_init__(self) -> None:
        if self.floor.tzinfo is None or self.floor.utcoffset() is None:
            raise TypeError("TimeBounds.floor must be timezone-aware")
        if self.max_skew < timedelta(0):
            raise ValueError("TimeBounds.max_skew must not be negative")
        if self.floor.tzinfo is not UTC:  # compared per event: UTC against UTC is the fast path
            object.__setattr__(self, "floor", self.floor.astimezone(UTC))


DEFAULT_BOUNDS = TimeBounds()
"""Not before 2000-01-01T00:00:00Z, at most 5 minutes ahead of the clock."""
ARCHIVED_BOUNDS = TimeBounds(floor=datetime.min.replace(tzinfo=UTC), max_skew=timedelta.max)
"""For re-reading the archive: its events were judged against the clock when they were accepted,
and that verdict stands (a replay must not refuse history that live processing took in)."""


class _Window:
    """Bounds with an injected clock, passed to the validators as pydantic context (without an
    injected clock the context is the `TimeBounds` itself and the system clock is read)."""

    __slots__ = ("bounds", "now")

    def __init__(self, bounds: TimeBounds, now: datetime) -> None:
        if now.tzinfo is None or now.utcoffset() is None:
            raise TypeError("now must be timezone-aware")
        self.bounds = bounds
        self.now = now if now.tzinfo is UTC else now.astimezone(UTC)


_TIME_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}"
                        r"(?::[0-9]{2}(?:\.[0-9]{1,9})?)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})")
_time_text = _TIME_TEXT.fullmatch
_from_iso = datetime.fromisoformat
_TIME_FORM = ("an ISO-8601 date and time with a timezone, "
              "e.g. 2026-01-31T12:00:00Z or 2026-01-31T20:00:00.250+08:00")


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _span(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size:
            n = round(seconds / size)
            return f"{n} {unit}{'' if n == 1 else 's'}"
    return "less than a second"


def _event_time(value: Any, info: ValidationInfo) -> datetime:
    if type(value) is str:
        # The documented form first (fromisoformat alone takes 20260131T1200, week dates, ...).
        if _time_text(value) is None:
            raise ValueError(f"must be {_TIME_FORM}, not {_quote(value)}")
        try:
            parsed = _from_iso(value)
        except ValueError:
            try:
                parsed = _from_iso(value.upper())  # RFC 3339 allows a lower-case t and z
            except ValueError:
                raise ValueError(f"is not a valid date and time: {_quote(value)}") from None
    elif isinstance(value, datetime):  # from Python callers
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"must carry a timezone ({_TIME_FORM})")
        parsed = value
    elif isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        raise ValueError(f"must be {_TIME_FORM}, not a number (epoch times are not accepted)")
    else:
        raise ValueError(f"must be {_TIME_FORM}, not {_describe(value)}")
    if parsed.tzinfo is UTC:
        at = parsed
    else:
        try:
            at = parsed.astimezone(UTC)
        except OverflowError:
            raise ValueError(f"is out of range: {_quote(str(value))} has no time in UTC"
                             ) from None
    context = info.context
    if type(context) is _Window:
        bounds, now = context.bounds, context.now
    else:
        bounds = context if type(context) is TimeBounds else DEFAULT_BOUNDS
        now = datetime.now(UTC)
    ahead = at - now  # never overflows, unlike now + max_skew
    if ahead > bounds.max_skew:
        raise ValueError(f"is {_span(ahead)} ahead of the clock "
                         f"(at most {bounds.max_skew} ahead is accepted)")
    if at < bounds.floor:
        raise ValueError(f"is before the earliest accepted time {_iso(bounds.floor)}")
    return at


EventTime = Annotated[datetime, BeforeValidator(_event_time), WithJsonSchema({
    "type": "string", "format": "date-time",
    "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}"
               r"(:[0-9]{2}(\.[0-9]{1,9})?)?([Zz]|[+-][0-9]{2}:[0-9]{2})$",
    "description": "ISO-8601 date and time with a timezone (Z or +HH:MM); stored in UTC. "
                   "At most a few minutes ahead of the receiver's clock, not before 2000.",
})]
Channel = Literal["sms", "email", "in_app", "im"]


# --- the models -------------------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


class OrderItem(_Frozen):
    sku: Id
    qty: Annotated[int, Field(gt=0, le=1_000_000, strict=True)]
    unit_price: Money


class OrderPlacedPayload(_Frozen):
    order_id: Id
    items: Annotated[list[OrderItem], Field(min_length=1, max_length=1000)]
    amount: Money
    region: Id | None = None


class OrderAmountPayload(_Frozen):
    order_id: Id
    amount: Money


class OrderRefundedPayload(_Frozen):
    order_id: Id
    amount: PositiveMoney


class MessageSentPayload(_Frozen):
    campaign_id: Id
    message_id: Id
    channel: Channel


class MessageClickedPayload(_Frozen):
    campaign_id: Id
    message_id: Id


class SkuPayload(_Frozen):
    sku: Id


class TickPayload(_Frozen):
    source: Id  # what recorded the tick, e.g. "ingest" or "run --as-of"


class _Envelope(_Frozen):
    """What every event carries."""

    event_id: Id
    schema_version: SchemaVersion

    @property
    def key(self) -> bytes | None:
        """Partition key, or None when the event belongs to no member."""
        return None

    def to_json(self) -> bytes:
        """The canonical wire form (money as strings with two decimals, time in UTC, fields in
        the model's order): two events that mean the same have the same bytes."""
        return self.model_dump_json(exclude_none=True).encode()


class _MemberEnvelope(_Envelope):
    """An event about one member of one shop."""

    shop_id: Id
    member_id: Id
    occurred_at: EventTime

    @property
    def key(self) -> bytes:
        """Partition key: one member's events share a partition and so keep their order."""
        return f"{self.shop_id}/{self.member_id}".encode()


class OrderPlaced(_MemberEnvelope):
    type: Literal["order.placed"]
    payload: OrderPlacedPayload


class OrderPaid(_MemberEnvelope):
    type: Literal["order.paid"]
    payload: OrderAmountPayload


class OrderCompleted(_MemberEnvelope):
    """The trade succeeded; only completed trades count toward spend, levels and ABC."""

    type: Literal["order.completed"]
    payload: OrderAmountPayload


class OrderRefunded(_MemberEnvelope):
    type: Literal["order.refunded"]
    payload: OrderRefundedPayload


class MessageSent(_MemberEnvelope):
    type: Literal["campaign.message_sent"]
    payload: MessageSentPayload


class MessageClicked(_MemberEnvelope):
    type: Literal["campaign.message_clicked"]
    payload: MessageClickedPayload


class MemberViewed(_MemberEnvelope):
    type: Literal["member.viewed"]
    payload: SkuPayload


class MemberCarted(_MemberEnvelope):
    type: Literal["member.carted"]
    payload: SkuPayload


class ClockTicked(_Envelope):
    """The pipeline's wall-clock time, recorded into the stream by memberflow itself.

    Time-based rules (dormancy, windows) then advance even when no shop sells, and a replay
    sees exactly the ticks live processing saw. It belongs to no shop and no member: it has no
    `shop_id`, no `member_id` and no partition key.
    """

    occurred_at: EventTime
    type: Literal["clock.ticked"]
    payload: TickPayload

    @property
    def key(self) -> None:
        return None


Event: TypeAlias = Annotated[
    Union[  # noqa: UP007 -- a discriminated union needs the explicit form for pydantic
        OrderPlaced,
        OrderPaid,
        OrderCompleted,
        OrderRefunded,
        MessageSent,
        MessageClicked,
        MemberViewed,
        MemberCarted,
        ClockTicked,
    ],
    Field(discriminator="type"),
]
MemberEventModel: TypeAlias = (
    OrderPlaced
    | OrderPaid
    | OrderCompleted
    | OrderRefunded
    | MessageSent
    | MessageClicked
    | MemberViewed
    | MemberCarted
)
"""The eight member-addressed event types: each has `shop_id`, `member_id` and a `key`."""
EventModel: TypeAlias = MemberEventModel | ClockTicked
ORDER_TYPES = frozenset({"order.placed", "order.paid", "order.completed", "order.refunded"})
CAMPAIGN_TYPES = frozenset({"campaign.message_sent", "campaign.message_clicked"})
BROWSING_TYPES = frozenset({"member.viewed", "member.carted"})
CLOCK_TYPES = frozenset({"clock.ticked"})
EVENT_TYPES = ORDER_TYPES | CAMPAIGN_TYPES | BROWSING_TYPES | CLOCK_TYPES
SCHEMA_VERSIONS: Mapping[str, frozenset[int]] = {t: SUPPORTED_VERSIONS for t in EVENT_TYPES}

_ADAPTER: TypeAdapter[EventModel] = TypeAdapter(Event)


# --- problems ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One reason an event was refused: the field's path and what is wrong with it."""

    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.field}: {self.problem}" if self.field else self.problem


class EventRejected(ValueError):
    """An inbound event that does not satisfy the contract."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))

    @property
    def reason(self) -> str:
        return str(self)


class JsonRejected(ValueError):
    """JSON text that parses but that the contract refuses (a repeated key, nesting too deep).

    A `ValueError`, so callers of `loads_json` that catch invalid JSON keep working.
    """

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(str(problem))


_TOO_DEEP = Problem("", f"nested deeper than {MAX_DEPTH} levels")


# --- decoding ---------------------------------------------------------------------------------


def decode(raw: bytes | str, *, bounds: TimeBounds | None = None,
           now: datetime | None = None) -> EventModel:
    """Parse and validate one event from its JSON wire form, or raise `EventRejected`.

    `occurred_at` is judged against `now` (default: the system clock) within `bounds`
    (default: `DEFAULT_BOUNDS`).
    """
    if len(raw) > MAX_EVENT_BYTES:
        raise EventRejected([Problem("", f"event is larger than {MAX_EVENT_BYTES} bytes")])
    # Parse with exact numbers first: pydantic's own JSON reader passes numbers through a
    # binary float, which would quietly round an amount such as 1.0000000000000001 to 1.
    try:
        obj = loads_json(raw)
    except JsonRejected as exc:
        raise EventRejected([exc.problem]) from None
    except UnicodeDecodeError:
        raise EventRejected([Problem("", "not valid JSON (not UTF-8 text)")]) from None
    except ValueError as exc:
        text = str(exc)
        if len(text) > 2 * QUOTE_LIMIT:
            text = text[: 2 * QUOTE_LIMIT] + "…"
        raise EventRejected([Problem("", f"not valid JSON ({text})")]) from None
    return _validate(obj, bounds, now)


def validate(obj: Any, *, bounds: TimeBounds | None = None,
             now: datetime | None = None) -> EventModel:
    """Validate an already-parsed JSON object (e.g. one element of an HTTP batch).

    Takes the same `bounds` and `now` as `decode`.
    """
    if _too_deep(obj):
        raise EventRejected([_TOO_DEEP])
    return _validate(obj, bounds, now)


def _validate(obj: Any, bounds: TimeBounds | None, now: datetime | None) -> EventModel:
    if bounds is None:
        bounds = DEFAULT_BOUNDS
    try:
        return _ADAPTER.validate_python(obj, context=bounds if now is None else
                                        _Window(bounds, now))
    except ValidationError as exc:
        raise EventRejected(_explain(exc, obj)) from None
    except RecursionError:
        raise EventRejected([_TOO_DEEP]) from None


def digest(event: EventModel) -> bytes:
    """The event's content digest: SHA-256 of its canonical wire form `event.to_json()`.

    Two bodies that mean the same event have the same digest although they differ in key
    order, whitespace, money spelling (`12.5` or `"12.50"`) or the timezone in which the same
    instant is written; any difference in meaning changes it. It is how a repeated `event_id`
    is judged: the same digest is a harmless retry, a different one is a conflict (the same
    id with a different body).
    """
    return hashlib.sha256(event.to_json()).digest()


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = _part(part)
            out += f".{name}" if out else name
    return out


_VERSION_ERRORS = frozenset({"int_type", "greater_than_equal", "less_than_equal"})


def _explain(exc: ValidationError, obj: Any) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors(include_url=False, include_input=False):
        kind = err["type"]
        loc = tuple(err["loc"])
        if kind in ("model_attributes_type", "dict_type") or (kind == "model_type" and not loc):
            problems.append(Problem("", "event must be a JSON object"))
            continue
        if kind == "union_tag_not_found":
            problems.append(Problem("type", "required"))
            continue
        if kind == "union_tag_invalid":
            tag = obj.get("type") if isinstance(obj, Mapping) else err.get("ctx", {}).get("tag")
            problems.append(Problem("type", f"unknown event type {_describe(tag)} "
                                            f"(known: {', '.join(sorted(EVENT_TYPES))})"))
            continue
        # The first location element is the union member's tag; the field path follows it.
        tag_of = loc[0] if loc and loc[0] in EVENT_TYPES else None
        where = _path(loc[1:]) if tag_of is not None else _path(loc)
        if (tag_of in CLOCK_TYPES and kind == "extra_forbidden"
                and where in ("shop_id", "member_id")):
            problems.append(Problem(where, "not allowed: clock.ticked belongs to no shop or "
                                           "member"))
            continue
        if where == "schema_version" and kind in _VERSION_ERRORS:
            value = obj.get("schema_version") if isinstance(obj, Mapping) else None
            problems.append(Problem(where, _version_problem(value)))
            continue
        problems.append(Problem(where, _message(kind, err)))
    if len(problems) > MAX_PROBLEMS:
        more = len(problems) - MAX_PROBLEMS
        problems = [*problems[:MAX_PROBLEMS], Problem("", f"and {more} more problems")]
    return problems or [Problem("", "invalid event")]


def _message(kind: str, err: Any) -> str:
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">",
              "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()))
        return f"must be {op} {bound}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    msg: str = err["msg"][:300]  # pydantic's own texts do not quote the input; cut anyway
    return msg[0].lower() + msg[1:] if msg else kind


def json_schema() -> dict[str, Any]:
    """The JSON Schema of inbound events, for storefront teams that do not read Python."""
    schema = _ADAPTER.json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "memberflow inbound event"
    return schema


# --- JSON -------------------------------------------------------------------------------------


def _json_number(text: str) -> Decimal:
    """A JSON number with a fraction or an exponent, exactly; `text` is its literal."""
    if "e" in text or "E" in text:
        return _ExponentNumber(text)
    return Decimal(text)


def _refuse_constant(name: str) -> Any:
    raise JsonRejected(Problem("", f"{name} is not a JSON number"))


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JsonRejected(Problem(_part(key), "duplicate key; each key may appear once"))
            seen.add(key)
    return obj


_CONTAINERS = (dict, list, tuple)
_SCALARS = frozenset({str, int, bool, type(None), Decimal, _ExponentNumber})


def _nested_within(value: Any, depth: int) -> bool:
    # Recursion is bounded by MAX_DEPTH, whatever the input (a cycle included).
    for child in (value.values() if isinstance(value, dict) else value):
        if (type(child) not in _SCALARS and isinstance(child, _CONTAINERS)
                and (depth >= MAX_DEPTH or not _nested_within(child, depth + 1))):
            return False
    return True


def _too_deep(obj: Any) -> bool:
    """Whether `obj` nests objects and arrays deeper than MAX_DEPTH levels."""
    return isinstance(obj, _CONTAINERS) and not _nested_within(obj, 1)


_DECODER = json.JSONDecoder(parse_float=_json_number, parse_constant=_refuse_constant,
                            object_pairs_hook=_json_object)  # built once: json.loads would
# build a decoder on every call given these hooks, which costs more than parsing an event


def loads_json(raw: bytes | str) -> Any:
    """Parse JSON keeping numbers exact (Decimal, never float), or raise `ValueError`.

    Refuses, with `JsonRejected` (a `ValueError` naming the problem), a key repeated within an
    object (the last would otherwise silently win), nesting deeper than `MAX_DEPTH`, and
    `NaN`/`Infinity`, which are not JSON. Reads text and bytes as `json.loads` does.
    """
    if isinstance(raw, str):
        if raw.startswith("\ufeff"):
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", raw, 0)
        text = raw
    elif isinstance(raw, bytes | bytearray):
        # An object starting with a non-zero byte pair is UTF-8 (what detect_encoding would find).
        utf8 = raw[:1] == b"{" and raw[1:2] != b"\x00"
        text = raw.decode("utf-8" if utf8 else json.detect_encoding(raw), "surrogatepass")
    else:
        raise TypeError(f"the JSON object must be str, bytes or bytearray, not "
                        f"{type(raw).__name__}")
    try:
        obj = _DECODER.decode(text)
    except RecursionError:
        raise JsonRejected(_TOO_DEEP) from None
    # Only text with more brackets than the limit can nest too deep: count them (fast, in C)
    # before walking the parsed value.
    if text.count("{") + text.count("[") > MAX_DEPTH and _too_deep(obj):
        raise JsonRejected(_TOO_DEEP)
    return obj
