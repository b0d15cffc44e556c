"""The base executor and the ``sequential`` one: one unit after another (the baseline, ``p = 1``).

An executor's ``evaluate(process, states, ts)`` returns the drifts of the window, in order, on the
device of the input states. Executors report the seconds they spent communicating (moving states and
drifts between devices or ranks) in ``comm_seconds``.
"""

from __future__ import annotations

from collections.abc import Sequence

from dreampropeller.picard.process import Drift, Process, State


class Executor:
    """Base executor: one unit after another (the ``sequential`` executor)."""

    name = "sequential"

    def __init__(self) -> None:
        self.comm_seconds = 0.0

    def bind(self, process: Process) -> None:
        """Prepare for ``process`` (replicas, process groups). Called once by the solver."""

    def evaluate(self, process: Process, states: Sequence[State], ts: Sequence[int]) -> list[Drift]:
        """Drifts ``unit(states[i], ts[i])`` for the window."""
        return [process.unit(x, t) for x, t in zip(states, ts, strict=True)]

    @property
    def parallel_width(self) -> int:
        """How many units this executor can compute at the same time (1 for sequential)."""
        return 1

    def close(self) -> None:
        """Release threads, replicas or process groups."""


SequentialExecutor = Executor
