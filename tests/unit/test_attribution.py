"""The pure attribution rule (services/campaigns/domain.py): last click within the click window,
else the latest send within the send window, else nothing."""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.campaigns.domain import (
    CLICK,
    SEND,
    Campaign,
    Click,
    Credit,
    Order,
    Send,
    credit,
)
from tests.oracles import affected, reach

FAST = settings(max_examples=200, deadline=None, database=None)
T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
H = timedelta(hours=1)
US = timedelta(microseconds=1)
DAY = timedelta(days=1)
M = "m1"


def order(at: datetime, member: str = M, order_id: str = "o1") -> Order:
    return Order(order_id, member, at)


def click(at: datetime, campaign: str = "c1", message: str = "msg1", member: str = M,
          event: str = "e1") -> Click:
    return Click(campaign, message, member, at, event)


def send(at: datetime, campaign: str = "c1", message: str = "msg1", member: str = M,
         channel: str = "sms") -> Send:
    return Send(campaign, message, member, channel, at)


def camp(campaign_id: str = "c1", click_window: timedelta = 2 * DAY,
         send_window: timedelta = DAY, audience: frozenset[str] = frozenset({M})) -> Campaign:
    return Campaign(campaign_id, click_window, send_window, audience)


def by_id(*campaigns: Campaign) -> dict[str, Campaign]:
    return {c.campaign_id: c for c in campaigns}


CAMPAIGNS = by_id(camp("c1"), camp("c2", click_window=DAY))


# --- the click window --------------------------------------------------------------------------


def test_click_exactly_48_hours_before_the_order_is_credited() -> None:
    got = credit(order(T0 + 48 * H), [click(T0)], [], CAMPAIGNS)
    assert got == Credit(CLICK, "c1", "msg1", None, T0)


@pytest.mark.parametrize("late", [timedelta(seconds=1), US])
def test_click_more_than_48_hours_before_the_order_is_not_credited(late: timedelta) -> None:
    assert credit(order(T0 + 48 * H + late), [click(T0)], [], CAMPAIGNS) is None


def test_one_day_campaign_credits_at_24_hours_and_not_a_second_later() -> None:
    assert credit(order(T0 + 24 * H), [click(T0, "c2")], [], CAMPAIGNS) is not None
    assert credit(order(T0 + 24 * H + timedelta(seconds=1)), [click(T0, "c2")], [],
                  CAMPAIGNS) is None


def test_click_at_the_same_instant_as_the_order_is_credited() -> None:
    assert credit(order(T0), [click(T0)], [], CAMPAIGNS) is not None


def test_click_after_the_order_does_not_credit_it() -> None:
    assert credit(order(T0), [click(T0 + US)], [], CAMPAIGNS) is None


def test_latest_click_wins_across_campaigns_even_against_a_longer_window() -> None:
    # c1 (2 days) was clicked first, c2 (1 day) later: the order goes to c2, the last click.
    clicks = [click(T0, "c1", "a"), click(T0 + 10 * H, "c2", "b")]
    got = credit(order(T0 + 20 * H), clicks, [], CAMPAIGNS)
    assert got == Credit(CLICK, "c2", "b", None, T0 + 10 * H)


def test_an_expired_later_click_leaves_the_order_to_the_earlier_click_still_in_window() -> None:
    # At 40h the c2 click (1-day window, 30h ago) has expired; c1's (2-day, 40h ago) has not.
    clicks = [click(T0, "c1", "a"), click(T0 + 10 * H, "c2", "b")]
    got = credit(order(T0 + 40 * H), clicks, [], CAMPAIGNS)
    assert got == Credit(CLICK, "c1", "a", None, T0)


def test_a_click_arriving_after_the_order_still_credits_it() -> None:
    # The order is attributed first with what was known then; the click happened before the
    # order but arrived later. Attributing again with the fuller set credits it: credit is a pure
    # function of the sets, not of arrival order.
    the_order = order(T0 + 5 * H)
    assert credit(the_order, [], [], CAMPAIGNS) is None
    late = click(T0)
    assert credit(the_order, [late], [], CAMPAIGNS) == Credit(CLICK, "c1", "msg1", None, T0)


# --- sends -------------------------------------------------------------------------------------


def test_send_credits_the_order_when_no_click_qualifies() -> None:
    got = credit(order(T0 + 24 * H), [], [send(T0, channel="email")], CAMPAIGNS)
    assert got == Credit(SEND, "c1", "msg1", "email", T0)


def test_send_more_than_its_window_before_the_order_is_not_credited() -> None:
    assert credit(order(T0 + 24 * H + US), [], [send(T0)], CAMPAIGNS) is None


def test_a_qualifying_click_beats_a_later_send() -> None:
    sends = [send(T0, "c1", "a"), send(T0 + 3 * H, "c2", "b", channel="email")]
    got = credit(order(T0 + 5 * H), [click(T0 + H, "c1", "a")], sends, CAMPAIGNS)
    assert got == Credit(CLICK, "c1", "a", "sms", T0 + H)


def test_a_click_outside_its_window_falls_back_to_a_send_within_its_own() -> None:
    got = credit(order(T0 + 50 * H), [click(T0, "c1", "a")], [send(T0 + 30 * H, "c2", "b")],
                 CAMPAIGNS)
    assert got == Credit(SEND, "c2", "b", "sms", T0 + 30 * H)


def test_latest_send_wins() -> None:
    sends = [send(T0 + 2 * H, "c2", "b", channel="email"), send(T0 + H, "c1", "a")]
    got = credit(order(T0 + 5 * H), [], sends, CAMPAIGNS)
    assert got == Credit(SEND, "c2", "b", "email", T0 + 2 * H)


# --- who and which campaign --------------------------------------------------------------------


def test_member_outside_the_audience_is_not_credited() -> None:
    campaigns = by_id(camp("c1", audience=frozenset({"someone-else"})))
    assert credit(order(T0 + H), [click(T0)], [send(T0)], campaigns) is None


def test_click_on_an_unknown_campaign_is_not_credited() -> None:
    assert credit(order(T0 + H), [click(T0, "c9")], [send(T0, "c9")], CAMPAIGNS) is None


def test_a_click_on_an_unknown_campaign_does_not_hide_an_older_valid_click() -> None:
    got = credit(order(T0 + 2 * H), [click(T0, "c1"), click(T0 + H, "c9")], [], CAMPAIGNS)
    assert got == Credit(CLICK, "c1", "msg1", None, T0)


def test_other_members_clicks_and_sends_are_ignored() -> None:
    campaigns = by_id(camp("c1", audience=frozenset({M, "m2"})))
    got = credit(order(T0 + 2 * H), [click(T0, member="m2")], [send(T0, member="m2")], campaigns)
    assert got is None


# --- ties and channels -------------------------------------------------------------------------


def test_tied_clicks_go_to_the_smallest_campaign_then_message_then_event() -> None:
    campaigns = by_id(camp("c1"), camp("c2"))
    tied = [click(T0, "c2", "a", event="e0"), click(T0, "c1", "b", event="e0"),
            click(T0, "c1", "a", event="e9"), click(T0, "c1", "a", event="e2")]
    for clicks in (tied, tied[::-1]):
        got = credit(order(T0 + H), clicks, [], campaigns)
        assert got == Credit(CLICK, "c1", "a", None, T0)
    assert credit(order(T0 + H), tied[:2], [], campaigns) == Credit(CLICK, "c1", "b", None, T0)


def test_tied_sends_go_to_the_smallest_campaign_then_message() -> None:
    campaigns = by_id(camp("c1"), camp("c2"))
    tied = [send(T0, "c2", "a"), send(T0, "c1", "b"), send(T0, "c1", "a", channel="sms")]
    for sends in (tied, tied[::-1]):
        assert credit(order(T0 + H), [], sends, campaigns) == Credit(SEND, "c1", "a", "sms", T0)


def test_the_click_channel_comes_from_its_send() -> None:
    sends = [send(T0 - H, "c1", "a", channel="email"), send(T0 - H, "c1", "b", channel="sms"),
             send(T0 - H, "c1", "a", member="m2", channel="im")]
    got = credit(order(T0 + H), [click(T0, "c1", "a")], sends, CAMPAIGNS)
    assert got is not None and got.channel == "email"


def test_a_click_whose_send_is_unknown_still_credits_with_no_channel() -> None:
    got = credit(order(T0 + H), [click(T0, "c1", "a")], [send(T0, "c1", "b")], CAMPAIGNS)
    assert got == Credit(CLICK, "c1", "a", None, T0)


def test_the_click_channel_is_found_even_when_its_send_is_outside_the_send_window() -> None:
    # Sent three days before the order, clicked a day before: the send window (1 day) is about
    # send-only credit; the send still tells us the channel.
    got = credit(order(T0 + 3 * DAY), [click(T0 + 2 * DAY)], [send(T0, channel="im")], CAMPAIGNS)
    assert got == Credit(CLICK, "c1", "msg1", "im", T0 + 2 * DAY)


def test_credit_accepts_one_shot_iterators() -> None:
    got = credit(order(T0 + H), iter([click(T0)]), (s for s in [send(T0)]), CAMPAIGNS)
    assert got == Credit(CLICK, "c1", "msg1", "sms", T0)


# --- validation --------------------------------------------------------------------------------


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2026, 3, 1, 12)
    with pytest.raises(ValueError, match="aware"):
        Order("o1", M, naive)
    with pytest.raises(ValueError, match="aware"):
        Click("c1", "a", M, naive, "e1")
    with pytest.raises(ValueError, match="aware"):
        Send("c1", "a", M, "sms", naive)


def test_negative_windows_and_unknown_credit_kinds_are_refused() -> None:
    with pytest.raises(ValueError):
        Campaign("c1", click_window=-US)
    with pytest.raises(ValueError):
        Campaign("c1", send_window=-US)
    with pytest.raises(ValueError):
        Credit("open", "c1", "a", None, T0)


def test_campaign_defaults_are_two_day_clicks_and_one_day_sends() -> None:
    c = Campaign("c1")
    assert (c.click_window, c.send_window, c.audience) == (2 * DAY, DAY, frozenset())


# --- reach and affected ------------------------------------------------------------------------


def test_reach_is_the_longest_window_of_any_campaign() -> None:
    assert reach({}) == timedelta(0)
    assert reach(CAMPAIGNS) == 2 * DAY
    assert reach(by_id(camp("c1", DAY, 3 * DAY), camp("c2", 2 * DAY, DAY))) == 3 * DAY


def test_affected_takes_orders_from_the_touch_to_the_end_of_the_window_inclusive() -> None:
    times = [("before", T0 - US), ("at", T0), ("inside", T0 + DAY), ("end", T0 + 2 * DAY),
             ("after", T0 + 2 * DAY + US), ("at", T0)]
    assert affected(times, T0, 2 * DAY) == ["at", "inside", "end"]


# --- properties --------------------------------------------------------------------------------

MEMBERS = ["m1", "m2"]
WHO = st.sampled_from(["m1", "m1", "m1", "m2"])   # mostly the same member, so credits happen
CAMPAIGN_IDS = ["c1", "c1", "c2", "c3", "c4"]  # c1 always exists, c4 never: an unknown one
MESSAGES = ["a", "b"]
EVENTS = ["e1", "e2"]
CHANNELS = ["sms", "email", "im"]
WINDOWS = [timedelta(0), DAY, 36 * H, 2 * DAY, 2 * DAY]


def hours(lo: int, hi: int) -> st.SearchStrategy[datetime]:
    """Whole hours, some a microsecond off: lots of ties and lots of exact window edges."""
    return st.sampled_from([T0 + h * H + u * US for h in range(lo, hi + 1) for u in (0, 0, 1, -1)])


times = hours(-12, 48)
clicks_st = st.builds(Click, st.sampled_from(CAMPAIGN_IDS), st.sampled_from(MESSAGES),
                      WHO, times, st.sampled_from(EVENTS))
sends_st = st.builds(Send, st.sampled_from(CAMPAIGN_IDS), st.sampled_from(MESSAGES),
                     WHO, st.sampled_from(CHANNELS), times)
orders_st = st.builds(Order, st.just("o1"), WHO, hours(12, 60))
AUDIENCES = [frozenset(MEMBERS), frozenset(MEMBERS), frozenset({"m1"}), frozenset({"m2"}),
             frozenset()]


@st.composite
def campaigns_st(draw: st.DrawFn) -> dict[str, Campaign]:
    ids = ["c1", *draw(st.lists(st.sampled_from(["c2", "c3"]), unique=True))]
    return {cid: Campaign(cid, draw(st.sampled_from(WINDOWS)), draw(st.sampled_from(WINDOWS)),
                          draw(st.sampled_from(AUDIENCES)))
            for cid in ids}


def click_qualifies(o: Order, c: Click, campaigns: Mapping[str, Campaign]) -> bool:
    camp_ = campaigns.get(c.campaign_id)
    return (camp_ is not None and c.member_id == o.member_id and o.member_id in camp_.audience
            and c.clicked_at <= o.converted_at
            and o.converted_at - c.clicked_at <= camp_.click_window)


def send_qualifies(o: Order, s: Send, campaigns: Mapping[str, Campaign]) -> bool:
    camp_ = campaigns.get(s.campaign_id)
    return (camp_ is not None and s.member_id == o.member_id and o.member_id in camp_.audience
            and s.sent_at <= o.converted_at
            and o.converted_at - s.sent_at <= camp_.send_window)


def reference_credit(o: Order, clicks: list[Click], sends: list[Send],
                     campaigns: Mapping[str, Campaign]) -> Credit | None:
    """Slow and obvious: filter, sort everything by the documented keys, take the first."""
    ok_clicks = sorted((c for c in clicks if click_qualifies(o, c, campaigns)),
                       key=lambda c: (c.campaign_id, c.message_id, c.event_id))
    ok_clicks.sort(key=lambda c: c.clicked_at, reverse=True)    # stable: ties keep id order
    if ok_clicks:
        c = ok_clicks[0]
        channels = sorted(s.channel for s in sends if s.member_id == o.member_id
                          and (s.campaign_id, s.message_id) == (c.campaign_id, c.message_id))
        return Credit(CLICK, c.campaign_id, c.message_id, channels[0] if channels else None,
                      c.clicked_at)
    ok_sends = sorted((s for s in sends if send_qualifies(o, s, campaigns)),
                      key=lambda s: (s.campaign_id, s.message_id, s.channel))
    ok_sends.sort(key=lambda s: s.sent_at, reverse=True)
    if ok_sends:
        s = ok_sends[0]
        return Credit(SEND, s.campaign_id, s.message_id, s.channel, s.sent_at)
    return None


inputs = st.tuples(orders_st, st.lists(clicks_st, max_size=10), st.lists(sends_st, max_size=10),
                   campaigns_st())
Inputs = tuple[Order, list[Click], list[Send], dict[str, Campaign]]


@FAST
@given(inputs)
def test_credit_matches_the_sort_based_reference(case: Inputs) -> None:
    o, clicks, sends, campaigns = case
    assert credit(o, clicks, sends, campaigns) == reference_credit(o, clicks, sends, campaigns)


@FAST
@given(inputs, st.randoms(use_true_random=False), st.data())
def test_credit_ignores_input_order_and_duplicates(case: Inputs, rnd: random.Random,
                                                   data: st.DataObject) -> None:
    o, clicks, sends, campaigns = case
    expected = credit(o, clicks, sends, campaigns)
    more_clicks = clicks + data.draw(st.lists(st.sampled_from(clicks))) if clicks else []
    more_sends = sends + data.draw(st.lists(st.sampled_from(sends))) if sends else []
    rnd.shuffle(more_clicks)
    rnd.shuffle(more_sends)
    assert credit(o, more_clicks, more_sends, campaigns) == expected


@FAST
@given(inputs, clicks_st, sends_st, st.integers(1, 10**6))
def test_touches_after_the_order_or_before_every_window_change_nothing(
        case: Inputs, extra_click: Click, extra_send: Send, offset_us: int) -> None:
    o, clicks, sends, campaigns = case
    expected = credit(o, clicks, sends, campaigns)
    later = o.converted_at + offset_us * US
    earlier = o.converted_at - reach(campaigns) - offset_us * US
    for at in (later, earlier):
        c = Click(extra_click.campaign_id, extra_click.message_id, o.member_id, at,
                  extra_click.event_id)
        s = Send(extra_send.campaign_id, extra_send.message_id, o.member_id, extra_send.channel,
                 at)
        got = credit(o, [*clicks, c], [*sends, s], campaigns)
        # A stray send can still name the channel of the credited click (same message); all
        # else - which message, when, and by what - is untouched.
        assert (got is None) == (expected is None)
        if got is not None and expected is not None:
            assert (got.kind, got.campaign_id, got.message_id, got.credited_at) == (
                expected.kind, expected.campaign_id, expected.message_id, expected.credited_at)


@FAST
@given(inputs, st.data())
def test_late_touches_without_a_matching_message_leave_the_credit_exactly_alone(
        case: Inputs, data: st.DataObject) -> None:
    o, clicks, sends, campaigns = case
    expected = credit(o, clicks, sends, campaigns)
    at = data.draw(st.sampled_from([o.converted_at + US,
                                    o.converted_at - reach(campaigns) - US]))
    extra = Click("c1", "fresh", o.member_id, at, "e-new")
    extra_send = Send("c1", "fresh", o.member_id, "sms", at)
    assert credit(o, [*clicks, extra], [*sends, extra_send], campaigns) == expected


@FAST
@given(inputs)
def test_the_credited_click_or_send_meets_every_condition(case: Inputs) -> None:
    o, clicks, sends, campaigns = case
    got = credit(o, clicks, sends, campaigns)
    if got is None:
        assert not any(click_qualifies(o, c, campaigns) for c in clicks)
        assert not any(send_qualifies(o, s, campaigns) for s in sends)
        return
    if got.kind == CLICK:
        winners = [c for c in clicks if click_qualifies(o, c, campaigns)
                   and (c.campaign_id, c.message_id, c.clicked_at)
                   == (got.campaign_id, got.message_id, got.credited_at)]
        assert winners
        assert all(c.clicked_at <= got.credited_at for c in clicks
                   if click_qualifies(o, c, campaigns))
        assert got.channel is None or any(
            (s.campaign_id, s.message_id, s.member_id, s.channel)
            == (got.campaign_id, got.message_id, o.member_id, got.channel) for s in sends)
    else:
        assert got.kind == SEND
        assert not any(click_qualifies(o, c, campaigns) for c in clicks)
        assert any(send_qualifies(o, s, campaigns)
                   and (s.campaign_id, s.message_id, s.channel, s.sent_at)
                   == (got.campaign_id, got.message_id, got.channel, got.credited_at)
                   for s in sends)
        assert all(s.sent_at <= got.credited_at for s in sends
                   if send_qualifies(o, s, campaigns))


@FAST
@given(inputs)
def test_any_qualifying_click_makes_the_credit_a_click(case: Inputs) -> None:
    o, clicks, sends, campaigns = case
    got = credit(o, clicks, sends, campaigns)
    if any(click_qualifies(o, c, campaigns) for c in clicks):
        assert got is not None and got.kind == CLICK


@FAST
@given(inputs)
def test_only_touches_within_reach_of_the_order_matter(case: Inputs) -> None:
    o, clicks, sends, campaigns = case
    lo, hi = o.converted_at - reach(campaigns), o.converted_at
    near_clicks = [c for c in clicks if lo <= c.clicked_at <= hi]
    near_sends = [s for s in sends if lo <= s.sent_at <= hi]
    got = credit(o, clicks, sends, campaigns)
    near = credit(o, near_clicks, near_sends, campaigns)
    assert (got is None) == (near is None)
    if got is not None and near is not None:
        assert (got.kind, got.campaign_id, got.message_id) == (
            near.kind, near.campaign_id, near.message_id)


@FAST
@given(st.lists(times, max_size=10), times, st.sampled_from(WINDOWS))
def test_affected_is_exactly_the_orders_a_click_at_the_touch_could_credit(
        order_times: list[datetime], touch_at: datetime, window: timedelta) -> None:
    rows = [(f"o{i}", at) for i, at in enumerate(order_times)]
    campaigns = by_id(Campaign("c1", click_window=window, audience=frozenset({M})))
    the_click = click(touch_at)
    could = [oid for oid, at in rows
             if credit(Order(oid, M, at), [the_click], [], campaigns) is not None]
    assert affected(rows, touch_at, window) == could


@FAST
@given(campaigns_st())
def test_reach_covers_every_window(campaigns: dict[str, Campaign]) -> None:
    r = reach(campaigns)
    assert all(c.click_window <= r and c.send_window <= r for c in campaigns.values())
    assert not campaigns or any(r in (c.click_window, c.send_window) for c in campaigns.values())
