"""``trace.jsonl``: one JSON line per Picard iteration of a run, written as the run goes (so it can be
watched with ``tail -f``) and read back by the report.

A row holds the iteration, the steps it started from and reached, the steps accepted, the threshold
and the window's errors (in the solver's unit: the exact step's squared length), the exact step's
squared length, the RMS of the optimizer's gradient moving average, the cumulative time split and the
wall clock. Everything in it is read from what the solver already computed or from the exact state:
recording it never changes the optimization.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from dreampropeller.picard.solver import IterationInfo

TRACE = "trace.jsonl"
#: the optimizer's first moment of each parameter (functional Adam / AdamW state, see dreampropeller.optim)
_EXP_AVG = "optim/exp_avg/"


def finite(value: float | None, digits: int = 6) -> float | None:
    """``value`` rounded to ``digits`` significant digits, ``None`` when missing or not finite (JSON-safe)."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def gradient_ema_rms(state: Mapping[str, torch.Tensor]) -> float | None:
    """RMS over every optimized parameter of Adam's gradient moving average (``optim/exp_avg/*``).

    A unit returns the gradient of its loss, not the loss: for score distillation the loss value is
    only a surrogate whose size is the gradient's (½‖w(t)(ε̂ − ε)‖²), so the gradient's magnitude is
    the SDS term worth watching. ``None`` for optimizers without a first moment (plain SGD).
    """
    total, count = 0.0, 0
    with torch.no_grad():
        for key, value in state.items():
            if key.startswith(_EXP_AVG) and value.numel():
                total += float(value.detach().double().square().sum())
                count += value.numel()
    return math.sqrt(total / count) if count else None


def append_row(run_dir: Path, row: Mapping[str, Any]) -> None:
    """Append one iteration's row to ``run_dir/trace.jsonl`` (flushed at once, for live reading)."""
    with (Path(run_dir) / TRACE).open("a") as f:
        f.write(json.dumps(row, separators=(",", ":")) + "\n")


def read_trace(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``run_dir/trace.jsonl`` ([] when the run has none); a torn last line is skipped."""
    path = Path(run_dir) / TRACE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a run killed mid-write
    return rows


def truncate_after(run_dir: Path, step: int) -> None:
    """Drop the rows that reached past ``step`` (a run resumed from the checkpoint of ``step`` writes
    those iterations again)."""
    path = Path(run_dir) / TRACE
    if not path.is_file():
        return
    keep = [r for r in read_trace(run_dir) if int(r.get("step", 0)) <= step]
    path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in keep))


def trace_row(info: IterationInfo, start: int, units_before: int, wall_s: float) -> dict[str, Any]:
    """The row of one iteration (``start``: the step it started from; ``units_before``: the unit
    evaluations counted before it; ``wall_s``: seconds since the run started or resumed)."""
    s = info.stats
    return {
        "iteration": info.iteration,
        "start": start,
        "step": info.step,
        "accepted": info.accepted,
        "units": s.unit_evals - units_before,
        "threshold": finite(info.threshold),
        "errors": [finite(e, 4) for e in info.errors],
        "step_scale": finite(info.solver_state.get("step_scale")),
        "grad_ema_rms": finite(gradient_ema_rms(info.state)),
        "units_s": round(s.units_s, 4),
        "rollout_s": round(s.rollout_s, 4),
        "bookkeeping_s": round(s.bookkeeping_s, 4),
        "wall_s": round(wall_s, 4),
    }
