"""The event contract: every event the storefront sends and every event memberflow publishes.

JSON is the wire format. Inbound events are validated here, by one codec used by the HTTP
ingest, the replay command and every worker, so a bad event is refused with the same reason
wherever it enters. Money is `Decimal` with at most two decimals (accepted as a JSON number or a
string, written as a string), never a float.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeAlias, Union

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)


def _two_decimals(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("must be a finite amount")
    if value.as_tuple().exponent < -2:  # type: ignore[operator]
        raise ValueError("must have at most 2 decimal places")
    return value


Money = Annotated[
    Decimal,
    Field(ge=0, le=Decimal("999999999999.99"), allow_inf_nan=False),
    AfterValidator(_two_decimals),
]
PositiveMoney = Annotated[Money, Field(gt=0)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^\S(.*\S)?$")]
EventTime = Annotated[AwareDatetime, AfterValidator(lambda t: t.astimezone(UTC))]
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


class _Envelope(_Frozen):
    event_id: Id
    schema_version: Literal[1]
    shop_id: Id
    member_id: Id
    occurred_at: EventTime

    @property
    def key(self) -> bytes:
        """Partition key: one member's events share a partition and so keep their order."""
        return f"{self.shop_id}/{self.member_id}".encode()

    def to_json(self) -> bytes:
        """The canonical wire form (money as strings, time in UTC)."""
        return self.model_dump_json(exclude_none=True).encode()


class OrderPlaced(_Envelope):
    type: Literal["order.placed"]
    payload: OrderPlacedPayload


class OrderPaid(_Envelope):
    type: Literal["order.paid"]
    payload: OrderAmountPayload


class OrderCompleted(_Envelope):
    """The trade succeeded; only completed trades count toward spend, levels and ABC."""

    type: Literal["order.completed"]
    payload: OrderAmountPayload


class OrderRefunded(_Envelope):
    type: Literal["order.refunded"]
    payload: OrderRefundedPayload


class MessageSent(_Envelope):
    type: Literal["campaign.message_sent"]
    payload: MessageSentPayload


class MessageClicked(_Envelope):
    type: Literal["campaign.message_clicked"]
    payload: MessageClickedPayload


class MemberViewed(_Envelope):
    type: Literal["member.viewed"]
    payload: SkuPayload


class MemberCarted(_Envelope):
    type: Literal["member.carted"]
    payload: SkuPayload


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
    ],
    Field(discriminator="type"),
]
EventModel: TypeAlias = (
    OrderPlaced
    | OrderPaid
    | OrderCompleted
    | OrderRefunded
    | MessageSent
    | MessageClicked
    | MemberViewed
    | MemberCarted
)
ORDER_TYPES = frozenset({"order.placed", "order.paid", "order.completed", "order.refunded"})
CAMPAIGN_TYPES = frozenset({"campaign.message_sent", "campaign.message_clicked"})
BROWSING_TYPES = frozenset({"member.viewed", "member.carted"})
EVENT_TYPES = ORDER_TYPES | CAMPAIGN_TYPES | BROWSING_TYPES
SCHEMA_VERSIONS: Mapping[str, frozenset[int]] = {t: frozenset({1}) for t in EVENT_TYPES}

_ADAPTER: TypeAdapter[EventModel] = TypeAdapter(Event)
MAX_EVENT_BYTES = 256 * 1024


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


def decode(raw: bytes | str) -> EventModel:
    """Parse and validate one event from its JSON wire form, or raise `EventRejected`."""
    if len(raw) > MAX_EVENT_BYTES:
        raise EventRejected([Problem("", f"event is larger than {MAX_EVENT_BYTES} bytes")])
    # Parse with exact numbers first: pydantic's own JSON reader passes numbers through a
    # binary float, which would quietly round an amount such as 1.0000000000000001 to 1.
    try:
        obj = loads_json(raw)
    except UnicodeDecodeError:
        raise EventRejected([Problem("", "not valid JSON (not UTF-8 text)")]) from None
    except ValueError as exc:
        raise EventRejected([Problem("", f"not valid JSON ({exc})")]) from None
    return validate(obj)


def validate(obj: Any) -> EventModel:
    """Validate an already-parsed JSON object (e.g. one element of an HTTP batch)."""
    try:
        return _ADAPTER.validate_python(obj)
    except ValidationError as exc:
        raise EventRejected(_explain(exc, obj)) from None


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _explain(exc: ValidationError, raw: Any) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
        kind = err["type"]
        loc = tuple(err["loc"])
        if kind == "json_invalid":
            problems.append(Problem("", f"not valid JSON ({err['ctx'].get('error', '')})"))
            continue
        if kind in ("model_attributes_type", "dict_type") or (kind == "model_type" and not loc):
            problems.append(Problem("", "event must be a JSON object"))
            continue
        if kind == "union_tag_not_found":
            problems.append(Problem("type", "required"))
            continue
        if kind == "union_tag_invalid":
            problems.append(
                Problem("type", f"unknown event type {err['ctx']['tag']!r} "
                        f"(known: {', '.join(sorted(EVENT_TYPES))})")
            )
            continue
        # The first location element is the union member's tag; the field path follows it.
        field = _path(loc[1:]) if loc and loc[0] in EVENT_TYPES else _path(loc)
        if field == "schema_version" and kind == "literal_error":
            version = err.get("input")
            problems.append(
                Problem("schema_version", f"unsupported version {version!r} (supported: 1)")
            )
            continue
        problems.append(Problem(field, _message(kind, err)))
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
    if kind == "timezone_aware":
        return "must carry a timezone (UTC, e.g. 2026-01-31T12:00:00Z)"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    msg: str = err["msg"]
    return msg[0].lower() + msg[1:] if msg else kind


def json_schema() -> dict[str, Any]:
    """The JSON Schema of inbound events, for storefront teams that do not read Python."""
    schema = _ADAPTER.json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "memberflow inbound event"
    return schema


def loads_json(raw: bytes | str) -> Any:
    """Parse JSON keeping numbers exact (Decimal, never float)."""
    return json.loads(raw, parse_float=Decimal)
