"""Learning-rate schedules as pure functions of the Picard step ``t`` (0-based).

A schedule maps ``t`` to a multiplier of a group's base learning rate (``factor``), exactly what
``torch.optim.lr_scheduler.LambdaLR`` applies when ``scheduler.step()`` follows every
``optimizer.step()``: the lr of the ``(t+1)``-th optimizer step is ``base_lr * factor(t)``.
:class:`ExpInterp` given absolute ``lr_init`` / ``lr_final`` (the 3DGS / DreamGaussian position
schedule) returns that lr itself, ignoring the group's base lr.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from .errors import OptimConfigError


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise OptimConfigError(message)


@dataclass(frozen=True)
class Schedule:
    """Base class: a constant multiplier of 1."""

    name: ClassVar[str] = "constant"

    def factor(self, t: int) -> float:
        """Multiplier of the base lr at step ``t``."""
        return 1.0

    def lr(self, base_lr: float, t: int) -> float:
        """The learning rate used by step ``t`` for a group whose base lr is ``base_lr``."""
        return base_lr * self.factor(t)


@dataclass(frozen=True)
class Constant(Schedule):
    """lr = base lr at every step."""

    name: ClassVar[str] = "constant"


def _warmup_factor(t: int, warmup: int, start: float) -> float:
    """Linear ramp from ``start`` (t = 0) towards 1 (t = warmup)."""
    return start + (1.0 - start) * t / warmup


@dataclass(frozen=True)
class _WarmupDecay(Schedule):
    """Linear warm-up over ``warmup`` steps, then a decay shape from 1 to ``min_factor`` at ``total``."""

    warmup: int = 0
    total: int = 1000
    min_factor: float = 0.0
    warmup_start: float = 0.0

    def __post_init__(self) -> None:
        _check_warmup_total(self.warmup, self.total, self.min_factor, self.warmup_start)

    def decay(self, progress: float) -> float:
        """The decay shape: 1 at progress 0, 0 at progress 1."""
        raise NotImplementedError

    def factor(self, t: int) -> float:
        if t < self.warmup:
            return _warmup_factor(t, self.warmup, self.warmup_start)
        progress = min(1.0, (t - self.warmup) / max(1, self.total - self.warmup))
        return self.min_factor + (1.0 - self.min_factor) * self.decay(progress)


@dataclass(frozen=True)
class Linear(_WarmupDecay):
    """Linear warm-up over ``warmup`` steps, then linear decay to ``min_factor`` at ``total``."""

    name: ClassVar[str] = "linear"

    def decay(self, progress: float) -> float:
        return 1.0 - progress


@dataclass(frozen=True)
class Cosine(_WarmupDecay):
    """Linear warm-up over ``warmup`` steps, then half a cosine down to ``min_factor`` at ``total``."""

    name: ClassVar[str] = "cosine"

    def decay(self, progress: float) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def _check_warmup_total(warmup: int, total: int, min_factor: float, warmup_start: float) -> None:
    _check(warmup >= 0, f"schedule warmup must be >= 0, got {warmup}")
    _check(total >= warmup and total > 0, f"schedule total must be > 0 and >= warmup ({warmup}), got {total}")
    _check(0.0 <= min_factor <= 1.0, f"schedule min_factor must be in [0, 1], got {min_factor}")
    _check(0.0 <= warmup_start <= 1.0, f"schedule warmup_start must be in [0, 1], got {warmup_start}")


@dataclass(frozen=True)
class Exponential(Schedule):
    """``gamma ** t`` (torch's ExponentialLR)."""

    name: ClassVar[str] = "exponential"
    gamma: float = 1.0

    def __post_init__(self) -> None:
        _check(self.gamma > 0, f"exponential schedule gamma must be > 0, got {self.gamma}")

    def factor(self, t: int) -> float:
        return self.gamma**t


@dataclass(frozen=True)
class ExpInterp(Schedule):
    """Log-linear interpolation over ``max_steps``, held at the end value afterwards.

    Either relative (``final_factor``: multiplier 1 -> final_factor) or absolute (``lr_init`` ->
    ``lr_final``, the group's base lr is then ignored). ``delay_steps`` / ``delay_mult`` add the 3DGS
    sine warm-up from ``delay_mult`` to 1.
    """

    name: ClassVar[str] = "exp_interp"
    max_steps: int = 1000
    final_factor: float | None = None
    lr_init: float | None = None
    lr_final: float | None = None
    delay_steps: int = 0
    delay_mult: float = 1.0

    def __post_init__(self) -> None:
        absolute = self.lr_init is not None or self.lr_final is not None
        _check(
            absolute != (self.final_factor is not None),
            "exp_interp schedule needs either final_factor, or lr_init and lr_final (not both)",
        )
        if absolute:
            _check(
                self.lr_init is not None
                and self.lr_final is not None
                and self.lr_init > 0
                and self.lr_final > 0,
                f"exp_interp lr_init and lr_final must both be > 0, got {self.lr_init}, {self.lr_final}",
            )
        else:
            _check(self.final_factor > 0, f"exp_interp final_factor must be > 0, got {self.final_factor}")
        _check(self.max_steps > 0, f"exp_interp max_steps must be > 0, got {self.max_steps}")
        _check(self.delay_steps >= 0, f"exp_interp delay_steps must be >= 0, got {self.delay_steps}")
        _check(self.delay_mult > 0, f"exp_interp delay_mult must be > 0, got {self.delay_mult}")

    @property
    def absolute(self) -> bool:
        return self.lr_init is not None

    def _value(self, start: float, end: float, t: int) -> float:
        r = min(1.0, max(0.0, t / self.max_steps))
        value = math.exp(math.log(start) * (1.0 - r) + math.log(end) * r)
        if self.delay_steps > 0:
            d = min(1.0, max(0.0, t / self.delay_steps))
            value *= self.delay_mult + (1.0 - self.delay_mult) * math.sin(0.5 * math.pi * d)
        return value

    def factor(self, t: int) -> float:
        if self.absolute:
            return self._value(self.lr_init, self.lr_final, t) / self.lr_init
        return self._value(1.0, self.final_factor, t)

    def lr(self, base_lr: float, t: int) -> float:
        if self.absolute:
            return self._value(self.lr_init, self.lr_final, t)
        return base_lr * self.factor(t)


SCHEDULES: dict[str, type[Schedule]] = {
    cls.name: cls for cls in (Constant, Linear, Cosine, Exponential, ExpInterp)
}


def make_schedule(config: Schedule | Mapping[str, Any] | str | None) -> Schedule:
    """A schedule from a config mapping (``{"name": "cosine", "warmup": 100, ...}``), a name, or None.

    ``None`` gives the constant schedule; a :class:`Schedule` is returned as is.
    """
    if config is None:
        return Constant()
    if isinstance(config, Schedule):
        return config
    if isinstance(config, str):
        config = {"name": config}
    if not isinstance(config, Mapping):
        raise OptimConfigError(
            f"schedule config must be a mapping with a 'name', got {type(config).__name__}"
        )
    options = dict(config)
    name = options.pop("name", None)
    if name not in SCHEDULES:
        raise OptimConfigError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    cls = SCHEDULES[name]
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise OptimConfigError(
            f"unknown option(s) {unknown} for schedule {name!r}; allowed: {sorted(allowed)}"
        )
    return cls(**options)
