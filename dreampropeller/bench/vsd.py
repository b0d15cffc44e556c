"""`bench vsd` (default): VSD's LoRA arrangements, propelled vs sequential, with quality, on a real prior.

For each seed: one sequential run (the three LoRA modes are one algorithm sequentially: a LoRA step
per step on that step's renders; tested), then one propelled run per mode (batched executor, the
sound default acceptance rule). Every run builds its own prior and LoRA from disk, so nothing trained
in one run reaches the next. Reported per mode: rounds speedup, units per accepted step, wall clock
and its ratio to the sequential run, PSNR of the propelled turntable to the sequential one beside the
seed floor (PSNR between the sequential runs of two seeds), and the embedded prior's ``eval`` scores
with their spread across seeds. Defaults: ``--config prolificdreamer --prior tiny`` (minutes per run
on a CPU).
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
import sys
from collections.abc import Sequence
from typing import Any

import torch

from dreampropeller.bench.generate import SCORES, _run, _with_picard, psnr
from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.guidance.variational import lora_steps
from dreampropeller.guidance.vsd import MODES
from dreampropeller.runs.driver import load_config, make_process
from dreampropeller.runs.resolve import resolve_config, run_device

SEQUENTIAL_MODE = "accepted"  # sequentially every mode is the same loop; this one runs the reference


def with_mode(cfg: TextTo3DConfig, mode: str) -> TextTo3DConfig:
    """``cfg`` with ``vsd.mode`` set."""
    return dataclasses.replace(cfg, vsd=dataclasses.replace(cfg.vsd, mode=mode))


def fresh_run(cfg: TextTo3DConfig) -> dict[str, Any]:
    """One timed run of the resolved ``cfg`` with a prior (and LoRA) loaded for it alone; with the
    number of steps its LoRA took."""
    process = make_process(cfg)
    out = _run(process, cfg)
    out["lora_steps"] = lora_steps(process.guidance, out["_state"])
    return out


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(statistics.fmean(vals), 4) if vals else None


def _spread(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(statistics.pstdev(vals), 4) if len(vals) > 1 else None


def bench_vsd_quality(
    prompt: str = "a red cube",
    steps: int | None = None,
    window: int = 8,
    seeds: Sequence[int] = (0, 1),
    modes: Sequence[str] = MODES,
    files: Sequence[str] = ("prolificdreamer",),
    overrides: Sequence[str] = (),
    prior: str = "tiny",
    executor: str = "batched",
) -> dict[str, Any]:
    """Sequential vs propelled VSD for each LoRA mode and seed; quality against the sequential run and
    the seed floor."""
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"--modes takes {', '.join(MODES)}; got {','.join(modes)!r}")
    given = load_config(prompt, files, overrides, steps=steps or None, prior=prior, guidance="vsd")
    base = resolve_config(_with_picard(given, window, executor))
    device = run_device(base)
    runs: list[dict[str, Any]] = []
    for seed in seeds:
        cfg = dataclasses.replace(base, seed=int(seed))
        print(f"[bench vsd] seed {seed}: sequential ...", file=sys.stderr, flush=True)
        seq_cfg = with_mode(_with_picard(cfg, 1, "sequential"), SEQUENTIAL_MODE)
        row: dict[str, Any] = {"seed": int(seed), "sequential": fresh_run(seq_cfg), "modes": {}}
        for mode in modes:
            print(f"[bench vsd] seed {seed}: {mode}, window {window} ...", file=sys.stderr, flush=True)
            row["modes"][mode] = fresh_run(with_mode(cfg, mode))
        runs.append(row)
    seq_views = [r["sequential"]["_views"] for r in runs]
    floor = [round(psnr(a, b), 3) for a, b in itertools.pairwise(seq_views)]
    table = []
    for mode in modes:
        per_seed = []
        for r in runs:
            s, p = r["sequential"], r["modes"][mode]
            per_seed.append(
                {
                    "seed": r["seed"],
                    "rounds_speedup": p["rounds_speedup"],
                    "units_per_step": p["units_per_step"],
                    "iterations": p["iterations"],
                    "lora_steps": p["lora_steps"],
                    "sequential_lora_steps": s["lora_steps"],
                    "wall_clock_s": p["wall_clock_s"],
                    "sequential_wall_clock_s": s["wall_clock_s"],
                    "wall_clock_speedup": round(s["wall_clock_s"] / p["wall_clock_s"], 3),
                    "psnr_to_sequential": round(psnr(s["_views"], p["_views"]), 3),
                    "scores": p["scores"],
                }
            )
        table.append(
            {
                "mode": mode,
                "seeds": per_seed,
                "rounds_speedup": _mean([x["rounds_speedup"] for x in per_seed]),
                "units_per_step": _mean([x["units_per_step"] for x in per_seed]),
                "wall_clock_s": _mean([x["wall_clock_s"] for x in per_seed]),
                "wall_clock_speedup": _mean([x["wall_clock_speedup"] for x in per_seed]),
                "psnr_to_sequential": _mean([x["psnr_to_sequential"] for x in per_seed]),
                "scores": {k: _mean([x["scores"].get(k) for x in per_seed]) for k in SCORES},
                "score_spread": {k: _spread([x["scores"].get(k) for x in per_seed]) for k in SCORES},
            }
        )
    sequential = {
        "wall_clock_s": _mean([r["sequential"]["wall_clock_s"] for r in runs]),
        "scores": {k: _mean([r["sequential"]["scores"].get(k) for r in runs]) for k in SCORES},
        "score_spread": {k: _spread([r["sequential"]["scores"].get(k) for r in runs]) for k in SCORES},
        "per_seed": [
            {
                "seed": r["seed"],
                "wall_clock_s": r["sequential"]["wall_clock_s"],
                "scores": r["sequential"]["scores"],
            }
            for r in runs
        ],
    }
    return {
        "prompt": prompt,
        "prior": base.prior,
        "steps": base.steps,
        "window": window,
        "acceptance_rule": runs[0]["modes"][modes[0]]["acceptance_rule"] if runs else None,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "seeds": [int(s) for s in seeds],
        "seed_floor_psnr": floor,
        "sequential": sequential,
        "modes": table,
    }


def format_vsd_quality(result: dict[str, Any]) -> str:
    """A table: one row per LoRA mode (seed means) and the sequential reference."""
    short = {"shape_r_precision": "shape", "colour_accuracy": "colour", "silhouette_iou": "IoU"}
    short.update({"chamfer": "chamfer", "clf_r_precision": "clf", "colour_spread": "spread"})
    lines = [
        f"VSD {result['prompt']!r}, prior {result['prior']}, {result['steps']} steps, "
        f"window {result['window']}, {result['acceptance_rule']}, {result['device']}"
        f", seeds {result['seeds']}",
        f"seed floor (PSNR between sequential seeds): {result['seed_floor_psnr']} dB",
        f"{'mode':<13}{'rounds x':>9}{'units/step':>11}{'wall s':>9}{'wall x':>8}{'PSNR seq':>9}"
        "  scores (mean ± spread)",
    ]

    def scores(mean: dict[str, Any], spread: dict[str, Any]) -> str:
        parts = []
        for k, name in short.items():
            if mean.get(k) is None:
                continue
            sd = spread.get(k)
            parts.append(f"{name} {mean[k]:.3g}" + (f"±{sd:.2g}" if sd is not None else ""))
        return " ".join(parts)

    s = result["sequential"]
    lines.append(
        f"{'sequential':<13}{1.0:>9.2f}{1.0:>11.2f}{s['wall_clock_s']:>9.1f}{1.0:>8.2f}{'':>9}  "
        + scores(s["scores"], s["score_spread"])
    )
    for r in result["modes"]:
        lines.append(
            f"{r['mode']:<13}{r['rounds_speedup']:>9.2f}{r['units_per_step']:>11.2f}{r['wall_clock_s']:>9.1f}"
            f"{r['wall_clock_speedup']:>8.2f}{r['psnr_to_sequential']:>9.2f}  "
            + scores(r["scores"], r["score_spread"])
        )
    return "\n".join(lines)
