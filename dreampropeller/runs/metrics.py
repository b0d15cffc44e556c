"""What ``metrics.json`` of a finished run holds: steps, window, acceptance rule, iterations, unit
evaluations, rounds speedup and units per accepted step, wall clock and its split, communication,
threshold and acceptance traces (reported apart: rounds are not wall clock)."""

from __future__ import annotations

import math
from typing import Any

from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.picard.solver import SolverResult
from dreampropeller.runs.resolve import solver_config


def run_metrics(
    cfg: TextTo3DConfig,
    result: SolverResult,
    executor: str,
    train_s: float,
) -> dict[str, Any]:
    """The metrics of a finished solve of the resolved config ``cfg`` by ``executor``."""
    s = result.stats
    return {
        "prompt": cfg.prompt,
        "seed": cfg.seed,
        "prior": cfg.prior,
        "device": cfg.device,
        "steps": cfg.steps,
        "start": s.start,
        "window": cfg.picard.window,
        "executor": executor,
        "iterations": s.iterations,
        "unit_evals": s.unit_evals,
        "acceptance_rule": solver_config(cfg).rule,
        "rounds_speedup": round(s.rounds_speedup, 4),
        "units_per_step": round(s.unit_evals / max(sum(s.accepted), 1), 4),
        "wall_clock_s": round(train_s, 3),
        "comm_s_per_iteration": round(s.comm_s / max(s.iterations, 1), 6),
        "comm_share_of_wall": round(s.comm_s / train_s, 4) if train_s > 0 else 0.0,
        "wall_clock_split": {
            "units_s": round(s.units_s, 3),
            "rollout_s": round(s.rollout_s, 3),
            "bookkeeping_s": round(s.bookkeeping_s, 3),
            "comm_s": round(s.comm_s, 3),
        },
        "threshold_trace": [None if not math.isfinite(v) else round(v, 6) for v in s.thresholds],
        "accepted_trace": s.accepted,
    }
