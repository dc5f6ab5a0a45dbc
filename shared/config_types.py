"""What every section of a shop configuration shares: the error that names a broken key, and the
value types several sections use (ids, names, amounts).

Each service owns its own section (levels and ABC in `services.tiering.policy`, tags in
`services.tagging.config`, campaigns in `services.campaigns.config`); `shared.shopconfig`
composes them into the one file an operator writes.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import Field, StringConstraints

Key = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^\S+$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=60, strip_whitespace=True)]
Amount = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=2)]


class RuleBroken(ValueError):
    """A configuration that is well-formed but breaks a rule; each problem names its key."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {msg}" for path, msg in problems))
