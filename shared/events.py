"""The event contract: every event the storefront sends, one codec for every way in.

JSON is the wire format. Inbound events are validated here, by one codec used by the HTTP
ingest, the Python producer, the replay command and every worker, so a bad event is refused with
the same reason wherever it enters, and nothing malformed reaches a worker or PostgreSQL. The
contract is strict:

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

Two paths read an event, with one outcome:

- **Any JSON** (`validate`, and `decode` of what is not canonical): parsed exactly (`loads_json`:
  numbers as `Decimal`, repeated keys and deep nesting refused), then checked field by field
  against the shapes below; every problem is collected with its path.
- **The canonical form** (`decode` of what `to_json` wrote: what ingest publishes and every
  worker reads): msgspec reads it into the typed model in one pass, writing the model again must
  give back exactly the bytes read (so no key is repeated, missing, extra or out of order, and
  every number and time is in its one canonical spelling), and the values are checked as the
  first path checks them. Anything else falls through to the first path, which has the last
  word: this path only ever accepts what the first would accept, as the same model
  (`tests/unit/test_events.py` holds the two to that).

The models are msgspec structs: immutable, cheap to build and read, and encoded by msgspec in
their field order, which is the canonical form.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeAlias

import msgspec
from msgspec import Meta

MAX_EVENT_BYTES = 256 * 1024
MAX_DEPTH = 32
"""Deepest nesting of JSON objects and arrays accepted (an event itself needs four levels)."""
MAX_PROBLEMS = 20
"""At most this many problems are reported for one event; the rest are counted."""
QUOTE_LIMIT = 64
"""At most this many characters of an input are quoted in a problem."""
MAX_MONEY = Decimal("999999999999.99")
MAX_ITEMS = 1000
MAX_QTY = 1_000_000
SUPPORTED_VERSIONS = frozenset({1})
CHANNELS = ("sms", "email", "in_app", "im")

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


_PLAIN_MONEY = re.compile(r"[0-9]{1,12}\.[0-9]{2}").fullmatch  # already as stored


def _money(value: Any) -> Decimal:
    kind = type(value)
    if kind is str and _PLAIN_MONEY(value):
        return Decimal(value)
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


def _version_problem(value: Any) -> str:
    if type(value) is int:
        shown = str(value) if value.bit_length() <= 128 else "(a very large number)"
        return f"unsupported version {shown} (supported: 1)"
    return f"must be a JSON integer (supported: 1), not {_describe(value)}"


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


def _event_time(value: Any, bounds: TimeBounds, now: datetime) -> datetime:
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
    ahead = at - now  # never overflows, unlike now + max_skew
    if ahead > bounds.max_skew:
        raise ValueError(f"is {_span(ahead)} ahead of the clock "
                         f"(at most {bounds.max_skew} ahead is accepted)")
    if at < bounds.floor:
        raise ValueError(f"is before the earliest accepted time {_iso(bounds.floor)}")
    return at


def _schema(fragment: dict[str, Any]) -> Meta:
    """A field's JSON Schema, standing in for what msgspec would derive from its Python type
    (see `_finish_schema`)."""
    return Meta(extra_json_schema={"x-schema": fragment})


_ID_SCHEMA = {
    "type": "string", "minLength": 1, "maxLength": ID_MAX_LENGTH, "pattern": r"^\S(.*\S)?$",
    "description": "1 to 128 printable characters (no control, format, surrogate, private-use "
                   "or unassigned code point, no line separator, no space but U+0020), not "
                   "starting or ending with a space.",
}
Id = Annotated[str, _schema(_ID_SCHEMA)]
Money = Annotated[Decimal, _schema(_money_schema("inclusive"))]
PositiveMoney = Annotated[Decimal, _schema(_money_schema("exclusive"))]
SchemaVersion = Annotated[int, _schema({"type": "integer", "enum": sorted(SUPPORTED_VERSIONS)})]
Quantity = Annotated[int, _schema({"type": "integer", "exclusiveMinimum": 0,
                                   "maximum": MAX_QTY})]
EventTime = Annotated[datetime, _schema({
    "type": "string", "format": "date-time",
    "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}"
               r"(:[0-9]{2}(\.[0-9]{1,9})?)?([Zz]|[+-][0-9]{2}:[0-9]{2})$",
    "description": "ISO-8601 date and time with a timezone (Z or +HH:MM); stored in UTC. "
                   "At most a few minutes ahead of the receiver's clock, not before 2000.",
})]
Channel = Literal["sms", "email", "in_app", "im"]


# --- the models -------------------------------------------------------------------------------


class _Frozen(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
              omit_defaults=True):
    """Immutable; unknown fields refused; an absent optional value (None) is left out."""


class OrderItem(_Frozen, frozen=True):
    sku: Id
    qty: Quantity
    unit_price: Money


class OrderPlacedPayload(_Frozen, frozen=True):
    order_id: Id
    items: Annotated[tuple[OrderItem, ...], Meta(min_length=1, max_length=MAX_ITEMS)]
    amount: Money
    region: Id | None = None


class OrderAmountPayload(_Frozen, frozen=True):
    order_id: Id
    amount: Money


class OrderRefundedPayload(_Frozen, frozen=True):
    order_id: Id
    amount: PositiveMoney


class MessageSentPayload(_Frozen, frozen=True):
    campaign_id: Id
    message_id: Id
    channel: Channel


class MessageClickedPayload(_Frozen, frozen=True):
    campaign_id: Id
    message_id: Id


class SkuPayload(_Frozen, frozen=True):
    sku: Id


class TickPayload(_Frozen, frozen=True):
    source: Id  # what recorded the tick, e.g. "ingest" or "run --as-of"


class _Envelope(_Frozen, frozen=True):
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
        return _ENCODE(self)


class _MemberEnvelope(_Envelope, frozen=True):
    """An event about one member of one shop."""

    shop_id: Id
    member_id: Id
    occurred_at: EventTime

    @property
    def key(self) -> bytes:
        """Partition key: one member's events share a partition and so keep their order."""
        return f"{self.shop_id}/{self.member_id}".encode()


class OrderPlaced(_MemberEnvelope, frozen=True):
    type: Literal["order.placed"]
    payload: OrderPlacedPayload


class OrderPaid(_MemberEnvelope, frozen=True):
    type: Literal["order.paid"]
    payload: OrderAmountPayload


class OrderCompleted(_MemberEnvelope, frozen=True):
    """The trade succeeded; only completed trades count toward spend, levels and ABC."""

    type: Literal["order.completed"]
    payload: OrderAmountPayload


class OrderRefunded(_MemberEnvelope, frozen=True):
    type: Literal["order.refunded"]
    payload: OrderRefundedPayload


class MessageSent(_MemberEnvelope, frozen=True):
    type: Literal["campaign.message_sent"]
    payload: MessageSentPayload


class MessageClicked(_MemberEnvelope, frozen=True):
    type: Literal["campaign.message_clicked"]
    payload: MessageClickedPayload


class MemberViewed(_MemberEnvelope, frozen=True):
    type: Literal["member.viewed"]
    payload: SkuPayload


class MemberCarted(_MemberEnvelope, frozen=True):
    type: Literal["member.carted"]
    payload: SkuPayload


class ClockTicked(_Envelope, frozen=True):
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
MODELS: Mapping[str, type[EventModel]] = {
    "order.placed": OrderPlaced,
    "order.paid": OrderPaid,
    "order.completed": OrderCompleted,
    "order.refunded": OrderRefunded,
    "campaign.message_sent": MessageSent,
    "campaign.message_clicked": MessageClicked,
    "member.viewed": MemberViewed,
    "member.carted": MemberCarted,
    "clock.ticked": ClockTicked,
}
"""Each event type and its model."""
ORDER_TYPES = frozenset({"order.placed", "order.paid", "order.completed", "order.refunded"})
CAMPAIGN_TYPES = frozenset({"campaign.message_sent", "campaign.message_clicked"})
BROWSING_TYPES = frozenset({"member.viewed", "member.carted"})
CLOCK_TYPES = frozenset({"clock.ticked"})
EVENT_TYPES = ORDER_TYPES | CAMPAIGN_TYPES | BROWSING_TYPES | CLOCK_TYPES
SCHEMA_VERSIONS: Mapping[str, frozenset[int]] = {t: SUPPORTED_VERSIONS for t in EVENT_TYPES}

_ENCODE = msgspec.json.Encoder().encode


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
    bounds, now = _window(bounds, now)
    event = canonical(raw, bounds, now)
    if event is not None:
        return event
    # Parse with exact numbers: a JSON reader that passes numbers through a binary float would
    # quietly round an amount such as 1.0000000000000001 to 1.
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


def read(raw: bytes, *, bounds: TimeBounds | None = None) -> tuple[EventModel, bytes]:
    """`decode`, with the event's `digest`: for the canonical form, that of the bytes read."""
    window = _window(bounds, None)
    event = canonical(raw, *window) if len(raw) <= MAX_EVENT_BYTES else None
    if event is not None:
        return event, hashlib.sha256(raw).digest()
    event = decode(raw, bounds=bounds)
    return event, digest(event)


def validate(obj: Any, *, bounds: TimeBounds | None = None,
             now: datetime | None = None) -> EventModel:
    """Validate an already-parsed JSON object (e.g. one element of an HTTP batch).

    Takes the same `bounds` and `now` as `decode`.
    """
    if _too_deep(obj):
        raise EventRejected([_TOO_DEEP])
    bounds, now = _window(bounds, now)
    return _validate(obj, bounds, now)


def _window(bounds: TimeBounds | None, now: datetime | None) -> tuple[TimeBounds, datetime]:
    """The bounds, and the clock they are judged against (the system clock by default)."""
    if now is None:
        return bounds or DEFAULT_BOUNDS, datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise TypeError("now must be timezone-aware")
    return bounds or DEFAULT_BOUNDS, now if now.tzinfo is UTC else now.astimezone(UTC)


def digest(event: EventModel) -> bytes:
    """The event's content digest: SHA-256 of its canonical wire form `event.to_json()`.

    Two bodies that mean the same event have the same digest although they differ in key
    order, whitespace, money spelling (`12.5` or `"12.50"`) or the timezone in which the same
    instant is written; any difference in meaning changes it. It is how a repeated `event_id`
    is judged: the same digest is a harmless retry, a different one is a conflict (the same
    id with a different body).
    """
    return hashlib.sha256(event.to_json()).digest()


# --- the canonical form, read in one pass -----------------------------------------------------

_DECODERS: dict[bytes, msgspec.json.Decoder[Any]] = {
    t.encode(): msgspec.json.Decoder(model) for t, model in MODELS.items()}
_TYPE_MARK = b'"type":"'


def canonical(raw: bytes | str, bounds: TimeBounds, now: datetime) -> EventModel | None:
    """The event, if `raw` is exactly the canonical form of a valid event; else None, and the
    caller reads it field by field, which refuses it or accepts it as this same event."""
    if type(raw) is not bytes or b'": ' in raw or b', "' in raw:
        return None  # not canonical (those bytes cannot occur within a canonical string)
    start = raw.find(_TYPE_MARK)
    if start < 0:
        return None
    start += len(_TYPE_MARK)
    # This only picks the decoder: a wrong pick fails to decode or to re-encode as `raw`.
    decoder = _DECODERS.get(raw[start:raw.find(b'"', start)])
    if decoder is None:
        return None
    try:
        event: EventModel = decoder.decode(raw)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None
    if _ENCODE(event) != raw or not _SOUND[type(event.payload)](event.payload):
        return None
    if not (_id_ok(event.event_id) and event.schema_version in SUPPORTED_VERSIONS):
        return None
    if not isinstance(event, ClockTicked) and not (_id_ok(event.shop_id)
                                                   and _id_ok(event.member_id)):
        return None
    at = event.occurred_at
    if at.tzinfo is not UTC or at - now > bounds.max_skew or at < bounds.floor:
        return None
    return event


def _id_ok(text: str) -> bool:
    return (0 < len(text) <= ID_MAX_LENGTH and text.isprintable() and text[0] != " "
            and text[-1] != " ")


def _money_ok(amount: Decimal) -> bool:
    """Canonical money: ASCII digits (at most 12), a point and two places, so finite, not
    negative (nor -0) and within the limit; `str` is how it was written."""
    return _PLAIN_MONEY(str(amount)) is not None


def _placed_ok(p: OrderPlacedPayload) -> bool:
    return (_id_ok(p.order_id) and _money_ok(p.amount)
            and (p.region is None or _id_ok(p.region))
            and all(_id_ok(i.sku) and 0 < i.qty <= MAX_QTY and _money_ok(i.unit_price)
                    for i in p.items))


_SOUND: dict[type, Callable[[Any], bool]] = {
    OrderPlacedPayload: _placed_ok,
    OrderAmountPayload: lambda p: _id_ok(p.order_id) and _money_ok(p.amount),
    OrderRefundedPayload: lambda p: _id_ok(p.order_id) and _money_ok(p.amount) and p.amount > 0,
    MessageSentPayload: lambda p: (_id_ok(p.campaign_id) and _id_ok(p.message_id)
                                   and p.channel in CHANNELS),
    MessageClickedPayload: lambda p: _id_ok(p.campaign_id) and _id_ok(p.message_id),
    SkuPayload: lambda p: _id_ok(p.sku),
    TickPayload: lambda p: _id_ok(p.source),
}


# --- any JSON, field by field -----------------------------------------------------------------


class _Bad:
    """The value of a field that had a problem (recorded): its object is not built."""


_BAD = _Bad()
Check = Callable[[Any, TimeBounds, datetime], Any]
"""A field's check: the value as stored, or ValueError saying what is wrong."""


@dataclass(frozen=True)
class _Items:
    """A list of objects of one shape, of a bounded length."""

    shape: _Shape
    min_length: int
    max_length: int


_CHECK, _OBJECT, _LIST = 0, 1, 2


@dataclass(frozen=True)
class _Shape:
    """How one JSON object becomes one model: each field and its check, in the model's order."""

    model: type[msgspec.Struct]
    fields: Mapping[str, Check | _Shape | _Items]
    optional: frozenset[str] = frozenset()
    # Fields this shape refuses with a reason of its own instead of "unknown field".
    refused: Mapping[str, str] = field(default_factory=dict)

    @functools.cached_property
    def plan(self) -> tuple[tuple[str, int, Any, bool], ...]:
        """(name, kind of check, check, optional) per field, worked out once."""
        return tuple((name, _OBJECT if isinstance(check, _Shape) else
                      _LIST if isinstance(check, _Items) else _CHECK, check,
                      name in self.optional) for name, check in self.fields.items())


def _scalar(check: Callable[[Any], Any]) -> Check:
    return lambda value, bounds, now: check(value)


def _version(value: Any, bounds: TimeBounds, now: datetime) -> int:
    if type(value) is int and value in SUPPORTED_VERSIONS:
        return value
    raise ValueError(_version_problem(value))


def _quantity(value: Any, bounds: TimeBounds, now: datetime) -> int:
    if type(value) is not int:
        raise ValueError(f"must be a whole number (a JSON integer), not {_describe(value)}")
    if value <= 0:
        raise ValueError("must be > 0")
    if value > MAX_QTY:
        raise ValueError(f"must be <= {MAX_QTY}")
    return value


def _channel(value: Any, bounds: TimeBounds, now: datetime) -> str:
    if type(value) is str and value in CHANNELS:
        return value
    raise ValueError(f"must be one of {', '.join(map(repr, CHANNELS))}, not {_describe(value)}")


def _tag(value: Any, bounds: TimeBounds, now: datetime) -> str:
    return str(value)  # the shape was chosen by it: it is one of the known types


_ID = _scalar(_id)
_MONEY = _scalar(_money)
_POSITIVE_MONEY = _scalar(_positive_money)
_ITEM = _Shape(OrderItem, {"sku": _ID, "qty": _quantity, "unit_price": _MONEY})
_PAYLOADS: dict[str, _Shape] = {
    "order.placed": _Shape(OrderPlacedPayload, {
        "order_id": _ID, "items": _Items(_ITEM, 1, MAX_ITEMS), "amount": _MONEY,
        "region": _ID}, optional=frozenset({"region"})),
    "order.paid": _Shape(OrderAmountPayload, {"order_id": _ID, "amount": _MONEY}),
    "order.completed": _Shape(OrderAmountPayload, {"order_id": _ID, "amount": _MONEY}),
    "order.refunded": _Shape(OrderRefundedPayload, {"order_id": _ID, "amount": _POSITIVE_MONEY}),
    "campaign.message_sent": _Shape(MessageSentPayload, {
        "campaign_id": _ID, "message_id": _ID, "channel": _channel}),
    "campaign.message_clicked": _Shape(MessageClickedPayload, {
        "campaign_id": _ID, "message_id": _ID}),
    "member.viewed": _Shape(SkuPayload, {"sku": _ID}),
    "member.carted": _Shape(SkuPayload, {"sku": _ID}),
    "clock.ticked": _Shape(TickPayload, {"source": _ID}),
}
_NO_MEMBER = "not allowed: clock.ticked belongs to no shop or member"
_SHAPES: dict[str, _Shape] = {
    t: _Shape(model, {
        "event_id": _ID, "schema_version": _version,
        **({} if t in CLOCK_TYPES else {"shop_id": _ID, "member_id": _ID}),
        "occurred_at": _event_time, "type": _tag, "payload": _PAYLOADS[t]},
        refused={"shop_id": _NO_MEMBER, "member_id": _NO_MEMBER} if t in CLOCK_TYPES else {})
    for t, model in MODELS.items()
}


def _validate(obj: Any, bounds: TimeBounds, now: datetime) -> EventModel:
    if not isinstance(obj, Mapping):
        raise EventRejected([Problem("", "event must be a JSON object")])
    if "type" not in obj:
        raise EventRejected([Problem("type", "required")])
    kind = obj["type"]
    shape = _SHAPES.get(kind) if type(kind) is str else None
    if shape is None:
        raise EventRejected([Problem("type", f"unknown event type {_describe(kind)} "
                                             f"(known: {', '.join(sorted(EVENT_TYPES))})")])
    problems: list[Problem] = []
    event = _build(shape, obj, "", bounds, now, problems)
    if problems:
        if len(problems) > MAX_PROBLEMS:
            more = len(problems) - MAX_PROBLEMS
            problems = [*problems[:MAX_PROBLEMS], Problem("", f"and {more} more problems")]
        raise EventRejected(problems)
    return event  # type: ignore[no-any-return]


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _build(shape: _Shape, value: Any, path: str, bounds: TimeBounds, now: datetime,
           problems: list[Problem]) -> Any:
    """The model `shape` makes of `value`, or _BAD with every problem added to `problems`."""
    if not isinstance(value, Mapping):
        problems.append(Problem(path, f"must be an object, not {_describe(value)}"))
        return _BAD
    out: dict[str, Any] = {}
    bad = False
    known = 0
    for name, kind, check, optional in shape.plan:
        item = value.get(name, _BAD)
        if item is _BAD or (item is None and optional):
            known += item is None
            if not optional:
                problems.append(Problem(_join(path, name), "required"))
                bad = True
            continue
        known += 1
        if kind == _CHECK:
            try:
                out[name] = check(item, bounds, now)
                continue
            except ValueError as exc:
                problems.append(Problem(_join(path, name), str(exc)))
                bad = True
                continue
        built = (_build(check, item, _join(path, name), bounds, now, problems) if kind == _OBJECT
                 else _build_items(check, item, _join(path, name), bounds, now, problems))
        if built is _BAD:
            bad = True
        out[name] = built
    if known != len(value):
        for key in value:
            if key not in shape.fields:
                name = _part(key) if type(key) is str else _describe(key)
                problems.append(Problem(_join(path, name), shape.refused.get(key,
                                                                              "unknown field")))
                bad = True
    return _BAD if bad else shape.model(**out)


def _build_items(items: _Items, value: Any, path: str, bounds: TimeBounds, now: datetime,
                 problems: list[Problem]) -> Any:
    if not isinstance(value, list | tuple):
        problems.append(Problem(path, f"must be a list (a JSON array), not {_describe(value)}"))
        return _BAD
    if len(value) < items.min_length:
        problems.append(Problem(path, f"must hold at least {items.min_length} item"
                                      f"{'' if items.min_length == 1 else 's'}"))
        return _BAD
    if len(value) > items.max_length:
        problems.append(Problem(path, f"must hold at most {items.max_length} items "
                                      f"(has {len(value)})"))
        return _BAD
    built = [_build(items.shape, v, f"{path}[{i}]", bounds, now, problems)
             for i, v in enumerate(value)]
    return _BAD if any(b is _BAD for b in built) else tuple(built)


# --- JSON Schema ------------------------------------------------------------------------------


def _finish_schema(node: Any) -> Any:
    """Replace every schema carrying an `x-schema` by that fragment (msgspec merges a field's
    extra schema into the one it derives from the Python type; ours stands alone)."""
    if isinstance(node, dict):
        if "x-schema" in node:
            return node["x-schema"]
        return {k: _finish_schema(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_finish_schema(v) for v in node]
    return node


def union_schema(models: Mapping[str, type[msgspec.Struct]], title: str) -> dict[str, Any]:
    """The JSON Schema of a set of models told apart by their `type` field."""
    refs, components = msgspec.json.schema_components(
        list(models.values()), ref_template="#/$defs/{name}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "oneOf": list(refs),
        "discriminator": {"propertyName": "type", "mapping": {
            t: ref["$ref"] for t, ref in zip(models, refs, strict=True)}},
        "$defs": _finish_schema(components),
    }


def json_schema() -> dict[str, Any]:
    """The JSON Schema of inbound events, for storefront teams that do not read Python."""
    return union_schema(MODELS, "memberflow inbound event")


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


_FAST_JSON = msgspec.json.Decoder(float_hook=_json_number)
# Every string token of a JSON text. Matched from the start, tokens are found whole and in turn
# (outside strings a JSON text has no quotes).
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_TEXT_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NESTING = frozenset({dict, list})


def _strings(value: Any) -> int:
    """String tokens (keys and string values) of a parsed JSON value nested at most MAX_DEPTH
    levels."""
    if type(value) is dict:
        return len(value) + sum(_strings(v) if type(v) in _NESTING else type(v) is str
                                for v in value.values())
    return sum(_strings(v) if type(v) in _NESTING else type(v) is str for v in value)


def _loads_fast(raw: bytes | str) -> Any:
    """`raw` parsed by msgspec, or None where the long way must say what is wrong (msgspec
    refused it, or it repeats a key: msgspec keeps the last, silently)."""
    try:
        obj = _FAST_JSON.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    if type(obj) not in _NESTING:
        return obj
    if isinstance(raw, bytes):
        brackets = raw.count(b"{") + raw.count(b"[")
        # Without escapes every quote delimits a string token; with them, find the tokens.
        written = (raw.count(b'"') // 2 if b"\\" not in raw else len(_TOKENS.findall(raw)))
    else:
        brackets = raw.count("{") + raw.count("[")
        written = (raw.count('"') // 2 if "\\" not in raw else len(_TEXT_TOKENS.findall(raw)))
    if brackets > MAX_DEPTH and _too_deep(obj):
        raise JsonRejected(_TOO_DEEP)
    # A repeated key loses a key and its value from the parsed value, so fewer strings come
    # out than were written.
    return obj if written == _strings(obj) else None


def loads_json(raw: bytes | str) -> Any:
    """Parse JSON keeping numbers exact (Decimal, never float), or raise `ValueError`.

    Refuses, with `JsonRejected` (a `ValueError` naming the problem), a key repeated within an
    object (the last would otherwise silently win), nesting deeper than `MAX_DEPTH`, and
    `NaN`/`Infinity`, which are not JSON. Reads text and bytes as `json.loads` does: msgspec
    parses what it can (most of it, quickly), the standard library the rest and says what is
    wrong.
    """
    if type(raw) is bytes or (type(raw) is str and not raw.startswith("\ufeff")):
        obj = _loads_fast(raw)
        if obj is not None:
            return obj
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
