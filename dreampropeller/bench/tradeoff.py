"""`bench tradeoff`: rounds speedup against quality deviation, per acceptance rule and window.

Every target is run sequentially once (the reference) and from a second seed (the noise floor: how far
two equally good runs are apart), then propelled under each rule at each window. A rule is worth its
speedup only where its deviation from the sequential run stays below the noise floor.

Rules: the sound default (a fixed tolerance in exact-step units) at several tolerances, and the
DreamPropeller authors' adaptive EMA rule with each aggregate (``middle``: their code's "median",
the error at the window's middle; ``mean``; a true ``median``), which answers the paper's open
question on mean vs median with numbers.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dreampropeller.bench.generate import psnr, text_runner
from dreampropeller.bench.picard import loss_change, seed_floor
from dreampropeller.bench.problems import make_problem
from dreampropeller.picard.solver import PAPER_RULE, PicardSolver, SolverConfig, SolverStats, run_sequential

TOLERANCES = (0.05, 0.15, 0.5, 1.0)
AGGREGATES = ("middle", "mean", "median")
WINDOWS = (2, 4, 8, 16)


def rules(tolerances: Sequence[float] = TOLERANCES, aggregates: Sequence[str] = AGGREGATES) -> list[dict]:
    """Solver settings (without the window) of every rule in the sweep."""
    out: list[dict[str, Any]] = [{"threshold": float(t), "adaptive": False} for t in tolerances]
    out += [{**PAPER_RULE, "aggregate": a} for a in aggregates]
    return out


def _row(rule: dict[str, Any], window: int, stats: SolverStats, steps: int) -> dict[str, Any]:
    return {
        "rule": SolverConfig(**rule).rule,
        "window": window,
        "rounds_speedup": round(stats.rounds_speedup, 3),
        "iterations": stats.iterations,
        "units_per_step": round(stats.unit_evals / max(steps, 1), 3),
    }


def problem_tradeoff(
    name: str,
    sweep: Sequence[dict[str, Any]],
    windows: Sequence[int] = WINDOWS,
    steps: int | None = None,
) -> dict[str, Any]:
    """One bench problem: final loss change from the sequential run per rule x window."""
    problem = make_problem(name, steps=steps)
    T = problem.steps
    ref = problem.report_loss(run_sequential(problem.process, problem.x0, T).state)
    rows = []
    for rule in sweep:
        for p in windows:
            result = PicardSolver(problem.process, SolverConfig(window=p, **rule)).run(problem.x0, T)
            loss = problem.report_loss(result.state)
            row = _row(rule, p, result.stats, T)
            row["loss_rel_change"] = loss_change(loss, ref)
            row["deviation"] = abs(row["loss_rel_change"])
            rows.append(row)
    return {
        "target": name,
        "kind": "problem",
        "steps": T,
        "deviation": "|final loss change| relative to the sequential run",
        "floor": abs(seed_floor(name, ref, steps)),
        "loss_sequential": ref,
        "rows": rows,
    }


Views = Any
"""Turntable renders of a finished run (a tensor in [0, 1]); compared by PSNR."""
RunFn = Callable[[SolverConfig, int], tuple[SolverStats, Views, dict[str, Any]]]
"""Runs one text-to-3D asset under a solver config and seed: (stats, turntable views, scores)."""


def text_tradeoff(
    name: str,
    run: RunFn,
    sweep: Sequence[dict[str, Any]],
    windows: Sequence[int] = WINDOWS,
    seeds: tuple[int, int] = (0, 1),
) -> dict[str, Any]:
    """One text-to-3D target: turntable deviation from the sequential run per rule x window.

    The deviation is the mean squared difference of the turntable renders (PSNR in the rows); the floor
    is the same between the sequential runs of two seeds. Scores against the library truth are kept
    per row, the sequential scores of both seeds beside them (their spread is the score noise).
    """

    def sequential(seed: int) -> tuple[SolverStats, Views, dict[str, Any]]:
        return run(SolverConfig(window=1, threshold=0.0), seed)

    print(
        f"[bench tradeoff] {name}: sequential, seeds {seeds[0]} and {seeds[1]} ...",
        file=sys.stderr,
        flush=True,
    )
    ref_stats, ref_views, ref_scores = sequential(seeds[0])
    _, other_views, other_scores = sequential(seeds[1])
    floor_psnr = psnr(ref_views, other_views)
    rows = []
    for rule in sweep:
        for p in windows:
            cfg = SolverConfig(window=p, **rule)
            print(f"[bench tradeoff] {name}: {cfg.rule}, window {p} ...", file=sys.stderr, flush=True)
            stats, views, scores = run(cfg, seeds[0])
            row = _row(rule, p, stats, ref_stats.steps)
            mse = float((ref_views.float() - views.float()).square().mean())
            row["deviation"] = mse
            row["psnr_to_sequential"] = round(psnr(ref_views, views), 3) if mse > 0 else None  # JSON: no inf
            row["scores"] = scores
            rows.append(row)
    return {
        "target": name,
        "kind": "text-to-3d",
        "steps": ref_stats.steps,
        "deviation": "turntable MSE to the sequential run",
        "floor": float((ref_views.float() - other_views.float()).square().mean()),
        "floor_psnr": round(floor_psnr, 3),
        "scores_sequential": {str(seeds[0]): ref_scores, str(seeds[1]): other_scores},
        "rows": rows,
    }


def format_tradeoff(targets: Sequence[dict[str, Any]]) -> str:
    """One text table per target: rounds speedup and deviation by rule (rows) and window (columns)."""
    lines = []
    for target in targets:
        windows = sorted({r["window"] for r in target["rows"]})
        lines.append(f"{target['target']} ({target['deviation']}; noise floor {target['floor']:.4g})")
        lines.append(f"{'rule':<14}" + "".join(f"{'p=' + str(w):>20}" for w in windows))
        names = list(dict.fromkeys(r["rule"] for r in target["rows"]))
        for name in names:
            cells = {r["window"]: r for r in target["rows"] if r["rule"] == name}
            row = f"{name:<14}"
            for w in windows:
                c = cells.get(w)
                row += f"{c['rounds_speedup']:>8.2f}x {c['deviation']:>10.3g}" if c else " " * 20
            lines.append(row)
        lines.append("")
    return "\n".join(lines)


def plot_tradeoff(targets: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Speedup (y) against quality deviation (x, log) per target: one curve per rule across windows,
    the seed-to-seed noise floor as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(targets)
    cols = min(n, 3)
    rows_n = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5.2 * cols, 4.0 * rows_n), squeeze=False)
    for ax, target in zip(axes.flat, targets, strict=False):
        names = list(dict.fromkeys(r["rule"] for r in target["rows"]))
        for name in names:
            pts = sorted(
                (r["window"], r["deviation"], r["rounds_speedup"])
                for r in target["rows"]
                if r["rule"] == name
            )
            xs = [max(d, 1e-7) for _, d, _ in pts]
            style = "--" if name.startswith("ema") else "-"
            ax.plot(xs, [s for _, _, s in pts], style, marker="o", label=name)
            for w, x, s in zip([p[0] for p in pts], xs, [p[2] for p in pts], strict=True):
                ax.annotate(str(w), (x, s), fontsize=6, xytext=(2, 2), textcoords="offset points")
        ax.axvline(max(target["floor"], 1e-7), color="k", ls=":", label="seed-to-seed floor")
        ax.set_xscale("log")
        ax.set_title(target["target"], fontsize=10)
        ax.set_xlabel(target["deviation"], fontsize=7)
        ax.set_ylabel("rounds speedup")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_tradeoff(
    problems: Sequence[str],
    sweep: Sequence[dict[str, Any]],
    windows: Sequence[int] = WINDOWS,
    steps: int | None = None,
    texts: Sequence[tuple[str, str]] = (),
    text_windows: Sequence[int] = (8,),
    text_steps: int | None = None,
    files: Sequence[str] = (),
    overrides: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Every problem, then every text-to-3D ``(prompt, representation)`` (``files`` and ``overrides``
    configure those runs), with progress on stderr."""
    out = []
    for name in problems:
        print(f"[bench tradeoff] {name} ...", file=sys.stderr, flush=True)
        out.append(problem_tradeoff(name, sweep, windows, steps))
    for prompt, representation in texts:
        run = text_runner(prompt, text_steps, files, [*overrides, f"representation={representation}"])
        out.append(text_tradeoff(f"{prompt} ({representation})", run, sweep, text_windows))
    return out
