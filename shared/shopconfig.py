"""The declarative shop configuration file (YAML): one shop's settings, validated strictly.

Later capabilities add their sections (levels, tags, ABC, campaigns). An unknown or misspelt key
is refused with its path, never ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from services.campaigns.config import CampaignDefinition, campaign_problems
from services.tagging.config import Tagging
from services.tagging.rules import RuleError, compile_rule
from services.tiering.policy import AbcSettings, LevelPolicy
from services.tiering.rfm import OTHERS, RfmSettings
from shared.config_types import RuleBroken

ShopId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^\S+$")]

# The zone of a shop whose file names none. memberflow is made for Taobao and Tmall shops, which
# keep China's time; a shop elsewhere sets `timezone:`. `config check` and `config apply` say
# which zone is in effect, and when it is this default.
DEFAULT_TIMEZONE = "Asia/Shanghai"


class ShopConfig(BaseModel):
    """One shop's settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shop_id: ShopId
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "CNY"
    timezone: str = Field(
        DEFAULT_TIMEZONE,
        description="IANA time zone of the shop's days and hours: product ABC day ranges, the "
                    f"campaign report's days, dates in tag rules. Default {DEFAULT_TIMEZONE} "
                    "(the product targets Taobao/Tmall shops); set it for a shop elsewhere")
    levels: LevelPolicy | None = Field(
        None, description="membership levels; without it every member stays at level 0")
    abc: AbcSettings = AbcSettings()
    rfm: RfmSettings = Field(default_factory=RfmSettings,
                             description="the RFM segment map (see services/tiering/rfm.py)")
    tagging: Tagging = Field(default_factory=Tagging,
                             description="tag groups, tags and the rules that apply them")
    campaigns: list[CampaignDefinition] = Field(
        default_factory=list, description="campaigns declared with the shop (see also the CLI)")

    @property
    def timezone_is_default(self) -> bool:
        """Whether the zone is the default because the configuration does not name one.

        Known for a configuration as read from its file; a stored one names every setting."""
        return "timezone" not in self.model_fields_set

    def timezone_line(self) -> str:
        """The zone in effect, as `config check` and `config apply` print it."""
        if self.timezone_is_default:
            return f"time zone: {self.timezone} (the default; set `timezone:` to change it)"
        return f"time zone: {self.timezone}"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _across_sections(self) -> ShopConfig:
        # Dates in tag rules are read in the shop's time zone, so that is where they must hold.
        zone = ZoneInfo(self.timezone)
        problems = []
        segments = {s.id for s in self.rfm.segments} | {OTHERS}
        for i, rule in enumerate(self.tagging.rules):
            if rule.when is None:
                continue
            try:
                compiled = compile_rule(rule.when, zone)
            except RuleError as exc:
                problems.append((f"tagging.rules[{i}].when", str(exc)))
                continue
            # A misspelt segment would match nobody, silently.
            unknown = sorted(compiled.texts("rfm_segment") - segments)
            if unknown:
                problems.append((f"tagging.rules[{i}].when", (
                    f"rfm_segment {', '.join(map(repr, unknown))} is not a segment of the "
                    f"shop's RFM map ({', '.join(sorted(segments))})")))
        problems += campaign_problems(self.campaigns, {t.id for t in self.tagging.tags})
        for i, campaign in enumerate(self.campaigns):
            unknown = sorted(set(campaign.target.rfm_segments) - segments - {"none"})
            if unknown:
                problems.append((f"campaigns[{i}].target.rfm_segments", (
                    f"{', '.join(map(repr, unknown))} is not a segment of the shop's RFM map "
                    f"({', '.join(sorted(segments))}) or none")))
        if problems:
            raise RuleBroken(problems)
        return self


class ConfigError(ValueError):
    """A configuration file that cannot be applied; every message names the path of the key."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _message(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    if kind in ("value_error", "assertion_error"):
        return str((err.get("ctx") or {}).get("error", err["msg"]))
    msg: str = err["msg"]
    return msg[0].lower() + msg[1:] if msg else kind


def parse(data: Any, source: str = "config") -> ShopConfig:
    """Validate an already-loaded mapping."""
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): must be a mapping of settings"])
    try:
        return ShopConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            where = _path(tuple(err["loc"]))
            broken = (err.get("ctx") or {}).get("error")
            if isinstance(broken, RuleBroken):
                base = "" if where == "(top level)" else where + "."
                problems += [f"{base}{path}: {msg}" for path, msg in broken.problems]
                continue
            problems.append(f"{where}: {_message(err)}")
        raise ConfigError(source, problems) from None


def load(path: Path) -> ShopConfig:
    """Read and validate a shop configuration file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"not valid YAML ({exc})"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"not UTF-8 text (byte {exc.start})"]) from None
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot be read ({exc.strerror})"]) from None
    return parse(data, str(path))
