"""The `tagging` section of a shop configuration: tag groups, tags and the rules that apply them.

```yaml
tagging:
  groups:                       # two levels: groups, and sub-groups inside a group
    - {id: value, name: Value, groups: [{id: value-top, name: Top spenders}]}
  tags:                         # at most 100 per shop
    - {id: big-spender, name: 大客户, group: value-top}
    - {id: vip-care, name: VIP care}               # no rule: applied by operators only
  rules:
    - {id: r-big, tag: big-spender, when: "spend >= 500 and trades >= 3"}
    - {id: g-tea, tag: tea-lover, goods: [SKU-0001, SKU-0002]}   # at most 10 SKUs
```

A tag with a `when` rule is kept equal to its rule (added when it holds, removed when it stops
holding); operators cannot tag or untag it by hand. Goods rules add their tag when a member
completes a trade with one of the SKUs, and operators may add or remove such tags too.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from services.tagging.rules import RuleError, compile_rule
from shared.config_types import Key, Name, RuleBroken

MAX_TAGS = 100
MAX_GOODS_SKUS = 10

Sku = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^\S(.*\S)?$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SubGroup(_Strict):
    id: Key
    name: Name
    groups: list[Any] | None = Field(None, description="refused: two levels at most")

    @model_validator(mode="after")
    def _two_levels(self) -> SubGroup:
        if self.groups is not None:
            raise RuleBroken([("groups", "groups are two levels deep at most: a sub-group "
                                         "cannot hold groups")])
        return self


class TagGroup(_Strict):
    """A group of tags; it may hold sub-groups (one level further, no deeper)."""

    id: Key
    name: Name
    groups: list[SubGroup] = Field(default_factory=list, description="sub-groups")


class Tag(_Strict):
    id: Key
    name: Name
    group: Key | None = Field(None, description="the id of a group or sub-group")
    description: Annotated[str, StringConstraints(max_length=500)] | None = None


class TagRule(_Strict):
    """Applies `tag` automatically: `when` an expression over the member's figures holds, or
    when the member buys one of the `goods`."""

    id: Key
    tag: Key
    when: Annotated[str, StringConstraints(min_length=1, max_length=2000)] | None = None
    goods: list[Sku] | None = None

    @property
    def kind(self) -> str:
        return "rule" if self.when is not None else "goods"


class Tagging(_Strict):
    groups: list[TagGroup] = Field(default_factory=list)
    tags: list[Tag] = Field(default_factory=list)
    rules: list[TagRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rules(self) -> Tagging:
        problems = _group_problems(self) + _tag_problems(self) + _rule_problems(self)
        if problems:
            raise RuleBroken(problems)
        return self

    def group_ids(self) -> dict[str, str | None]:
        """Every group and sub-group id, with its parent group (None at the top)."""
        out: dict[str, str | None] = {}
        for g in self.groups:
            out[g.id] = None
            for sub in g.groups:
                out[sub.id] = g.id
        return out

    def tag(self, tag_id: str) -> Tag | None:
        return next((t for t in self.tags if t.id == tag_id), None)

    def rule_maintained(self) -> dict[str, TagRule]:
        """Tags kept equal to a `when` rule, with that rule."""
        return {r.tag: r for r in self.rules if r.when is not None}

    def goods_rules(self) -> list[TagRule]:
        return [r for r in self.rules if r.goods is not None]


def _duplicates(ids: list[str]) -> list[str]:
    return sorted(i for i, n in Counter(ids).items() if n > 1)


def _group_problems(cfg: Tagging) -> list[tuple[str, str]]:
    ids = [g.id for g in cfg.groups] + [s.id for g in cfg.groups for s in g.groups]
    return [("groups", f"group id {dup!r} is used more than once") for dup in _duplicates(ids)]


def _tag_problems(cfg: Tagging) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if len(cfg.tags) > MAX_TAGS:
        problems.append((f"tags[{MAX_TAGS}]",
                         f"a shop has at most {MAX_TAGS} tags: {cfg.tags[MAX_TAGS].id!r} would "
                         f"be tag number {MAX_TAGS + 1} (of {len(cfg.tags)})"))
    for dup in _duplicates([t.id for t in cfg.tags]):
        problems.append(("tags", f"tag id {dup!r} is used more than once"))
    groups = cfg.group_ids()
    for i, tag in enumerate(cfg.tags):
        if tag.group is not None and tag.group not in groups:
            problems.append((f"tags[{i}].group", f"no group {tag.group!r} (groups: "
                                                 f"{', '.join(sorted(groups)) or 'none'})"))
    return problems


def _rule_problems(cfg: Tagging) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    tags = {t.id for t in cfg.tags}
    for dup in _duplicates([r.id for r in cfg.rules]):
        problems.append(("rules", f"rule id {dup!r} is used more than once"))
    maintained: dict[str, str] = {}
    for i, rule in enumerate(cfg.rules):
        at = f"rules[{i}]"
        if rule.tag not in tags:
            problems.append((f"{at}.tag", f"no tag {rule.tag!r} in tags"))
        if (rule.when is None) == (rule.goods is None):
            problems.append((at, "give exactly one of when (a condition over the member's "
                                 "figures) or goods (a list of SKUs)"))
            continue
        if rule.when is not None:
            try:
                compile_rule(rule.when)
            except RuleError as exc:
                problems.append((f"{at}.when", str(exc)))
            if rule.tag in maintained:
                problems.append((f"{at}.tag", f"tag {rule.tag!r} already follows rule "
                                              f"{maintained[rule.tag]!r}; combine the "
                                              "conditions with or"))
            maintained.setdefault(rule.tag, rule.id)
        elif rule.goods is not None:
            if not rule.goods:
                problems.append((f"{at}.goods", "name at least one SKU"))
            elif len(rule.goods) > MAX_GOODS_SKUS:
                problems.append((f"{at}.goods[{MAX_GOODS_SKUS}]",
                                 f"a goods rule names at most {MAX_GOODS_SKUS} SKUs: "
                                 f"{rule.goods[MAX_GOODS_SKUS]!r} would be SKU number "
                                 f"{MAX_GOODS_SKUS + 1} (of {len(rule.goods)})"))
            for dup in _duplicates(list(rule.goods)):
                problems.append((f"{at}.goods", f"SKU {dup!r} is listed more than once"))
    for i, rule in enumerate(cfg.rules):
        if rule.goods is not None and rule.tag in maintained:
            problems.append((f"rules[{i}].tag",
                             f"tag {rule.tag!r} follows the condition of rule "
                             f"{maintained[rule.tag]!r}, so goods cannot apply it too"))
    return problems
