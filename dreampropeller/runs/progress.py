"""The progress of a run: a tqdm bar of accepted steps with Picard iterations and the threshold, a
checkpoint (state + the solver's resumable state) every ``checkpoint_every_s`` seconds, each iteration's
row in ``trace.jsonl`` (read by the report) and, with ``logger: tensorboard``, live TensorBoard logs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.picard.process import State
from dreampropeller.picard.solver import IterationInfo
from dreampropeller.report.live import make_logger
from dreampropeller.report.trace import append_row, trace_row, truncate_after
from dreampropeller.runs.assets import asset_of
from dreampropeller.runs.directory import save_run_checkpoint
from dreampropeller.scene.cameras import turntable

RENDER_SIZE, RENDER_SAMPLES = 96, 32  # each of the four views a live logger shows: px, samples per ray


@dataclass
class Progress:
    """The solver callback of a run writing into ``out``."""

    out: Path
    total: int
    start: int
    enabled: bool = True
    checkpoint_every_s: float = 60.0
    cfg: TextTo3DConfig | None = None
    """The resolved config: its ``logger`` (and the renders a logger shows)."""
    workers: Callable[[], list[State]] | None = None
    """Every worker's state outside the Picard state, saved with each checkpoint (a VSD worker LoRA)."""

    def __post_init__(self) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=self.total, initial=self.start, disable=not self.enabled, unit="step", dynamic_ncols=True
        )
        self.last_save = self.t0 = time.perf_counter()
        self.last_step, self.last_units = self.start, 0
        truncate_after(self.out, self.start)  # a resumed run writes the iterations after its checkpoint again
        name = self.cfg.logger if self.cfg is not None else "none"
        self.logger = make_logger(name, self.out, self.total, self._render) if name != "none" else None

    def __call__(self, info: IterationInfo) -> None:
        self.bar.update(info.accepted)
        self.bar.set_postfix(
            iters=info.iteration, speedup=f"{info.stats.rounds_speedup:.2f}x", thr=f"{info.threshold:.3g}"
        )
        if time.perf_counter() - self.last_save > self.checkpoint_every_s:
            workers = self.workers() if self.workers is not None else []
            save_run_checkpoint(self.out, info.state, info.step, info.solver_state, workers)
            self.last_save = time.perf_counter()
        row = trace_row(info, self.last_step, self.last_units, time.perf_counter() - self.t0)
        self.last_step, self.last_units = info.step, info.stats.unit_evals
        append_row(self.out, row)
        if self.logger is not None:
            self.logger.log(row, info.state)

    def _render(self, state: State, step: int) -> np.ndarray:
        """Four turntable views of the exact ``state`` side by side (uint8 [H, 4W, 3]), as exported."""
        e = self.cfg.export
        with torch.no_grad():
            render = asset_of(self.cfg, state, step).render_fn(RENDER_SIZE, RENDER_SAMPLES, skip_empty=True)
            rgb, _ = render(turntable(4, e.elevation, e.distance, e.fovy))
        return (rgb.clamp(0, 1) * 255).round().byte().permute(1, 0, 2, 3).flatten(1, 2).cpu().numpy()

    def close(self) -> None:
        self.bar.close()
        if self.logger is not None:
            self.logger.close()
