"""`python -m dreampropeller.bench.vsd_gpu` (also `bench vsd`): propelled vs sequential VSD wall clock.

A NeRF + VSD run (ProlificDreamer's 64 px, one camera per step) with random-weight Stable Diffusion
2.1-base-shaped UNet and VAE (fp16 on CUDA), run for ``steps`` steps sequentially and propelled
(batched executor, the sound default acceptance rule), for each LoRA mode. Prints the wall-clock
ratio and, for the propelled run, the Picard iterations, unit evaluations and the relative deviation
of the final NeRF from the sequential one. ``--arch tiny`` (the default on a CPU) runs in seconds for tests.

Imports nothing of omegaconf, trimesh, PyMCubes or imageio (the configs are built as dataclasses).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dreampropeller.bench.picard import relative_deviation
from dreampropeller.bench.prior import make_sd_prior
from dreampropeller.config.schema import RenderConfig, TextTo3DConfig
from dreampropeller.guidance.sds import SDSConfig
from dreampropeller.guidance.variational import lora_steps
from dreampropeller.guidance.vsd import VSDConfig
from dreampropeller.picard.device import resolve_device
from dreampropeller.picard.executors import BatchedExecutor
from dreampropeller.picard.solver import DEFAULT_TOLERANCE, PicardSolver, SolverConfig, run_sequential
from dreampropeller.scene.nerf import NeRFConfig
from dreampropeller.systems.factory import build_process


def vsd_config(arch: str, steps: int, mode: str) -> TextTo3DConfig:
    """A ProlificDreamer-like run config (small renders for the tiny architecture)."""
    big = arch != "tiny"
    return TextTo3DConfig(
        prompt="a delicious hamburger",
        steps=steps,
        render=RenderConfig(height=64, width=64, batch_size=1, num_samples=128)
        if big
        else RenderConfig(height=16, width=16, batch_size=1, num_samples=8),
        nerf=NeRFConfig(n_levels=16, log2_hashmap_size=19, finest_resolution=2048)
        if big
        else NeRFConfig(n_levels=4, log2_hashmap_size=10, finest_resolution=64),
        sds=SDSConfig(
            guidance_scale=7.5, cfg_convention="diffusers", min_step_percent=0.02, max_step_percent=0.98
        ),
        guidance="vsd",
        vsd=VSDConfig(mode=mode, lora_rank=4 if big else 2, camera_hidden=64 if big else 8),
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_vsd_mode(
    arch: str, device: torch.device, steps: int, window: int, mode: str, threshold: float = DEFAULT_TOLERANCE
) -> dict[str, Any]:
    """Sequential and propelled runs of one LoRA mode, each with a fresh prior and LoRA."""
    out: dict[str, Any] = {"mode": mode}
    finals = {}
    for label in ("sequential", "propelled"):
        prior = make_sd_prior(arch, device)
        process = build_process(vsd_config(arch, steps, mode), prior, device)
        x0 = process.initial_state()
        _sync(device)
        t0 = time.perf_counter()
        if label == "sequential":
            result = run_sequential(process, x0, steps)
        else:
            solver_cfg = SolverConfig(window=window, threshold=threshold)
            result = PicardSolver(process, solver_cfg, executor=BatchedExecutor()).run(x0, steps)
        _sync(device)
        wall = time.perf_counter() - t0
        finals[label] = result.state
        out[label] = {
            "wall_s": wall,
            "iterations": result.stats.iterations,
            "unit_evals": result.stats.unit_evals,
            "status": result.stats.status,
            "lora_steps": lora_steps(process.guidance, result.state),
        }
        nerf_keys = [k for k in process.param_keys if not k.startswith("lora/")]
        del process, prior
    out["wall_clock_ratio"] = out["sequential"]["wall_s"] / out["propelled"]["wall_s"]
    out["rounds_speedup"] = steps / max(out["propelled"]["iterations"], 1)
    out["nerf_relative_deviation"] = relative_deviation(finals["propelled"], finals["sequential"], nerf_keys)
    return out


def bench_vsd(
    steps: int = 200,
    window: int = 8,
    arch: str | None = None,
    device: str | None = None,
    modes: Sequence[str] = ("worker", "synchronized", "accepted"),
    threshold: float = DEFAULT_TOLERANCE,
) -> dict[str, Any]:
    """Each LoRA mode: sequential vs propelled wall clock on one device (LoRA steps of both reported)."""
    dev = resolve_device(device)
    arch = arch or ("sd21-base" if dev.type == "cuda" else "tiny")
    bench_vsd_mode(arch, dev, 2, 2, modes[0], threshold)  # warm-up: kernels, allocator, lazy imports
    results = [bench_vsd_mode(arch, dev, steps, window, m, threshold) for m in modes]
    return {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "architecture": arch,
        "steps": steps,
        "window": window,
        "tolerance": threshold,
        "modes": results,
    }


def format_vsd(result: dict[str, Any]) -> str:
    """One line per LoRA mode."""
    head = f"VSD {result['steps']} steps, {result['architecture']} on {result['device']}"
    lines = [f"{head}, window {result['window']}"]
    for r in result["modes"]:
        s, p = r["sequential"], r["propelled"]
        lines.append(
            f"  {r['mode']:>12}: sequential {s['wall_s']:.1f}s, propelled {p['wall_s']:.1f}s "
            f"-> wall-clock ratio {r['wall_clock_ratio']:.2f}x ({p['iterations']} iterations, "
            f"{p['unit_evals']} units, LoRA steps {s['lora_steps']} / {p['lora_steps']}, "
            f"NeRF deviation {r['nerf_relative_deviation']:.3g})"
        )
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``bench vsd`` and ``python -m dreampropeller.bench.vsd_gpu``."""
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--window", type=int, default=8)
    p.add_argument(
        "--arch", choices=["tiny", "small", "sd21-base"], help="default: sd21-base on CUDA, else tiny"
    )
    p.add_argument("--device", help="default: cuda when available, else cpu")
    p.add_argument("--modes", default="worker,synchronized,accepted", help="comma-separated LoRA modes")
    p.add_argument(
        "--threshold", type=float, default=DEFAULT_TOLERANCE, help="acceptance tolerance (exact steps^2)"
    )
    p.add_argument("--json", help="write the result to this JSON file")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed arguments; print the table, optionally write JSON."""
    if args.steps < 1 or args.window < 1:
        raise ValueError("--steps and --window must be >= 1")
    result = bench_vsd(args.steps, args.window, args.arch, args.device, args.modes.split(","), args.threshold)
    print(format_vsd(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dreampropeller.bench.vsd_gpu", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
