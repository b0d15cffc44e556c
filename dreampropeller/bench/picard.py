"""`bench picard`: sequential vs propelled runs of the benchmark problems, side by side in one process."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from dreampropeller.bench.problems import make_problem
from dreampropeller.picard.executors import Executor
from dreampropeller.picard.process import State
from dreampropeller.picard.solver import PicardSolver, SolverConfig, run_sequential

DEFAULT_PROBLEMS = ("quadratic", "mlp", "nonconvex", "growing")
STRICT = {"threshold": 0.1, "adaptive": False}


def states_equal(a: State, b: State) -> bool:
    """Bit-for-bit equality of two states (same keys, shapes, values)."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def relative_deviation(a: State, b: State, keys: Sequence[str]) -> float:
    """``||a - b|| / ||b||`` over ``keys`` (inf where shapes differ)."""
    num = den = 0.0
    for k in keys:
        if a[k].shape != b[k].shape:
            return float("inf")
        num += float((a[k].double() - b[k].double()).square().sum())
        den += float(b[k].double().square().sum())
    return (num / max(den, 1e-300)) ** 0.5


def bench_problem(
    name: str,
    window: int = 8,
    config: dict[str, Any] | None = None,
    executor: Executor | None = None,
    steps: int | None = None,
    windows: Sequence[int] = (2, 4, 8, 16),
    check_exact: bool = True,
) -> dict[str, Any]:
    """One problem: sequential, propelled (default rule and a strict rule), exactness at threshold 0."""
    problem = make_problem(name, steps=steps)
    proc, x0, T = problem.process, problem.x0, problem.steps
    t0 = time.perf_counter()
    seq = run_sequential(proc, x0, T)
    seq_s = time.perf_counter() - t0
    cfg = dict(config or {})
    t1 = time.perf_counter()
    prop = PicardSolver(proc, SolverConfig(window=window, **cfg), executor=executor).run(x0, T)
    prop_s = time.perf_counter() - t1
    strict = PicardSolver(proc, SolverConfig(window=window, **STRICT), executor=executor).run(x0, T)
    exact = None
    if check_exact:
        zero = PicardSolver(
            proc, SolverConfig(window=window, threshold=0.0, adaptive=False), executor=executor
        )
        exact = states_equal(zero.run(x0, T).state, seq.state)
    loss_seq = problem.report_loss(seq.state)
    loss_prop = problem.report_loss(prop.state)
    sweep = {}
    for p in windows:
        r = PicardSolver(proc, SolverConfig(window=p, **cfg), executor=executor).run(x0, T)
        sweep[str(p)] = round(r.stats.rounds_speedup, 3)
    return {
        "name": name,
        "T": T,
        "window": window,
        "iterations": prop.stats.iterations,
        "unit_evals": prop.stats.unit_evals,
        "rounds_speedup": round(T / max(prop.stats.iterations, 1), 3),
        "loss_sequential": loss_seq,
        "loss_propelled": loss_prop,
        "loss_rel_change": (loss_prop - loss_seq) / abs(loss_seq) if loss_seq else 0.0,
        "rel_deviation": relative_deviation(prop.state, seq.state, proc.param_keys),
        "exact_at_zero_threshold": exact,
        "status": prop.stats.status,
        "wall_s_sequential": round(seq_s, 4),
        "wall_s_propelled": round(prop_s, 4),
        "wall_split_propelled": {
            "units_s": round(prop.stats.units_s, 4),
            "rollout_s": round(prop.stats.rollout_s, 4),
            "bookkeeping_s": round(prop.stats.bookkeeping_s, 4),
            "comm_s": round(prop.stats.comm_s, 4),
        },
        "strict": {
            "rule": STRICT,
            "rounds_speedup": round(T / max(strict.stats.iterations, 1), 3),
            "loss_propelled": problem.report_loss(strict.state),
            "loss_rel_change": (problem.report_loss(strict.state) - loss_seq) / abs(loss_seq)
            if loss_seq
            else 0.0,
        },
        "rounds_speedup_by_window": sweep,
    }


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """A text table of rounds_speedup per window, plus the quality columns."""
    windows = list(results[0]["rounds_speedup_by_window"]) if results else []
    head = f"{'problem':<11}" + "".join(f"{'p=' + w:>8}" for w in windows)
    head += f"{'loss seq':>12}{'loss prop':>12}{'d loss':>9}{'strict x':>10}{'strict d':>10}{'exact@0':>9}"
    lines = [head]
    for r in results:
        row = f"{r['name']:<11}" + "".join(f"{r['rounds_speedup_by_window'][w]:>8.2f}" for w in windows)
        row += f"{r['loss_sequential']:>12.4g}{r['loss_propelled']:>12.4g}{r['loss_rel_change']:>+9.2%}"
        row += f"{r['strict']['rounds_speedup']:>10.2f}{r['strict']['loss_rel_change']:>+10.2%}"
        row += f"{r['exact_at_zero_threshold']!s:>9}"
        lines.append(row)
    return "\n".join(lines)
