"""Live logging of a run (``logger: tensorboard``, ``--logger tensorboard``): each iteration's trace row
as TensorBoard scalars, and renders of the exact state every tenth of the run.

TensorBoard is an optional extra (``pip install "dreampropeller[tensorboard]"``); the run checks for
it before anything is written. Logs go to ``RUN_DIR/tensorboard``:
``tensorboard --logdir RUN_DIR/tensorboard``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dreampropeller.config.loading import ConfigError
from dreampropeller.picard.process import State

LOGGERS = ("none", "tensorboard")
LOG_DIR = "tensorboard"
#: how many renders a run logs (at every ``steps / RENDERS`` steps, and at the end)
RENDERS = 10

#: trace-row key -> TensorBoard tag
SCALARS = {
    "accepted": "picard/accepted_steps",
    "threshold": "picard/threshold",
    "units": "picard/units",
    "step_scale": "optim/exact_step_sq",
    "grad_ema_rms": "optim/gradient_ema_rms",
    "units_s": "time/units_s",
    "rollout_s": "time/rollout_s",
    "bookkeeping_s": "time/bookkeeping_s",
    "wall_s": "time/wall_s",
}

Render = Callable[[State, int], np.ndarray]
"""``render(state, step) -> uint8 image [H, W, 3]`` of the exact state at ``step``."""


def check_logger(name: str) -> None:
    """ConfigError (one line) for an unknown logger, or TensorBoard's when it is not installed."""
    if name not in LOGGERS:
        raise ConfigError(f"logger must be one of {', '.join(LOGGERS)}, got {name!r}")
    if name == "tensorboard":
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:
            raise ConfigError(
                'logger tensorboard needs TensorBoard: pip install "dreampropeller[tensorboard]"'
            ) from None


class TensorBoardLogger:
    """Writes trace rows as scalars (at the step each iteration reached) and periodic renders."""

    def __init__(self, log_dir: Path, steps: int, render: Render | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.render = render
        self.every = max(1, math.ceil(steps / RENDERS))
        self.steps = steps
        self.next_render = 0

    def log(self, row: Mapping[str, Any], state: State) -> None:
        """Log one iteration's ``row`` (see :mod:`dreampropeller.report.trace`) reached at ``state``."""
        step = int(row["step"])
        for key, tag in SCALARS.items():
            value = row.get(key)
            if value is not None:
                self.writer.add_scalar(tag, value, step)
        errors = [e for e in row.get("errors", []) if e is not None]
        if errors:
            self.writer.add_scalar("picard/error_max", max(errors), step)
            self.writer.add_scalar("picard/error_median", float(np.median(errors)), step)
        if self.render is not None and (step >= self.next_render or step >= self.steps):
            self.writer.add_image("render/turntable", self.render(state, step), step, dataformats="HWC")
            self.next_render = (step // self.every + 1) * self.every
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


def make_logger(
    name: str, run_dir: Path, steps: int, render: Render | None = None
) -> TensorBoardLogger | None:
    """The run's live logger (``None`` for ``none``)."""
    check_logger(name)
    if name == "tensorboard":
        return TensorBoardLogger(Path(run_dir) / LOG_DIR, steps, render)
    return None
