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

    def worker_states(self, process: Process) -> list[State]:
        """Every worker's state outside the Picard state (``process.worker_state()``; one per replica
        for executors that keep replicas); empty entries dropped, so most processes give ``[]``."""
        get = getattr(process, "worker_state", None)
        state = get() if get is not None else {}
        return [state] if state else []

    def load_worker_states(self, process: Process, states: Sequence[State]) -> None:
        """Restore :meth:`worker_states` (resume); the number of states must match."""
        if not states:
            return
        if len(states) != 1:
            raise ValueError(
                f"the checkpoint holds {len(states)} workers' state but the {self.name} executor has one: "
                "resume with the executor and devices it was started with"
            )
        process.load_worker_state(states[0])

    @property
    def parallel_width(self) -> int:
        """How many units this executor can compute at the same time (1 for sequential)."""
        return 1

    def close(self) -> None:
        """Release threads, replicas or process groups."""


SequentialExecutor = Executor
