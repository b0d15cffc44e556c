"""`bench generate`: the same prompt sequential and propelled in one process, speed and quality side by side.

Quality: PSNR between the two runs' turntable renders, and the embedded prior's objective scores of
both (shape R-precision, colour accuracy, silhouette IoU, chamfer, classifier scores). The noise
floor is measured the same way between sequential runs of different seeds; ``ulp_control`` adds, per
seed, the sequential run from a start nudged by one float ulp (how far a rounding-level difference
carries: with densification's threshold decisions, further than one might think).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.picard.process import Process, State
from dreampropeller.picard.solver import SolverConfig, SolverStats
from dreampropeller.runs.assets import EVAL_RESOLUTION, asset_of, score_asset
from dreampropeller.runs.driver import load_config, make_process, solve
from dreampropeller.runs.resolve import (
    resolve_config,
    run_device,
    run_executor,
    solver_config,
    with_solver,
)
from dreampropeller.scene.cameras import turntable

SCORES = (
    "shape_r_precision",
    "colour_accuracy",
    "silhouette_iou",
    "chamfer",
    "clf_r_precision",
    "colour_spread",
)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio (dB) of images in [0, 1]."""
    mse = float((a.float() - b.float()).square().mean())
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def nudge_one_ulp(x: State, keys: Sequence[str]) -> State:
    """A copy of ``x`` with every floating entry named in ``keys`` moved one ulp towards +inf."""
    out = dict(x)
    for k in keys:
        if x[k].is_floating_point():
            out[k] = torch.nextafter(x[k], torch.full_like(x[k], math.inf))
    return out


def _run(process: Process, cfg: TextTo3DConfig, state: State | None = None) -> dict:
    """One timed solve of the resolved ``cfg`` (from ``state``, default the process's initial state)
    and the scores of its asset."""
    device = run_device(cfg)
    executor = run_executor(cfg)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = solve(process, cfg, executor, state)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    executor.close()
    s = result.stats
    asset = asset_of(cfg, result.state, cfg.steps)
    views = asset.render_fn(EVAL_RESOLUTION)(turntable(16, 15.0, 2.0, 50.0))[0]
    scores = score_asset(asset, cfg.prompt)
    return {
        "window": cfg.picard.window,
        "executor": executor.name,
        "wall_clock_s": round(wall, 3),
        "iterations": s.iterations,
        "unit_evals": s.unit_evals,
        "rounds_speedup": round(s.rounds_speedup, 3),
        "units_per_step": round(s.unit_evals / max(sum(s.accepted), 1), 3),
        "acceptance_rule": solver_config(cfg).rule,
        "split": {"units_s": round(s.units_s, 3), "rollout_s": round(s.rollout_s, 3)},
        "scores": {k: scores.get(k) for k in SCORES},
        "_views": views,
        "_stats": s,
        "_state": result.state,
    }


def _with_picard(cfg: TextTo3DConfig, window: int, executor: str) -> TextTo3DConfig:
    return dataclasses.replace(cfg, picard=dataclasses.replace(cfg.picard, window=window, executor=executor))


def bench_generate(
    prompt: str,
    steps: int | None,
    window: int,
    seeds: Sequence[int] = (0,),
    overrides: Sequence[str] = (),
    files: Sequence[str] = (),
    executor: str = "batched",
    ulp_control: bool = False,
) -> dict[str, Any]:
    """Sequential vs propelled for each seed (each run with a freshly loaded prior); summary and noise
    floor across seeds; with ``ulp_control`` also each seed's sequential run from a start nudged by one
    ulp (its PSNR to the sequential run and its scores)."""
    given = load_config(prompt, files, overrides, steps=steps or None)
    base = resolve_config(_with_picard(given, window, executor))
    window, device = int(base.picard.window), run_device(base)
    runs = []
    for seed in seeds:
        cfg = dataclasses.replace(base, seed=int(seed))
        # a prior of its own for every run: whatever a run trains (a VSD LoRA) never reaches the next
        print(f"[bench generate] seed {seed}: sequential ...", file=sys.stderr, flush=True)
        seq_cfg = _with_picard(cfg, 1, "sequential")
        seq = _run(make_process(seq_cfg), seq_cfg)
        print(f"[bench generate] seed {seed}: propelled (window {window}) ...", file=sys.stderr, flush=True)
        prop = _run(make_process(cfg), cfg)
        runs.append({"seed": int(seed), "sequential": seq, "propelled": prop})
        if ulp_control:
            print(f"[bench generate] seed {seed}: sequential from a start one ulp away ...", file=sys.stderr)
            control = make_process(seq_cfg)
            start = control.initial_state()
            nudged = nudge_one_ulp(start, control.param_keys or tuple(start))
            runs[-1]["ulp_control"] = _run(control, seq_cfg, nudged)
    compared = ["propelled", "ulp_control"] if ulp_control else ["propelled"]
    for r in runs:
        r["psnr_turntable"] = round(psnr(r["sequential"]["_views"], r["propelled"]["_views"]), 3)
        if ulp_control:
            r["psnr_ulp_control"] = round(psnr(r["sequential"]["_views"], r["ulp_control"]["_views"]), 3)
        r["wall_clock_speedup"] = round(r["sequential"]["wall_clock_s"] / r["propelled"]["wall_clock_s"], 3)
    noise_psnr = [
        round(psnr(a["sequential"]["_views"], b["sequential"]["_views"]), 3)
        for a, b in itertools.pairwise(runs)
    ]
    for r in runs:
        for key in ("sequential", *compared):
            r[key].pop("_views")
            r[key].pop("_stats")
            r[key].pop("_state")

    def mean(key: str, which: str) -> float | None:
        vals = [r[which]["scores"][key] for r in runs if r[which]["scores"].get(key) is not None]
        return round(statistics.fmean(vals), 4) if vals else None

    def spread(key: str) -> float | None:
        vals = [
            r["sequential"]["scores"][key] for r in runs if r["sequential"]["scores"].get(key) is not None
        ]
        return round(statistics.pstdev(vals), 4) if len(vals) > 1 else None

    first = runs[0]
    return {
        "prompt": prompt,
        "steps": base.steps,
        "window": window,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "sequential": first["sequential"],
        "propelled": first["propelled"],
        "rounds_speedup": first["propelled"]["rounds_speedup"],
        "wall_clock_speedup": first["wall_clock_speedup"],
        "psnr_turntable": first["psnr_turntable"],
        "runs": runs,
        "summary": {
            "rounds_speedup_mean": round(statistics.fmean(r["propelled"]["rounds_speedup"] for r in runs), 3),
            "wall_clock_speedup_mean": round(statistics.fmean(r["wall_clock_speedup"] for r in runs), 3),
            "psnr_seq_vs_prop_mean": round(statistics.fmean(r["psnr_turntable"] for r in runs), 3),
            "scores_sequential_mean": {k: mean(k, "sequential") for k in SCORES},
            "scores_propelled_mean": {k: mean(k, "propelled") for k in SCORES},
        },
        "noise": {
            "seeds": [int(s) for s in seeds],
            "psnr_between_sequential_seeds": noise_psnr,
            "score_std_across_seeds": {k: spread(k) for k in SCORES},
            **({"psnr_sequential_vs_one_ulp": [r["psnr_ulp_control"] for r in runs]} if ulp_control else {}),
        },
    }


def text_runner(
    prompt: str,
    steps: int | None = None,
    files: Sequence[str] = (),
    overrides: Sequence[str] = (),
    executor: str = "batched",
) -> Callable[[SolverConfig, int], tuple[SolverStats, torch.Tensor, dict[str, Any]]]:
    """A function running ``prompt`` under a solver config and seed, each time with a fresh prior and
    process: ``(stats, turntable views, scores)`` (what ``bench tradeoff`` sweeps)."""
    base = resolve_config(
        _with_picard(load_config(prompt, files, overrides, steps=steps or None), 8, executor)
    )

    def run(solver: SolverConfig, seed: int) -> tuple[SolverStats, torch.Tensor, dict[str, Any]]:
        cfg = dataclasses.replace(with_solver(base, solver, executor), seed=int(seed))
        out = _run(make_process(cfg), cfg)
        return out["_stats"], out["_views"], out["scores"]

    return run
