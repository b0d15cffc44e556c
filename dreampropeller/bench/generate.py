"""`bench generate`: the same prompt sequential and propelled in one process, speed and quality side by side.

Quality: PSNR between the two runs' turntable renders, and the embedded prior's objective scores of
both (shape R-precision, colour accuracy, silhouette IoU, chamfer, classifier scores). The noise
floor is measured the same way between sequential runs of different seeds.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from dreampropeller.evaluation.asset import evaluate_asset
from dreampropeller.guidance.registry import load_prior
from dreampropeller.picard.solver import PicardSolver
from dreampropeller.scene.cameras import turntable
from dreampropeller.systems.config import build, merge_config
from dreampropeller.systems.run import (
    build_process,
    resolve_device,
    resolve_executor,
    resolve_window,
    solver_config,
    state_assets,
    validate,
)
from dreampropeller.systems.text_to_3d import TextTo3D, TextTo3DConfig

SCORES = ("shape_r_precision", "colour_accuracy", "silhouette_iou", "chamfer", "clf_r_precision")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio (dB) of images in [0, 1]."""
    mse = float((a.float() - b.float()).square().mean())
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def _run(
    process: TextTo3D, cfg: TextTo3DConfig, window: int, executor_name: str, device: torch.device
) -> dict:
    solver_cfg = solver_config(cfg, window)
    executor = resolve_executor(
        dataclasses.replace(cfg, picard=dataclasses.replace(cfg.picard, executor=executor_name)), device
    )
    x0 = process.initial_state()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = PicardSolver(process, solver_cfg, executor=executor).run(x0, cfg.steps)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    executor.close()
    s = result.stats
    render_fn, mesh = state_assets(process, cfg, result.state, cfg.steps)
    views = render_fn(turntable(16, 15.0, 2.0, 50.0))[0]
    scores = evaluate_asset(render_fn, cfg.prompt, mesh)
    return {
        "window": window,
        "executor": executor.name,
        "wall_clock_s": round(wall, 3),
        "iterations": s.iterations,
        "unit_evals": s.unit_evals,
        "rounds_speedup": round(s.rounds_speedup, 3),
        "split": {"units_s": round(s.units_s, 3), "rollout_s": round(s.rollout_s, 3)},
        "scores": {k: scores.get(k) for k in SCORES},
        "_views": views,
    }


def bench_generate(
    prompt: str,
    steps: int | None,
    window: int,
    seeds: Sequence[int] = (0,),
    overrides: Sequence[str] = (),
    files: Sequence[str] = (),
    executor: str = "batched",
) -> dict[str, Any]:
    """Sequential vs propelled for each seed; summary and noise floor across seeds."""
    extra = {"prompt": prompt, **({"steps": steps} if steps else {})}
    data = merge_config(TextTo3DConfig(), files, overrides, free=["optimizer"], extra=extra)
    base = build(TextTo3DConfig, data)
    validate(base)
    device = resolve_device(base.device)
    window = resolve_window(window, device)
    prior = load_prior(base.prior, base.prior_path, device)
    runs = []
    for seed in seeds:
        cfg = dataclasses.replace(base, seed=int(seed))
        process = build_process(cfg, prior, device)
        print(f"[bench generate] seed {seed}: sequential ...", file=sys.stderr, flush=True)
        seq = _run(process, cfg, 1, "sequential", device)
        print(f"[bench generate] seed {seed}: propelled (window {window}) ...", file=sys.stderr, flush=True)
        prop = _run(process, cfg, window, executor, device)
        runs.append({"seed": int(seed), "sequential": seq, "propelled": prop})
    for r in runs:
        r["psnr_turntable"] = round(psnr(r["sequential"]["_views"], r["propelled"]["_views"]), 3)
        r["wall_clock_speedup"] = round(r["sequential"]["wall_clock_s"] / r["propelled"]["wall_clock_s"], 3)
    noise_psnr = [
        round(psnr(a["sequential"]["_views"], b["sequential"]["_views"]), 3)
        for a, b in itertools.pairwise(runs)
    ]
    for r in runs:
        for key in ("sequential", "propelled"):
            r[key].pop("_views")

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
        },
    }
