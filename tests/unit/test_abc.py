"""The pure ABC rules (services/tiering/abc.py): customer classes by head count, product classes
by cumulative share of sales."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from services.tiering.abc import ProductRow, class_sizes, classify_products
from tests.oracles import Spender, classify_customers, rank_customers

FAST = settings(max_examples=150, deadline=None, database=None)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
P_A, P_B = Decimal("0.05"), Decimal("0.20")


def spender(member_id: str, cents: int, days: int = 0) -> Spender:
    return Spender(member_id, cents, T0 + timedelta(days=days))


def ceil_share(share: Decimal, n: int) -> int:
    """ceil(share·n) in exact rational arithmetic."""
    exact = Fraction(share) * n
    return -(-exact.numerator // exact.denominator)


# --- customer classes: sizes -------------------------------------------------------------------


def test_class_sizes_round_up_so_a_single_member_is_a() -> None:
    assert class_sizes(1, P_A, P_B) == (1, 1)


def test_class_sizes_for_twenty_members_at_the_defaults() -> None:
    assert class_sizes(20, P_A, P_B) == (1, 4)
    assert class_sizes(21, P_A, P_B) == (2, 5)


def test_class_sizes_with_ten_percent_a() -> None:
    assert class_sizes(100, Decimal("0.10"), P_B) == (10, 20)
    assert class_sizes(101, Decimal("0.10"), P_B) == (11, 21)


def test_class_sizes_of_nobody_are_zero() -> None:
    assert class_sizes(0, P_A, P_B) == (0, 0)


@FAST
@given(st.integers(min_value=0, max_value=100_000),
       st.sampled_from([Decimal("0.05"), Decimal("0.10"), Decimal("0.15"), Decimal("0.0333")]),
       st.sampled_from([Decimal("0.2"), Decimal("0.20"), Decimal("0.25"), Decimal("0.3333")]))
def test_class_sizes_are_exact_ceilings_for_any_head_count(
        n: int, a_share: Decimal, b_share: Decimal) -> None:
    a, ab = class_sizes(n, a_share, b_share)
    assert (a, ab) == (ceil_share(a_share, n), ceil_share(b_share, n))
    assert isinstance(a, int) and isinstance(ab, int)
    assert 0 <= a <= ab <= n


# --- customer classes: ranking -----------------------------------------------------------------


def test_customers_rank_by_spend_descending() -> None:
    ranked = rank_customers([spender("m1", 100), spender("m2", 300), spender("m3", 200)])
    assert [s.member_id for s in ranked] == ["m2", "m3", "m1"]


def test_equal_spend_ranks_the_later_last_purchase_first() -> None:
    ranked = rank_customers([spender("m1", 500, days=1), spender("m2", 500, days=9),
                             spender("m3", 500, days=5)])
    assert [s.member_id for s in ranked] == ["m2", "m3", "m1"]


def test_equal_spend_and_last_purchase_rank_by_member_id_in_code_point_order() -> None:
    ids = ["m9", "m10", "Zed", "alice", "é", "会员"]
    ranked = rank_customers([spender(m, 700, days=3) for m in ids])
    assert [s.member_id for s in ranked] == ["Zed", "alice", "m10", "m9", "é", "会员"]


def test_members_without_positive_spend_are_not_ranked() -> None:
    ranked = rank_customers([spender("zero", 0), spender("refunded", -500), spender("m1", 1)])
    assert [s.member_id for s in ranked] == ["m1"]
    assert classify_customers([spender("zero", 0), spender("m1", 1)], P_A, P_B) == {"m1": "A"}


def test_no_spenders_gives_no_classes() -> None:
    assert classify_customers([spender("zero", 0)], P_A, P_B) == {}
    assert classify_customers([], P_A, P_B) == {}


def test_twenty_members_make_one_a_three_b_and_sixteen_c() -> None:
    members = [spender(f"m{i:02d}", 1000 * (20 - i)) for i in range(20)]
    classes = classify_customers(members, P_A, P_B)
    assert classes["m00"] == "A"
    assert [classes[f"m{i:02d}"] for i in (1, 2, 3)] == ["B", "B", "B"]
    assert {classes[f"m{i:02d}"] for i in range(4, 20)} == {"C"}


def test_a_tie_at_the_class_boundary_is_broken_the_same_way_every_time() -> None:
    # Twenty members, two share the top spend and last purchase: only one fits in A.
    members = [spender("m-b", 10_000, 2), spender("m-a", 10_000, 2)]
    members += [spender(f"x{i:02d}", 100 + i) for i in range(18)]
    for order in itertools.islice(itertools.permutations(members[:4]), 24):
        classes = classify_customers([*order, *members[4:]], P_A, P_B)
        assert (classes["m-a"], classes["m-b"]) == ("A", "B")


spenders_lists = st.lists(
    st.builds(Spender,
              member_id=st.text(alphabet="abcXYZ0189é会", min_size=1, max_size=4),
              spend_cents=st.integers(-1000, 5000),
              last_purchase_at=st.integers(0, 5).map(lambda d: T0 + timedelta(days=d))),
    max_size=60, unique_by=lambda s: s.member_id)


@FAST
@given(spenders_lists, st.sampled_from([Decimal("0.05"), Decimal("0.10")]))
def test_class_counts_are_exactly_the_ceilings(spenders: list[Spender], a_share: Decimal) -> None:
    classes = classify_customers(spenders, a_share, Decimal("0.2"))
    n = sum(1 for s in spenders if s.spend_cents > 0)
    assert set(classes) == {s.member_id for s in spenders if s.spend_cents > 0}
    counts = {c: list(classes.values()).count(c) for c in "ABC"}
    assert counts["A"] == ceil_share(a_share, n)
    assert counts["A"] + counts["B"] == ceil_share(Decimal("0.2"), n)
    assert sum(counts.values()) == n


@FAST
@given(spenders_lists, st.data())
def test_classes_do_not_depend_on_the_input_order(spenders: list[Spender],
                                                  data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(spenders))
    assert rank_customers(shuffled) == rank_customers(spenders)
    assert classify_customers(shuffled, P_A, P_B) == classify_customers(spenders, P_A, P_B)


@FAST
@given(spenders_lists)
def test_ranking_is_spend_then_recency_then_member_id(spenders: list[Spender]) -> None:
    ranked = rank_customers(spenders)
    expected = sorted((s for s in spenders if s.spend_cents > 0),
                      key=lambda s: (-s.spend_cents, T0 - s.last_purchase_at, s.member_id))
    assert ranked == expected
    classes = classify_customers(spenders, P_A, P_B)
    # Classes follow the ranking: nobody outranks a member of a better class.
    letters = [classes[s.member_id] for s in ranked]
    assert letters == sorted(letters)


# --- product classes ---------------------------------------------------------------------------


A_CUT, B_CUT = Decimal("0.70"), Decimal("0.90")


def test_product_table_for_a_textbook_catalogue() -> None:
    rows = classify_products({"e": 5, "c": 15, "a": 50, "d": 10, "b": 20}, A_CUT, B_CUT)
    assert rows == [
        ProductRow(1, "a", 50, Decimal("0.5"), Decimal("0.2"), Decimal("0.5"), "A"),
        ProductRow(2, "b", 20, Decimal("0.2"), Decimal("0.4"), Decimal("0.7"), "A"),
        ProductRow(3, "c", 15, Decimal("0.15"), Decimal("0.6"), Decimal("0.85"), "B"),
        ProductRow(4, "d", 10, Decimal("0.1"), Decimal("0.8"), Decimal("0.95"), "B"),
        ProductRow(5, "e", 5, Decimal("0.05"), Decimal("1"), Decimal("1"), "C"),
    ]


def test_single_item_with_eighty_percent_of_sales_is_a() -> None:
    rows = classify_products({"star": 80_00, "b1": 10_00, "c1": 6_00, "c2": 4_00}, A_CUT, B_CUT)
    assert [(r.sku, r.product_class) for r in rows] == [
        ("star", "A"), ("b1", "B"), ("c1", "C"), ("c2", "C")]


def test_only_item_is_a() -> None:
    rows = classify_products({"only": 1}, A_CUT, B_CUT)
    assert [(r.rank, r.sku, r.product_class, r.share, r.cumulative_sales)
            for r in rows] == [(1, "only", "A", Decimal(1), Decimal(1))]


def test_items_with_equal_sales_rank_by_sku() -> None:
    rows = classify_products({"sku-b": 100, "sku-a": 100, "SKU-c": 100, "sku-0": 300},
                             A_CUT, B_CUT)
    assert [r.sku for r in rows] == ["sku-0", "SKU-c", "sku-a", "sku-b"]


def test_items_without_sales_are_left_out() -> None:
    rows = classify_products({"sold": 500, "none": 0, "returned": -200}, A_CUT, B_CUT)
    assert [r.sku for r in rows] == ["sold"]
    assert classify_products({"none": 0}, A_CUT, B_CUT) == []
    assert classify_products({}, A_CUT, B_CUT) == []


def test_item_reached_exactly_at_the_cutoff_starts_the_next_class() -> None:
    # a + b reach 70% exactly, so c is B; a..d reach 90% exactly, so e is C.
    rows = classify_products({"a": 60, "b": 10, "c": 10, "d": 10, "e": 10}, A_CUT, B_CUT)
    assert [(r.sku, r.product_class) for r in rows] == [
        ("a", "A"), ("b", "A"), ("c", "B"), ("d", "B"), ("e", "C")]
    # One cent short of 70% keeps the next item in A.
    rows = classify_products({"a": 6999, "b": 2000, "c": 1001}, A_CUT, B_CUT)
    assert [r.product_class for r in rows] == ["A", "A", "B"]


def test_shop_may_move_the_a_cutoff() -> None:
    sales = {"a": 50, "b": 15, "c": 15, "d": 10, "e": 10}
    at_60 = [r.product_class for r in classify_products(sales, Decimal("0.60"), B_CUT)]
    at_80 = [r.product_class for r in classify_products(sales, Decimal("0.80"), B_CUT)]
    assert at_60 == ["A", "A", "B", "B", "C"]
    assert at_80 == ["A", "A", "A", "B", "C"]


def test_shares_are_exact_decimals() -> None:
    rows = classify_products({"a": 1, "b": 1, "c": 1, "d": 1, "e": 4}, A_CUT, B_CUT)
    assert [r.share for r in rows] == [Decimal("0.5"), Decimal("0.125"), Decimal("0.125"),
                                       Decimal("0.125"), Decimal("0.125")]
    assert sum(r.share for r in rows) == 1
    assert all(isinstance(v, Decimal) for r in rows
               for v in (r.share, r.cumulative_items, r.cumulative_sales))


sales_maps = st.dictionaries(st.text(alphabet="abcXY19-", min_size=1, max_size=4),
                             st.integers(-100, 100_000), max_size=40)
cutoffs = st.tuples(st.sampled_from(["0.60", "0.65", "0.70", "0.75", "0.80"]),
                    st.sampled_from(["0.85", "0.90", "0.95"])
                    ).map(lambda t: (Decimal(t[0]), Decimal(t[1])))


@FAST
@given(sales_maps, cutoffs)
def test_product_classes_cut_the_ranked_list_at_the_cumulative_share_of_items_above(
        sales: dict[str, int], cuts: tuple[Decimal, Decimal]) -> None:
    a_cut, b_cut = cuts
    rows = classify_products(sales, a_cut, b_cut)
    sold = sorted(((sku, c) for sku, c in sales.items() if c > 0), key=lambda x: (-x[1], x[0]))
    assert [(r.sku, r.sales_cents) for r in rows] == sold
    assert [r.rank for r in rows] == list(range(1, len(rows) + 1))
    if not rows:
        return
    total = sum(c for _, c in sold)
    above = 0
    for row in rows:
        share_above = Fraction(above, total)
        expected = ("A" if share_above < Fraction(a_cut) else
                    "B" if share_above < Fraction(b_cut) else "C")
        assert row.product_class == expected, row
        above += row.sales_cents
        assert row.cumulative_sales == Decimal(above) / total
        assert row.cumulative_items == Decimal(row.rank) / len(rows)
    assert rows[0].product_class == "A"
    assert rows[-1].cumulative_sales == Decimal(1)
    assert rows[-1].cumulative_items == Decimal(1)
    letters = [r.product_class for r in rows]
    assert letters == sorted(letters)
    assert [r.cumulative_sales for r in rows] == sorted(r.cumulative_sales for r in rows)
    # A is the smallest head reaching the cut-off: without its last item it falls short.
    a_sales = sum(r.sales_cents for r in rows if r.product_class == "A")
    a_last = max(r.rank for r in rows if r.product_class == "A")
    assert Fraction(a_sales - rows[a_last - 1].sales_cents, total) < Fraction(a_cut)
    if a_last < len(rows):
        assert Fraction(a_sales, total) >= Fraction(a_cut)


@FAST
@given(sales_maps, st.data())
def test_product_table_does_not_depend_on_the_input_order(sales: dict[str, int],
                                                          data: st.DataObject) -> None:
    shuffled = dict(data.draw(st.permutations(list(sales.items()))))
    assert classify_products(shuffled, A_CUT, B_CUT) == classify_products(sales, A_CUT, B_CUT)
