"""The progress of a run: a tqdm bar of accepted steps with Picard iterations and the threshold, and
a checkpoint (state + the solver's resumable state) every ``checkpoint_every_s`` seconds."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from dreampropeller.picard.solver import IterationInfo
from dreampropeller.runs.directory import save_run_checkpoint


@dataclass
class Progress:
    """The solver callback of a run writing into ``out``."""

    out: Path
    total: int
    start: int
    enabled: bool = True
    checkpoint_every_s: float = 60.0

    def __post_init__(self) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=self.total, initial=self.start, disable=not self.enabled, unit="step", dynamic_ncols=True
        )
        self.last_save = time.perf_counter()

    def __call__(self, info: IterationInfo) -> None:
        self.bar.update(info.accepted)
        self.bar.set_postfix(
            iters=info.iteration, speedup=f"{info.stats.rounds_speedup:.2f}x", thr=f"{info.threshold:.3g}"
        )
        if time.perf_counter() - self.last_save > self.checkpoint_every_s:
            save_run_checkpoint(self.out, info.state, info.step, info.solver_state)
            self.last_save = time.perf_counter()

    def close(self) -> None:
        self.bar.close()
