"""The outbound contract: every event memberflow publishes, one typed model each, one codec.

Publishers build these models and turn them into messages with `output`; readers (the tagging
worker, the storefront, replay checks) turn messages back into models with `decode`. The JSON
Schema of all of them is published in `docs/member-event.schema.json` (`memberflow schema
--outbound`), beside the inbound one.

Every event id is derived from the input that caused it (the inbound event, the operator action,
the clock reading), never from how records happened to be batched, and the id determines the
content: a retried batch republishes byte-identical messages, and a reader drops a repeated id.

| type | topic | published by | one per |
| --- | --- | --- | --- |
| `member.figures_changed` | member-events | tiering | inbound event changing a member's figures |
| `member.level_changed` | member-events | tiering | level change (trade, policy, operator) |
| `member.abc_changed` | member-events | tiering | class change at a recompute |
| `stream.clock` | member-events | tiering | move of a partition's clock (to that partition) |
| `member.state` | member-events | tiering | member, when readers are brought back in step |
| `member.tags_changed` | tag-events | tagging | triggering event, or instant a time rule turned |
| `campaign.order_credited` | credit-events | campaigns | credit given, moved or withdrawn |

`campaign.message_sent` is an inbound event (`shared.events.MessageSent`): `campaigns send`
writes it to the archive and the campaigns topic like any storefront event.

Money is a string with two decimals, times are UTC ISO-8601 with a `Z`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeAlias, Union

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from shared.consumer import Output
from shared.money import cents_text, to_cents

SCHEMA_VERSION = 1


def iso(at: datetime) -> str:
    """UTC time as ISO-8601 with a Z."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


Time = Annotated[AwareDatetime, AfterValidator(lambda t: t.astimezone(UTC)),
                 PlainSerializer(iso, return_type=str)]
Money = Annotated[str, StringConstraints(pattern=r"^-?[0-9]+\.[0-9]{2}$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _MemberEvent(_Model):
    event_id: Text
    schema_version: Literal[1] = 1
    shop_id: Text
    member_id: Text
    occurred_at: Time

    @property
    def key(self) -> bytes:
        """Keyed like inbound events (shop/member), so one member's events stay in order."""
        return f"{self.shop_id}/{self.member_id}".encode()


class Figures(_Model):
    """A member's trade figures after the event that changed them (a snapshot, not a delta)."""

    completed_trades: int
    spend: Money
    gross: Money
    refunded: Money
    first_purchase_at: Time | None
    last_purchase_at: Time | None
    region: str | None

    @classmethod
    def of(cls, trades: int, spend_cents: int, gross_cents: int, refunded_cents: int,
           first: datetime | None, last: datetime | None, region: str | None) -> Figures:
        return cls(completed_trades=trades, spend=cents_text(spend_cents),
                   gross=cents_text(gross_cents), refunded=cents_text(refunded_cents),
                   first_purchase_at=first, last_purchase_at=last, region=region)

    @property
    def spend_cents(self) -> int:
        return _cents(self.spend)

    @property
    def gross_cents(self) -> int:
        return _cents(self.gross)

    @property
    def refunded_cents(self) -> int:
        return _cents(self.refunded)


def _cents(text: str) -> int:
    from decimal import Decimal

    return to_cents(Decimal(text))


class FiguresPayload(Figures):
    cause_event_id: Text = Field(description="the inbound event that changed the figures")
    skus_bought: list[str] = Field(
        default_factory=list, description="items of the trade this event completed (or placed "
                                          "after its completion), counted once")
    clock: Time = Field(description="the clock of the member's stream after this event")


class FiguresChanged(_MemberEvent):
    type: Literal["member.figures_changed"] = "member.figures_changed"
    payload: FiguresPayload


class StatePayload(Figures):
    level: int
    abc_class: Literal["A", "B", "C"] | None
    clock: Time | None = Field(description="the clock of the member's stream when taken")


class MemberState(_MemberEvent):
    """A member's whole state as tiering holds it: published to bring readers back in step
    after a fresh embedded broker lost earlier messages (`memberflow up` does it by itself)."""

    type: Literal["member.state"] = "member.state"
    payload: StatePayload


class LevelPayload(_Model):
    old_level: int
    new_level: int
    old_level_name: str | None
    new_level_name: str | None
    cause: Literal["auto", "manual", "policy"]
    triggering_event_id: str | None
    effective_from: Time
    discount: str = Field(description="price factor of the member's next order, e.g. 0.95")
    policy_version: int | None
    operator: str | None
    reason: str | None


class LevelChanged(_MemberEvent):
    type: Literal["member.level_changed"] = "member.level_changed"
    payload: LevelPayload


class AbcPayload(_Model):
    old_class: Literal["A", "B", "C"] | None
    new_class: Literal["A", "B", "C"] | None
    as_of: Time
    period_days: int


class AbcChanged(_MemberEvent):
    type: Literal["member.abc_changed"] = "member.abc_changed"
    payload: AbcPayload


class TagEntry(_Model):
    tag_id: str
    cause: Literal["rule", "goods", "manual", "config"]
    rule_id: str | None = None
    operator: str | None = None
    reason: str | None = None
    effective_at: Time


class TagsPayload(_Model):
    added: list[TagEntry]
    removed: list[TagEntry]
    tags: list[str] = Field(description="the member's tags after the change")
    triggering_event_id: str | None


class TagsChanged(_MemberEvent):
    type: Literal["member.tags_changed"] = "member.tags_changed"
    payload: TagsPayload


class CreditBody(_Model):
    kind: Literal["click", "send"]
    campaign_id: str
    message_id: str
    credited_at: Time


class CreditPayload(_Model):
    order_id: str
    credit: CreditBody | None
    previous: CreditBody | None


class OrderCredited(_MemberEvent):
    type: Literal["campaign.order_credited"] = "campaign.order_credited"
    payload: CreditPayload


class ClockPayload(_Model):
    partition: int = Field(ge=0)
    clock: Time = Field(description="newest event time (events and ticks) read on this "
                                    "partition of the inbound orders stream")


class StreamClock(_Model):
    """The clock of one stream partition moved; sent to that partition only."""

    event_id: Text
    type: Literal["stream.clock"] = "stream.clock"
    schema_version: Literal[1] = 1
    payload: ClockPayload


OutboundEvent: TypeAlias = Annotated[
    Union[  # noqa: UP007 -- a discriminated union needs the explicit form for pydantic
        FiguresChanged, MemberState, LevelChanged, AbcChanged, TagsChanged, OrderCredited,
        StreamClock],
    Field(discriminator="type"),
]
OutboundModel: TypeAlias = (FiguresChanged | MemberState | LevelChanged | AbcChanged
                            | TagsChanged | OrderCredited | StreamClock)
_ADAPTER: TypeAdapter[OutboundModel] = TypeAdapter(OutboundEvent)
OUTBOUND_TYPES = frozenset({"member.figures_changed", "member.state", "member.level_changed",
                            "member.abc_changed", "member.tags_changed",
                            "campaign.order_credited", "stream.clock"})


class UnreadableOutbound(ValueError):
    """A message that memberflow did not write as documented."""


def encode(event: OutboundModel) -> bytes:
    """The one wire form: compact JSON, UTF-8."""
    return event.model_dump_json().encode()


def decode(raw: bytes | str) -> OutboundModel:
    """Read a published event back; raises `UnreadableOutbound` naming the field."""
    try:
        return _ADAPTER.validate_json(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in err["loc"][1:] or err["loc"])
        raise UnreadableOutbound(f"{loc or '(message)'}: {err['msg']}"[:300]) from None


def output(topic: str, event: OutboundModel, *, partition: int | None = None) -> Output:
    """The message publishing `event`: keyed by shop/member, or to one partition (clocks)."""
    key = event.key if isinstance(event, _MemberEvent) else None
    return Output(topic, key, encode(event), event.type, partition=partition)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of everything memberflow publishes."""
    schema = _ADAPTER.json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "memberflow outbound event"
    return schema
