"""Parameter groups: which parameters get which hyper-parameters.

A group selects parameters by exact name or fnmatch pattern (``"encoding.*"``); the first group that
matches a name wins; unmatched names use the optimizer's defaults (or are an error when strict).
A field left ``None`` inherits the optimizer's default.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .errors import OptimConfigError
from .schedules import Schedule, make_schedule


@dataclass(frozen=True)
class ParamGroup:
    """Hyper-parameter overrides for the parameters whose names match ``names``."""

    names: tuple[str, ...]
    lr: float | None = None
    schedule: Schedule | Mapping[str, Any] | str | None = None
    weight_decay: float | None = None
    betas: tuple[float, float] | None = None
    eps: float | None = None
    amsgrad: bool | None = None
    momentum: float | None = None
    dampening: float | None = None
    nesterov: bool | None = None

    def __post_init__(self) -> None:
        names = (self.names,) if isinstance(self.names, str) else tuple(self.names)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise OptimConfigError(
                f"a parameter group needs a non-empty list of names/patterns, got {self.names!r}"
            )
        object.__setattr__(self, "names", names)
        if self.schedule is not None:
            object.__setattr__(self, "schedule", make_schedule(self.schedule))
        if self.betas is not None:
            object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))

    def matches(self, name: str) -> bool:
        """True when ``name`` equals one of the names or matches one of the patterns."""
        return any(name == pattern or fnmatch.fnmatchcase(name, pattern) for pattern in self.names)

    def overrides(self) -> dict[str, Any]:
        """The fields this group sets (everything but ``names`` that is not ``None``)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "names" and getattr(self, f.name) is not None
        }

    @classmethod
    def from_config(cls, config: ParamGroup | Mapping[str, Any]) -> ParamGroup:
        """A group from a mapping such as ``{"names": ["encoding.*"], "lr": 0.01}``."""
        if isinstance(config, ParamGroup):
            return config
        if not isinstance(config, Mapping):
            raise OptimConfigError(f"a parameter group must be a mapping, got {type(config).__name__}")
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - allowed)
        if unknown:
            raise OptimConfigError(f"unknown parameter-group option(s) {unknown}; allowed: {sorted(allowed)}")
        if "names" not in config:
            raise OptimConfigError("a parameter group needs 'names' (exact names or fnmatch patterns)")
        return cls(**dict(config))


def first_match(groups: tuple[ParamGroup, ...], name: str) -> int:
    """Index of the first group matching ``name``, or -1 when none does."""
    for i, group in enumerate(groups):
        if group.matches(name):
            return i
    return -1
