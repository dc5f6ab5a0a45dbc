"""RFM: recency, frequency and monetary value of a shop's buyers, scored 1-4, and named
segments (SPEC §3).

Over the buyers of a period (members with a completed trade in it):

- **recency** R: whole 24-hour days from the member's last completed trade to the shop's clock;
- **frequency** F: distinct purchase days (shop days, in the shop's time zone);
- **monetary** M: net spend (after refunds) per purchase day, in cents.

**The quartile rule.** For each dimension, the edges are the buyers' 25th, 50th and 75th
percentiles taken as values that occur (`percentile_disc`: the smallest value at least that share
of buyers have or stay under). Equal edges merge, so a dimension whose values repeat has fewer
edges and fewer scores. A buyer's score is 1 plus the number of edges their value is above. The
rule is the same for all three; recency is scored on its negation, so fewer days score higher.
Examples: F of [1, 2, 3, 4] scores 1, 2, 3, 4; F of [1, 1, 1, 5] has the single edge 1 and scores
1, 1, 1, 2; when every buyer has the same value, everyone scores 1.

**Segments** map score patterns to names, first match wins; a shop may give its own map
(`rfm: segments:` in its configuration), else `DEFAULT_SEGMENTS` applies.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from fractions import Fraction
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

QUARTILES = (0.25, 0.5, 0.75)
_RANGE = re.compile(r"^(\*|[1-4](-[1-4])?)$")

Scores = Annotated[str, Field(description='a score "3", a range "2-4", or "*" for any')]


class Segment(BaseModel):
    """A named segment: the members whose R, F and M scores fall in the given ranges."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")]
    name: Annotated[str, StringConstraints(min_length=1, max_length=60)]
    r: Scores = "*"
    f: Scores = "*"
    m: Scores = "*"

    @field_validator("r", "f", "m")
    @classmethod
    def _range(cls, value: str) -> str:
        value = value.strip()
        if not _RANGE.match(value) or ("-" in value and value[0] > value[-1]):
            raise ValueError(f"{value!r} is not a score 1-4, a range like 2-4, or *")
        return value

    def bounds(self, dimension: str) -> tuple[int, int]:
        value = getattr(self, dimension)
        if value == "*":
            return 1, 4
        return int(value[0]), int(value[-1])

    def holds(self, r: int, f: int, m: int) -> bool:
        return all(lo <= score <= hi for score, (lo, hi) in
                   zip((r, f, m), (self.bounds("r"), self.bounds("f"), self.bounds("m")),
                       strict=True))


DEFAULT_SEGMENTS = (
    Segment(id="champions", name="Champions", r="4", f="3-4", m="3-4"),
    Segment(id="loyal", name="Loyal", r="3-4", f="3-4"),
    Segment(id="new", name="New", r="4", f="1"),
    Segment(id="potential", name="Potential", r="3-4", f="1-2"),
    Segment(id="at-risk", name="At risk", r="2", f="2-4"),
    Segment(id="at-risk", name="At risk", r="1", f="3-4", m="3-4"),
    Segment(id="hibernating", name="Hibernating", r="2", f="1"),
    Segment(id="lost", name="Lost", r="1"),
)
# A completed trade's net amount: what it was bought for less what was refunded on it.
NET = "(coalesce(o.amount_cents, 0) - coalesce(o.refunded_cents, 0))"
OTHERS = "others"   # no segment of the map matches (a shop's own map may leave gaps)


class RfmSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    period_days: int = Field(365, ge=7, le=3660, description=(
        "the buyers scored in each member's record: those with a completed trade in this many "
        "days up to the shop's clock; also the period the predicted value is fitted on"))
    horizon_days: int = Field(90, ge=1, le=3660, description=(
        "the predicted value in each member's record: expected purchases and their value over "
        "this many days"))
    segments: list[Segment] = Field(
        default_factory=lambda: list(DEFAULT_SEGMENTS), max_length=64,
        description="score patterns to segment names, first match wins (default: champions, "
                    "loyal, new, potential, at-risk, hibernating, lost)")


def edges(values: Sequence[int]) -> list[int]:
    """The distinct quartile edges of `values` (the rule in the module docstring)."""
    ordered = sorted(values)
    if not ordered:
        return []
    # percentile_disc(q): the first value (1-based position p) whose share p/n reaches q.
    return sorted({ordered[max(0, math.ceil(Fraction(str(q)) * len(ordered)) - 1)]
                   for q in QUARTILES})


def score(value: int, found_edges: Sequence[int]) -> int:
    return 1 + sum(1 for e in found_edges if value > e)


def segment_names(segments: Sequence[Segment]) -> dict[str, str]:
    """Segment names by id, in the map's order; an id listed twice keeps its first name, and
    members no segment matches are `others`."""
    names: dict[str, str] = {}
    for s in segments:
        names.setdefault(s.id, s.name)
    return names | {OTHERS: OTHERS}


def segment_of(r: int, f: int, m: int, segments: Sequence[Segment]) -> str:
    return next((s.id for s in segments if s.holds(r, f, m)), OTHERS)



def segment_sql(segments: Sequence[Segment], r: str = "r_score", f: str = "f_score",
                m: str = "m_score") -> str:
    """`segment_of` in SQL over the score columns `r`, `f`, `m`: one CASE, first match wins.
    Segment ids and scores are validated by `Segment`, so they are written in as literals."""
    whens = []
    for s in segments:
        tests = [f"{col} BETWEEN {lo} AND {hi}" for col, (lo, hi) in
                 zip((r, f, m), (s.bounds("r"), s.bounds("f"), s.bounds("m")), strict=True)
                 if (lo, hi) != (1, 4)]
        whens.append(f"WHEN {' AND '.join(tests) or 'true'} THEN '{s.id}'")
    return f"CASE {' '.join(whens)} ELSE '{OTHERS}' END"


def values_sql(orders: str, net: str) -> str:
    """Each buyer's (member_id, r, f, m, trades, spend, last) over the completed trades
    `orders` (a FROM body naming them `o`, with the period's end as `%(p_end)s` and the shop's
    time zone as `%(tz)s`): r is the negated recency in days (see `scored_sql`) of their last
    purchase `last`, f the purchase days, m the net spend per purchase day. One grouping per
    member, the purchase days counted distinct within it (PostgreSQL sorts each member's few
    days where a grouping per member and day first sorted and grouped every trade twice)."""
    day = "(o.completed_at AT TIME ZONE %(tz)s)::date"
    return (
        "SELECT o.member_id, max(o.completed_at) AS last, "
        "  -floor(extract(epoch FROM (%(p_end)s - max(o.completed_at))) / 86400)::bigint AS r, "
        f"  count(DISTINCT {day}) AS f, "
        f"  round(sum({net})::numeric / count(DISTINCT {day}))::bigint AS m, "
        f"  count(*) AS trades, sum({net}) AS spend FROM {orders} GROUP BY o.member_id")


def scored_sql(values: str, outer: str = "SELECT v.*, {scores}, e.r AS r_edges, "
               "e.f AS f_edges, e.m AS m_edges FROM v, e") -> str:
    """Scores for the rows of `values` (a query with member_id, r, f, m; r the negated days):
    each dimension's distinct quartile edges (`e`), then 1 + the number of edges a value is
    above (the rule above). `outer` selects from `v` and `e`; `{scores}` in it stands for the
    three scores."""
    def scored(col: str) -> str:
        # The edges come in rising order (percentiles of rising fractions): an edge equal to
        # the one before it is not counted again.
        e = f"e.{col}"
        return (f"1 + (v.{col} > {e}[1])::int + (v.{col} > {e}[2] AND {e}[2] > {e}[1])::int "
                f"+ (v.{col} > {e}[3] AND {e}[3] > {e}[2])::int AS {col}_score")
    scores = f"{scored('r')}, {scored('f')}, {scored('m')}"
    return (f"WITH v AS MATERIALIZED ({values}), e AS (SELECT "
            "  percentile_disc(ARRAY[0.25, 0.5, 0.75]) WITHIN GROUP (ORDER BY r) AS r, "
            "  percentile_disc(ARRAY[0.25, 0.5, 0.75]) WITHIN GROUP (ORDER BY f) AS f, "
            "  percentile_disc(ARRAY[0.25, 0.5, 0.75]) WITHIN GROUP (ORDER BY m) AS m FROM v) "
            + outer.format(scores=scores))
