"""`bench picard`: sequential vs propelled runs of the benchmark problems, side by side in one process."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from dreampropeller.bench.controls import make_control
from dreampropeller.bench.problems import make_problem
from dreampropeller.picard.executors import Executor
from dreampropeller.picard.process import State
from dreampropeller.picard.solver import PAPER_RULE, PicardSolver, SolverConfig, run_sequential

DEFAULT_PROBLEMS = ("quadratic", "mlp", "nonconvex", "growing")
PAPER = PAPER_RULE
"""The DreamPropeller authors' rule, shown beside the default for comparison."""


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


def loss_change(loss: float, reference: float) -> float:
    """Relative change of a final loss from the sequential run's."""
    return (loss - reference) / abs(reference) if reference else 0.0


def seed_floor(name: str, reference: float, steps: int | None = None) -> float:
    """The noise floor of a problem: its sequential final loss from seed 1 against ``reference`` (seed 0)."""
    other = make_problem(name, seed=1, steps=steps)
    return loss_change(
        other.report_loss(run_sequential(other.process, other.x0, other.steps).state), reference
    )


def bench_problem(
    name: str,
    window: int = 8,
    config: dict[str, Any] | None = None,
    executor: Executor | None = None,
    steps: int | None = None,
    windows: Sequence[int] = (2, 4, 8, 16),
    check_exact: bool = True,
) -> dict[str, Any]:
    """One problem: sequential, propelled (``config``: default the sound rule), the authors' rule, exact@0."""
    problem = make_problem(name, steps=steps)
    proc, x0, T = problem.process, problem.x0, problem.steps
    t0 = time.perf_counter()
    seq = run_sequential(proc, x0, T)
    seq_s = time.perf_counter() - t0
    cfg = dict(config or {})
    t1 = time.perf_counter()
    prop = PicardSolver(proc, SolverConfig(window=window, **cfg), executor=executor).run(x0, T)
    prop_s = time.perf_counter() - t1
    paper = PicardSolver(proc, SolverConfig(window=window, **PAPER), executor=executor).run(x0, T)
    exact = None
    if check_exact:
        guesses = {k: cfg[k] for k in ("guesses", "linearize") if k in cfg}  # exact with them too
        zero = PicardSolver(
            proc, SolverConfig(window=window, threshold=0.0, adaptive=False, **guesses), executor=executor
        )
        exact = states_equal(zero.run(x0, T).state, seq.state)
    loss_seq = problem.report_loss(seq.state)
    loss_prop = problem.report_loss(prop.state)
    loss_paper = problem.report_loss(paper.state)
    sweep = {}
    for p in windows:
        r = (
            prop
            if p == window
            else PicardSolver(proc, SolverConfig(window=p, **cfg), executor=executor).run(x0, T)
        )
        sweep[str(p)] = round(r.stats.rounds_speedup, 3)
    return {
        "name": name,
        "T": T,
        "window": window,
        "rule": SolverConfig(window=window, **cfg).rule,
        "iterations": prop.stats.iterations,
        "unit_evals": prop.stats.unit_evals,
        "units_per_step": round(prop.stats.unit_evals / max(T, 1), 3),
        "rounds_speedup": round(T / max(prop.stats.iterations, 1), 3),
        "loss_sequential": loss_seq,
        "loss_propelled": loss_prop,
        "loss_rel_change": loss_change(loss_prop, loss_seq),
        "loss_seed_floor": seed_floor(name, loss_seq, steps),
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
        "paper": {
            "rule": SolverConfig(window=window, **PAPER).rule,
            "rounds_speedup": round(T / max(paper.stats.iterations, 1), 3),
            "units_per_step": round(paper.stats.unit_evals / max(T, 1), 3),
            "loss_propelled": loss_paper,
            "loss_rel_change": loss_change(loss_paper, loss_seq),
        },
        "rounds_speedup_by_window": sweep,
    }


def bench_control(
    name: str,
    config: dict[str, Any] | None = None,
    windows: Sequence[int] = (4, 8, 16),
    steps: int = 300,
) -> dict[str, Any]:
    """A negative control: rounds speedup by window under ``config`` and under the authors' rule.

    Its guesses are never right, so a sound rule must give ~1.0x (one exact step per iteration).
    """
    control = make_control(name)
    x0 = control.initial_state()
    cfg = dict(config or {})

    def speedups(rule: dict[str, Any]) -> dict[str, float]:
        return {
            str(p): round(
                PicardSolver(control, SolverConfig(window=p, **rule)).run(x0, steps).stats.rounds_speedup, 3
            )
            for p in windows
        }

    return {
        "name": name,
        "T": steps,
        "rule": SolverConfig(**cfg).rule,
        "rounds_speedup_by_window": speedups(cfg),
        "paper_rounds_speedup_by_window": speedups(PAPER),
    }


def format_table(results: Sequence[dict[str, Any]], controls: Sequence[dict[str, Any]] = ()) -> str:
    """Rounds speedup per window and the quality columns; the negative controls below."""
    windows = list(results[0]["rounds_speedup_by_window"]) if results else []
    head = f"{'problem':<11}" + "".join(f"{'p=' + w:>8}" for w in windows)
    head += f"{'units/step':>11}{'d loss':>9}{'seed floor':>11}{'paper x':>9}{'paper d':>10}{'exact@0':>9}"
    lines = [f"rule: {results[0]['rule']}" if results else "", head]
    for r in results:
        row = f"{r['name']:<11}" + "".join(f"{r['rounds_speedup_by_window'][w]:>8.2f}" for w in windows)
        row += f"{r['units_per_step']:>11.2f}{r['loss_rel_change']:>+9.2%}{r['loss_seed_floor']:>+11.1%}"
        row += f"{r['paper']['rounds_speedup']:>9.2f}{r['paper']['loss_rel_change']:>+10.2%}"
        row += f"{r['exact_at_zero_threshold']!s:>9}"
        lines.append(row)
    if controls:
        cw = list(controls[0]["rounds_speedup_by_window"])
        lines.append("")
        lines.append(
            f"{'control':<11}"
            + "".join(f"{'p=' + w:>8}" for w in cw)
            + "   paper: "
            + " ".join(f"p={w}" for w in cw)
        )
        for c in controls:
            row = f"{c['name']:<11}" + "".join(f"{c['rounds_speedup_by_window'][w]:>8.2f}" for w in cw)
            row += "   " + " ".join(f"{c['paper_rounds_speedup_by_window'][w]:>6.2f}" for w in cw)
            lines.append(row)
    return "\n".join(lines)
