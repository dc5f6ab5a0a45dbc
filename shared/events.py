"""The inbound event contract: every event the storefront sends, validated strictly.

JSON is the wire format. Inbound events are validated here, by one codec used by the HTTP
ingest, the Python producer, replay and every worker, so a bad event is refused with the same
reason wherever it enters, naming the field and the problem. What is accepted:

- **money** (`amount`, `unit_price`): a JSON number in plain decimal notation, or a string of
  ASCII digits with at most two decimals (`"12.50"`, `12.5`, `100`); never a sign, an exponent,
  spaces, separators, other scripts' digits or a binary float. Written back with two decimals;
- **ids** (event, shop, member, order, SKU, campaign, message ids and regions): 1 to 128
  printable characters (no control or format characters, no line separators, no byte-order
  mark), no leading or trailing space;
- **schema_version**: a JSON integer (supported: 1);
- **occurred_at**: an ISO-8601 string with date, time and zone (`2026-01-31T12:00:00Z`,
  `...+08:00`), stored in UTC, no later than the wall clock plus a small skew and no earlier
  than a floor (`TimeBounds`): one bad timestamp must never move a shop's clock;
- **JSON** itself: one object per event, no duplicate keys anywhere, nested at most
  `MAX_DEPTH` levels, at most `MAX_EVENT_BYTES`.

Equal events have equal canonical bytes (`to_json`), and `digest` hashes them: that is how the
same `event_id` arriving with a different body is recognised as a conflict.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeAlias, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
)

MAX_EVENT_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_ID = 128
MAX_MONEY = Decimal("999999999999.99")
SHOWN = 64  # characters of a refused value quoted back in a problem


def shown(value: Any) -> str:
    """A refused value as quoted in a problem text, cut short."""
    text = repr(value)
    return text if len(text) <= SHOWN else text[:SHOWN] + "…"


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
    """JSON text that is not acceptable as it stands (duplicate keys, too deep, NaN)."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(str(problem))


@dataclass(frozen=True)
class TimeBounds:
    """The sanity window for event times: not after the wall clock plus `max_skew`, not before
    `floor`. None switches a bound off (events read back from the archive were judged when they
    were accepted)."""

    floor: datetime | None = datetime(2000, 1, 1, tzinfo=UTC)
    max_skew: timedelta | None = timedelta(minutes=5)


DEFAULT_BOUNDS = TimeBounds()
ARCHIVED_BOUNDS = TimeBounds(None, None)


# --- JSON --------------------------------------------------------------------------------------


class _ExponentNumber(str):
    """A JSON number written with an exponent: never money, and never silently a float."""


def _parse_float(text: str) -> Decimal | _ExponentNumber:
    if "e" in text or "E" in text:
        return _ExponentNumber(text)
    return Decimal(text)


def _refuse_constant(name: str) -> Any:
    raise JsonRejected(Problem("", f"{name} is not a JSON number"))


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise JsonRejected(Problem(key[:100], "duplicate key; each key may appear once"))
        out[key] = value
    return out


def _check_depth(obj: Any) -> None:
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > MAX_DEPTH:
            raise JsonRejected(Problem("", f"nested deeper than {MAX_DEPTH} levels"))
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))


def loads_json(raw: bytes | str) -> Any:
    """Parse JSON keeping numbers exact (Decimal, never float); raises `JsonRejected` for
    duplicate keys, nesting deeper than `MAX_DEPTH` and NaN/Infinity, ValueError for text that
    is not JSON."""
    try:
        obj = json.loads(raw, parse_float=_parse_float, parse_constant=_refuse_constant,
                         object_pairs_hook=_object)
    except RecursionError:
        raise JsonRejected(Problem("", f"nested deeper than {MAX_DEPTH} levels")) from None
    _check_depth(obj)
    return obj


# --- field types -------------------------------------------------------------------------------

_MONEY_TEXT = re.compile(r"[0-9]{1,15}(\.[0-9]{1,2})?")
_CENT = Decimal("0.01")


def _money(value: Any, positive: bool) -> Decimal:
    if isinstance(value, bool):
        raise ValueError(f"must be an amount, not {shown(value)}")
    if isinstance(value, _ExponentNumber):
        raise ValueError(f"must be written without an exponent, not {shown(str(value))}")
    if isinstance(value, float):
        raise ValueError("binary floats are not accepted as money: send a string such as "
                         '"12.50" (or a Decimal)')
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("must be a finite amount")
        amount = value
    elif isinstance(value, str):
        if not _MONEY_TEXT.fullmatch(value):
            raise ValueError(f"must be a decimal amount such as \"12.50\" (ASCII digits, at most "
                             f"two decimals, no sign, spaces or separators), not {shown(value)}")
        amount = Decimal(value)
    else:
        raise ValueError(f"must be an amount (a string such as \"12.50\"), not "
                         f"{type(value).__name__}")
    if amount.as_tuple().exponent < -2:  # type: ignore[operator]
        raise ValueError("must have at most 2 decimal places")
    if amount < 0 or (positive and amount == 0):
        raise ValueError("must be > 0" if positive else "must be >= 0")
    if amount > MAX_MONEY:
        raise ValueError(f"must be <= {MAX_MONEY}")
    return amount.quantize(_CENT)


_MONEY_SCHEMA = {"anyOf": [{"type": "string", "pattern": r"^[0-9]{1,15}(\.[0-9]{1,2})?$"},
                           {"type": "number", "minimum": 0, "maximum": 999999999999.99,
                            "multipleOf": 0.01}],
                 "description": "an amount with at most two decimals, e.g. \"12.50\""}
Money = Annotated[Decimal, BeforeValidator(lambda v: _money(v, False)),
                  PlainSerializer(lambda d: f"{d:.2f}", return_type=str),
                  WithJsonSchema(_MONEY_SCHEMA)]
PositiveMoney = Annotated[Decimal, BeforeValidator(lambda v: _money(v, True)),
                          PlainSerializer(lambda d: f"{d:.2f}", return_type=str),
                          WithJsonSchema({**_MONEY_SCHEMA, "description": "an amount > 0"})]


def _id(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {type(value).__name__}")
    if not value:
        raise ValueError("must not be empty")
    if len(value) > MAX_ID:
        raise ValueError(f"must be at most {MAX_ID} characters (it has {len(value):,})")
    if not value.isprintable():
        at, char = next((i, c) for i, c in enumerate(value) if not c.isprintable())
        raise ValueError(f"must be printable text: character U+{ord(char):04X} at position "
                         f"{at} is not allowed")
    if value[0] == " " or value[-1] == " ":
        raise ValueError("must not start or end with a space")
    return value


Id = Annotated[str, BeforeValidator(_id),
               WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_ID,
                               "description": "printable text, no leading or trailing space"})]


def _version(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be a JSON integer, not {shown(value)}")
    if value != 1:
        raise ValueError(f"unsupported version {shown(value)} (supported: 1)")
    return value


Version = Annotated[int, BeforeValidator(_version),
                    WithJsonSchema({"type": "integer", "enum": [1]})]

_ISO = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
                  r"(Z|[+-][0-9]{2}:[0-9]{2})")


def _event_time(value: Any, info: ValidationInfo) -> datetime:
    if isinstance(value, datetime):  # Python callers
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("must carry a timezone (UTC, e.g. 2026-01-31T12:00:00Z)")
        at = value
    else:
        if not isinstance(value, str):
            raise ValueError("must be an ISO-8601 time string such as 2026-01-31T12:00:00Z, "
                             f"not {type(value).__name__} {shown(value)}")
        if not _ISO.fullmatch(value):
            zone = "" if re.search(r"(Z|[+-][0-9]{2}:[0-9]{2})$", value) else \
                " with a timezone"
            raise ValueError(f"must be an ISO-8601 date and time{zone}, e.g. "
                             f"2026-01-31T12:00:00Z, not {shown(value)}")
        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"is not a valid date and time: {shown(value)}") from None
    try:
        at = at.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError(f"is out of range: {shown(value)} has no UTC time") from None
    bounds: TimeBounds = (info.context or {}).get("bounds", DEFAULT_BOUNDS)
    if bounds.floor is not None and at < bounds.floor:
        raise ValueError(f"is before the earliest accepted time {_iso(bounds.floor)}")
    if bounds.max_skew is not None:
        now: datetime = (info.context or {}).get("now") or datetime.now(UTC)
        if at > now + bounds.max_skew:
            raise ValueError(f"is {_ahead(at - now)} ahead of the clock (at most "
                             f"{bounds.max_skew} ahead is accepted)")
    return at


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _ahead(delta: timedelta) -> str:
    if delta >= timedelta(days=2):
        return f"{delta.days:,} days"
    return str(delta).split(".")[0]


EventTime = Annotated[datetime, BeforeValidator(_event_time),
                      PlainSerializer(_iso, return_type=str),
                      WithJsonSchema({"type": "string", "format": "date-time",
                                      "description": "ISO-8601 with a timezone"})]
Channel = Literal["sms", "email", "in_app", "im"]


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
    source: Id


class _Envelope(_Frozen):
    event_id: Id
    schema_version: Version
    occurred_at: EventTime

    def to_json(self) -> bytes:
        """The canonical wire form (money as two-decimal strings, time in UTC)."""
        return self.model_dump_json(exclude_none=True).encode()


class _MemberEnvelope(_Envelope):
    shop_id: Id
    member_id: Id

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
    """The pipeline's wall-clock time, recorded into the stream by memberflow itself (never
    accepted from outside), so time-based rules move on when no shop sells and replays stay
    exact. It belongs to no shop and no member; it travels to every partition."""

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
EventModel: TypeAlias = MemberEventModel | ClockTicked
ORDER_TYPES = frozenset({"order.placed", "order.paid", "order.completed", "order.refunded"})
CAMPAIGN_TYPES = frozenset({"campaign.message_sent", "campaign.message_clicked"})
BROWSING_TYPES = frozenset({"member.viewed", "member.carted"})
CLOCK_TYPES = frozenset({"clock.ticked"})
EVENT_TYPES = ORDER_TYPES | CAMPAIGN_TYPES | BROWSING_TYPES | CLOCK_TYPES
SCHEMA_VERSIONS: Mapping[str, frozenset[int]] = {t: frozenset({1}) for t in EVENT_TYPES}

_ADAPTER: TypeAdapter[EventModel] = TypeAdapter(Event)


def digest(event: EventModel) -> bytes:
    """The sha256 of the event's canonical form: equal events (whatever key order, spacing,
    money spelling or time zone they came in) have equal digests; any other difference
    changes it."""
    return hashlib.sha256(event.to_json()).digest()


def decode(raw: bytes | str, *, bounds: TimeBounds | None = None,
           now: datetime | None = None) -> EventModel:
    """Parse and validate one event from its JSON wire form, or raise `EventRejected`."""
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
        raise EventRejected([Problem("", f"not valid JSON ({str(exc)[:200]})")]) from None
    return validate(obj, bounds=bounds, now=now)


def validate(obj: Any, *, bounds: TimeBounds | None = None,
             now: datetime | None = None) -> EventModel:
    """Validate an already-parsed JSON object (e.g. one element of an HTTP batch)."""
    try:
        return _ADAPTER.validate_python(
            obj, context={"bounds": bounds or DEFAULT_BOUNDS, "now": now})
    except ValidationError as exc:
        raise EventRejected(_explain(exc)) from None
    except RecursionError:
        raise EventRejected([Problem("", f"nested deeper than {MAX_DEPTH} levels")]) from None


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if len(part) <= 64 else part[:64] + "…"
            out += f".{name}" if out else name
    return out


def _explain(exc: ValidationError) -> list[Problem]:
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
            problems.append(
                Problem("type", f"unknown event type {shown(err['ctx']['tag'])} "
                        f"(known: {', '.join(sorted(EVENT_TYPES))})")
            )
            continue
        # The first location element is the union member's tag; the field path follows it.
        field = _path(loc[1:]) if loc and loc[0] in EVENT_TYPES else _path(loc)
        problems.append(Problem(field, _message(kind, err)))
        if len(problems) >= 20:
            problems.append(Problem("", "(further problems not listed)"))
            break
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
        return str(ctx.get("error", err["msg"]))[:300]
    msg: str = err["msg"]
    return (msg[0].lower() + msg[1:])[:300] if msg else kind


def json_schema() -> dict[str, Any]:
    """The JSON Schema of inbound events, for storefront teams that do not read Python."""
    schema = _ADAPTER.json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "memberflow inbound event"
    return schema
