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
| `member.rfm_changed` | member-events | tiering | RFM score or segment change at a recompute |
| `stream.clock` | member-events | tiering | move of a partition's clock (to that partition) |
| `member.state` | member-events | tiering | member, when readers are brought back in step |
| `member.tags_changed` | tag-events | tagging | triggering event, or instant a time rule turned |
| `campaign.order_credited` | credit-events | campaigns | credit given, moved or withdrawn |

`campaign.message_sent` is an inbound event (`shared.events.MessageSent`): `campaigns send`
writes it to the archive and the campaigns topic like any storefront event.

Money is a string with two decimals, times are UTC ISO-8601 with a `Z`. The models are msgspec
structs: building one checks nothing but puts its times in UTC; reading a message checks every
field against its type and constraints.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, Self, TypeAlias

import msgspec
from msgspec import Meta

from shared.consumer import Output
from shared.events import union_schema
from shared.money import cents_text

SCHEMA_VERSION = 1


def iso(at: datetime) -> str:
    """UTC time as ISO-8601 with a Z."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _utc(at: datetime) -> datetime:
    if at.tzinfo is UTC:
        return at
    if at.utcoffset() is None:
        raise ValueError(f"a time memberflow publishes must carry a timezone, not {at!r}")
    return at.astimezone(UTC)


def cents(text: str) -> int:
    """Cents of a money text as published (`-?[0-9]+.[0-9]{2}`, checked when read)."""
    whole, _, frac = text.partition(".")
    value = int(whole.lstrip("-") or "0") * 100 + int(frac)
    return -value if text.startswith("-") else value


Time = Annotated[datetime, Meta(tz=True)]
Money = Annotated[str, Meta(pattern=r"^-?[0-9]+\.[0-9]{2}$")]
Text = Annotated[str, Meta(min_length=1, max_length=200)]
AbcClass = Literal["A", "B", "C"]
LevelCause = Literal["auto", "manual", "policy"]
TagCause = Literal["rule", "goods", "manual", "config"]
CreditKind = Literal["click", "send"]


class _Model(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Immutable; unknown fields refused when read; times kept in UTC."""

    _times: ClassVar[tuple[str, ...]] = ()  # the fields that hold times

    def __post_init__(self) -> None:
        for name in self._times:
            at = getattr(self, name)
            if at is not None and at.tzinfo is not UTC:
                msgspec.structs.force_setattr(self, name, _utc(at))


class _MemberEvent(_Model, frozen=True, kw_only=True):
    _times: ClassVar[tuple[str, ...]] = ("occurred_at",)

    event_id: Text
    schema_version: Literal[1] = 1
    shop_id: Text
    member_id: Text
    occurred_at: Time

    @property
    def key(self) -> bytes:
        """Keyed like inbound events (shop/member), so one member's events stay in order."""
        return f"{self.shop_id}/{self.member_id}".encode()


class Figures(_Model, frozen=True, kw_only=True):
    """A member's trade figures after the event that changed them (a snapshot, not a delta)."""

    _times: ClassVar[tuple[str, ...]] = ("first_purchase_at", "last_purchase_at")

    completed_trades: int
    spend: Money
    gross: Money
    refunded: Money
    first_purchase_at: Time | None
    last_purchase_at: Time | None
    region: str | None

    @classmethod
    def of(cls, trades: int, spend_cents: int, gross_cents: int, refunded_cents: int,
           first: datetime | None, last: datetime | None, region: str | None,
           **more: Any) -> Self:
        """The figures (or a payload extending them with `more`) from cents."""
        return cls(completed_trades=trades, spend=cents_text(spend_cents),
                   gross=cents_text(gross_cents), refunded=cents_text(refunded_cents),
                   first_purchase_at=first, last_purchase_at=last, region=region, **more)

    def fields(self) -> dict[str, Any]:
        """The figures as keyword arguments, to build a payload that extends them."""
        return {f: getattr(self, f) for f in Figures.__struct_fields__}

    @property
    def spend_cents(self) -> int:
        return cents(self.spend)

    @property
    def gross_cents(self) -> int:
        return cents(self.gross)

    @property
    def refunded_cents(self) -> int:
        return cents(self.refunded)


class FiguresPayload(Figures, frozen=True, kw_only=True):
    _times: ClassVar[tuple[str, ...]] = ("first_purchase_at", "last_purchase_at", "clock")

    cause_event_id: Annotated[str, Meta(min_length=1, max_length=200,
                                        description="the inbound event that changed the figures")]
    skus_bought: Annotated[list[str], Meta(
        description="items of the trade this event completed (or placed after its completion), "
                    "counted once")] = []
    clock: Annotated[datetime, Meta(tz=True, description="the clock of the member's stream "
                                                         "after this event")]


class FiguresChanged(_MemberEvent, frozen=True, kw_only=True):
    type: Literal["member.figures_changed"] = "member.figures_changed"
    payload: FiguresPayload


class StatePayload(Figures, frozen=True, kw_only=True):
    _times: ClassVar[tuple[str, ...]] = ("first_purchase_at", "last_purchase_at", "clock")

    level: int
    abc_class: AbcClass | None
    rfm_segment: str | None = None
    clock: Annotated[datetime | None, Meta(description="the clock of the member's stream when "
                                                       "taken")]


class MemberState(_MemberEvent, frozen=True, kw_only=True):
    """A member's whole state as tiering holds it: published to bring readers back in step
    after a fresh embedded broker lost earlier messages (`memberflow up` does it by itself)."""

    type: Literal["member.state"] = "member.state"
    payload: StatePayload


class LevelPayload(_Model, frozen=True, kw_only=True):
    _times: ClassVar[tuple[str, ...]] = ("effective_from",)

    old_level: int
    new_level: int
    old_level_name: str | None
    new_level_name: str | None
    cause: LevelCause
    triggering_event_id: str | None
    effective_from: Time
    discount: Annotated[str, Meta(description="price factor of the member's next order, e.g. "
                                              "0.95")]
    policy_version: int | None
    operator: str | None
    reason: str | None


class LevelChanged(_MemberEvent, frozen=True, kw_only=True):
    type: Literal["member.level_changed"] = "member.level_changed"
    payload: LevelPayload


class AbcPayload(_Model, frozen=True, kw_only=True):
    _times: ClassVar[tuple[str, ...]] = ("as_of",)

    old_class: AbcClass | None
    new_class: AbcClass | None
    as_of: Time
    period_days: int


class AbcChanged(_MemberEvent, frozen=True, kw_only=True):
    type: Literal["member.abc_changed"] = "member.abc_changed"
    payload: AbcPayload


Score = Annotated[int, Meta(ge=1, le=4)]


class RfmPayload(_Model, frozen=True, kw_only=True):
    _times: ClassVar[tuple[str, ...]] = ("as_of",)

    old_segment: Annotated[str | None, Meta(description="none: not a buyer of the period")]
    new_segment: Annotated[str | None, Meta(description="the segment id in the shop's map; "
                                                        "none: no longer a buyer of the period")]
    r_score: Score | None
    f_score: Score | None
    m_score: Score | None
    as_of: Time
    period_days: int


class RfmChanged(_MemberEvent, frozen=True, kw_only=True):
    type: Literal["member.rfm_changed"] = "member.rfm_changed"
    payload: RfmPayload


class TagEntry(_Model, frozen=True, kw_only=True):
    _times: ClassVar[tuple[str, ...]] = ("effective_at",)

    tag_id: str
    cause: TagCause
    rule_id: str | None = None
    operator: str | None = None
    reason: str | None = None
    effective_at: Time


class TagsPayload(_Model, frozen=True, kw_only=True):
    added: list[TagEntry]
    removed: list[TagEntry]
    tags: Annotated[list[str], Meta(description="the member's tags after the change")]
    triggering_event_id: str | None


class TagsChanged(_MemberEvent, frozen=True, kw_only=True):
    type: Literal["member.tags_changed"] = "member.tags_changed"
    payload: TagsPayload


class CreditBody(_Model, frozen=True, kw_only=True):
    _times: ClassVar[tuple[str, ...]] = ("credited_at",)

    kind: CreditKind
    campaign_id: str
    message_id: str
    credited_at: Time


class CreditPayload(_Model, frozen=True, kw_only=True):
    order_id: str
    credit: CreditBody | None
    previous: CreditBody | None


class OrderCredited(_MemberEvent, frozen=True, kw_only=True):
    type: Literal["campaign.order_credited"] = "campaign.order_credited"
    payload: CreditPayload


class ClockPayload(_Model, frozen=True, kw_only=True):
    _times: ClassVar[tuple[str, ...]] = ("clock",)

    partition: Annotated[int, Meta(ge=0)]
    clock: Annotated[datetime, Meta(tz=True, description="newest event time (events and ticks) "
                                                         "read on this partition of the inbound "
                                                         "orders stream")]


class StreamClock(_Model, frozen=True, kw_only=True):
    """The clock of one stream partition moved; sent to that partition only."""

    event_id: Text
    type: Literal["stream.clock"] = "stream.clock"
    schema_version: Literal[1] = 1
    payload: ClockPayload


OutboundModel: TypeAlias = (FiguresChanged | MemberState | LevelChanged | AbcChanged
                            | RfmChanged | TagsChanged | OrderCredited | StreamClock)
MODELS: dict[str, type[OutboundModel]] = {
    "member.figures_changed": FiguresChanged,
    "member.state": MemberState,
    "member.level_changed": LevelChanged,
    "member.abc_changed": AbcChanged,
    "member.rfm_changed": RfmChanged,
    "member.tags_changed": TagsChanged,
    "campaign.order_credited": OrderCredited,
    "stream.clock": StreamClock,
}
OUTBOUND_TYPES = frozenset(MODELS)
_ENCODE = msgspec.json.Encoder().encode
_DECODERS = {t.encode(): msgspec.json.Decoder(m) for t, m in MODELS.items()}
_TYPE = msgspec.json.Decoder(dict[str, Any])


class UnreadableOutbound(ValueError):
    """A message that memberflow did not write as documented."""


def encode(event: OutboundModel) -> bytes:
    """The one wire form: compact JSON, UTF-8, fields in the model's order."""
    return _ENCODE(event)


def decode(raw: bytes | str) -> OutboundModel:
    """Read a published event back; raises `UnreadableOutbound` naming the field."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    start = data.find(b'"type":"')
    decoder = None
    if start >= 0:
        start += len(b'"type":"')
        decoder = _DECODERS.get(data[start:data.find(b'"', start)])
    try:
        if decoder is None:
            # Not what memberflow writes: say why as well as we can.
            body = _TYPE.decode(data)
            kind = body.get("type")
            decoder = _DECODERS.get(kind.encode()) if isinstance(kind, str) else None
            if decoder is None:
                raise UnreadableOutbound(f"type: unknown or missing ({str(kind)[:80]!r})")
        event: OutboundModel = decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise UnreadableOutbound(_where(str(exc))[:300]) from None
    except (msgspec.DecodeError, UnicodeError) as exc:
        raise UnreadableOutbound(f"(message): not JSON ({str(exc)[:200]})") from None
    return event


def _where(text: str) -> str:
    """msgspec's "Expected `int`, got `str` - at `$.payload.level`" as "payload.level: ..."."""
    problem, _, at = text.rpartition(" - at `$")
    if not problem:
        return f"(message): {text}"
    return f"{at.rstrip('`').lstrip('.') or '(message)'}: {problem[0].lower()}{problem[1:]}"


def output(topic: str, event: OutboundModel, *, partition: int | None = None) -> Output:
    """The message publishing `event`: keyed by shop/member, or to one partition (clocks)."""
    key = event.key if isinstance(event, _MemberEvent) else None
    return Output(topic, key, _ENCODE(event), event.type, partition=partition)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of everything memberflow publishes."""
    return union_schema(MODELS, "memberflow outbound event")
