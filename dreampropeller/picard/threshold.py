"""Adaptive error thresholds: ``thr <- ema * thr + (1 - ema) * agg(errors)``.

``agg`` is ``mean``, a true ``median`` (mean of the two middle values for an even count), or
``middle``: the error at the window's middle position, which is what the DreamPropeller authors'
code calls "median".
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

AGGREGATES = ("mean", "median", "middle")


def aggregate_errors(errors: Sequence[float], rule: str) -> float | None:
    """Aggregate the finite errors of one window by ``rule``; ``None`` when there is nothing finite."""
    if rule not in AGGREGATES:
        raise ValueError(f"unknown threshold aggregate {rule!r}: use one of {', '.join(AGGREGATES)}")
    if rule == "middle":
        if not errors:
            return None
        value = errors[len(errors) // 2]
        if math.isfinite(value):
            return value
        finite = [e for e in errors[: len(errors) // 2] if math.isfinite(e)]
        return finite[-1] if finite else None
    finite = [e for e in errors if math.isfinite(e)]
    if not finite:
        return None
    return statistics.fmean(finite) if rule == "mean" else statistics.median(finite)


@dataclass
class AdaptiveThreshold:
    """The acceptance threshold of the solver.

    ``value=None`` starts from the first window's aggregated error (scale free). With
    ``adaptive=False`` the value never changes (``value=0`` reproduces the sequential run exactly).
    """

    value: float | None = None
    adaptive: bool = True
    ema: float = 0.9
    rule: str = "middle"
    maximum: float = math.inf

    def __post_init__(self) -> None:
        if self.value is not None and (not math.isfinite(self.value) or self.value < 0):
            raise ValueError(f"threshold must be a finite number >= 0, got {self.value}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")
        if self.rule not in AGGREGATES:
            raise ValueError(f"unknown threshold aggregate {self.rule!r}: use one of {', '.join(AGGREGATES)}")
        if self.value is None and not self.adaptive:
            raise ValueError("a fixed (non-adaptive) threshold needs a start value")

    def current(self, errors: Sequence[float]) -> float:
        """The threshold to judge ``errors`` with (initializes an automatic start value)."""
        if self.value is None:
            agg = aggregate_errors(errors, self.rule)
            self.value = min(agg, self.maximum) if agg is not None else 0.0
        return self.value

    def observe(self, errors: Sequence[float]) -> None:
        """Fold one window's errors into the threshold (no-op when fixed)."""
        if not self.adaptive:
            return
        agg = aggregate_errors(errors, self.rule)
        if agg is None:
            return
        value = agg if self.value is None else self.ema * self.value + (1.0 - self.ema) * agg
        self.value = min(value, self.maximum)
