"""Driving a text-to-3D run: device and window choice, the solver loop with progress and checkpoints,
Ctrl-C / NaN handling, and the exports of a finished run.

A run directory holds ``config.yaml``, ``log.txt`` and ``checkpoint.safetensors`` while it works and
an ``INCOMPLETE`` marker until the exports and ``metrics.json`` are written, so a half-finished
directory is never mistaken for a result.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from dreampropeller.export.fields import nerf_color_fn, nerf_density_fn, nerf_render_fn
from dreampropeller.export.mesh import extract_mesh, write_glb, write_obj
from dreampropeller.export.video import write_turntable, write_views_png
from dreampropeller.guidance.prior import DiffusionPrior
from dreampropeller.guidance.registry import load_prior
from dreampropeller.picard.executors import Executor, make_executor
from dreampropeller.picard.process import State
from dreampropeller.picard.solver import IterationInfo, PicardSolver, SolverConfig, SolverResult
from dreampropeller.scene.cameras import Cameras
from dreampropeller.scene.volume import occupancy_grid, render_cameras
from dreampropeller.systems.checkpoint import load_checkpoint, save_checkpoint
from dreampropeller.systems.config import ConfigError, build, to_dict
from dreampropeller.systems.gaussian_run import (
    check_gaussian_memory,
    export_gaussian_run,
    gaussian_assets,
    make_gaussian_process,
    validate_gaussian_run,
)
from dreampropeller.systems.text_to_3d import TextTo3D, TextTo3DConfig, levels_at

INCOMPLETE = "INCOMPLETE"
CPU_WINDOW = 1  # measured: on 2 CPU cores a window's extra units cost more than batching saves (README)
GPU_WINDOW = 8
OCCUPANCY_LEVEL = 0.05  # density below which a cell is skipped in exports (max pixel change ~0.04)


class RunError(RuntimeError):
    """A run that stopped early (NaN, interrupt): the message says where its checkpoint is."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for but CUDA is not available: use --device cpu")
    return device


def resolve_window(window: Any, device: torch.device) -> int:
    """``auto`` -> what is fastest on this hardware (see README: measured), else the integer given."""
    if window in (None, "auto"):
        return GPU_WINDOW if device.type == "cuda" else CPU_WINDOW
    try:
        w = int(window)
    except (TypeError, ValueError):
        raise ConfigError(f"window must be a positive integer or 'auto', got {window!r}") from None
    if w < 1:
        raise ConfigError(f"window must be >= 1, got {w}")
    return w


def solver_config(cfg: TextTo3DConfig, window: int) -> SolverConfig:
    """The solver settings of a run's ``picard`` section at a resolved window."""
    p = cfg.picard
    return SolverConfig(
        window=window,
        threshold=p.threshold,
        adaptive=p.adaptive,
        ema=p.ema,
        aggregate=p.aggregate,
        init=p.init,
        scale=p.scale,
    )


def resolve_executor(cfg: TextTo3DConfig, device: torch.device) -> Executor:
    """``auto`` -> batched (one prior forward for the whole window) on any single device."""
    name = cfg.picard.executor
    if name == "auto":
        name = "batched"
    return make_executor(name, cfg.picard.devices or None, cfg.picard.max_batch)


def validate(cfg: TextTo3DConfig) -> None:
    """Cheap checks before anything is loaded or written."""
    if (not cfg.prompt or not cfg.prompt.strip()) and not cfg.image.path:
        raise ConfigError("the prompt is empty: give a text such as 'a red cube'")
    if not isinstance(cfg.steps, int) or cfg.steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {cfg.steps!r}")
    if cfg.representation not in ("nerf", "gaussians"):
        raise ConfigError(f"representation {cfg.representation!r} is not available: use nerf or gaussians")
    if cfg.image.path and cfg.representation != "gaussians":
        raise ConfigError("image-to-3D (--image) needs --representation gaussians")
    if cfg.representation == "gaussians":
        validate_gaussian_run(cfg)
    for name in ("height", "width", "batch_size", "num_samples"):
        if int(getattr(cfg.render, name)) < 1:
            raise ConfigError(f"render.{name} must be >= 1, got {getattr(cfg.render, name)}")


def prepare_output(out: Path, overwrite: bool) -> None:
    """Refuse an existing non-empty directory unless ``overwrite`` (checked before any work)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(
            f"--out {str(out)!r} exists and is not empty: pass --overwrite or choose another directory"
        )


def build_process(cfg: TextTo3DConfig, prior: DiffusionPrior, device: torch.device) -> TextTo3D:
    """The run's process for a loaded prior: NeRF + SDS, NeRF + VSD, or Gaussians."""
    if cfg.guidance not in ("sds", "vsd"):
        raise ConfigError(f"guidance must be sds or vsd, got {cfg.guidance!r}")
    if cfg.representation == "gaussians":
        return make_gaussian_process(cfg, prior, device)
    if cfg.guidance == "vsd":
        from dreampropeller.systems.vsd import TextTo3DVSD

        return TextTo3DVSD(cfg, prior, device)
    return TextTo3D(cfg, prior, device)


def make_process(cfg: TextTo3DConfig, device: torch.device) -> TextTo3D:
    """Load the prior and build the process (prompt encoded once)."""
    if cfg.guidance not in ("sds", "vsd"):
        raise ConfigError(f"guidance must be sds or vsd, got {cfg.guidance!r}")
    return build_process(cfg, load_prior(cfg.prior, cfg.prior_path, device), device)


@dataclass
class Progress:
    """A tqdm bar of accepted steps with Picard iterations and the threshold, plus periodic checkpoints."""

    out: Path
    total: int
    start: int
    enabled: bool = True
    checkpoint_every_s: float = 60.0

    def __post_init__(self) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=self.total, initial=self.start, disable=not self.enabled, unit="step", dynamic_ncols=True
        )
        self.last_save = time.perf_counter()

    def __call__(self, info: IterationInfo) -> None:
        self.bar.update(info.accepted)
        self.bar.set_postfix(
            iters=info.iteration, speedup=f"{info.stats.rounds_speedup:.2f}x", thr=f"{info.threshold:.3g}"
        )
        if time.perf_counter() - self.last_save > self.checkpoint_every_s:
            save_checkpoint(self.out, info.state, info.step, {"threshold": info.threshold})
            self.last_save = time.perf_counter()

    def close(self) -> None:
        self.bar.close()


def log(out: Path, message: str) -> None:
    """Append a line to the run's log."""
    with (out / "log.txt").open("a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")


def run_text_to_3d(
    cfg: TextTo3DConfig,
    out: Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    exports: bool = True,
) -> dict[str, Any]:
    """Run (or resume) ``cfg`` into ``out``; returns the metrics written to ``out/metrics.json``."""
    validate(cfg)
    device = resolve_device(cfg.device)
    window = resolve_window(cfg.picard.window, device)
    if cfg.representation == "gaussians":
        check_gaussian_memory(cfg, window, device)
    executor = resolve_executor(cfg, device)  # first: under torchrun it picks this rank's GPU
    if getattr(executor, "rank", 0) > 0:  # a distributed worker: evaluate units for rank 0, write nothing
        process = make_process(cfg, device)
        return {"rank": executor.rank, "exit_code": executor.serve_all([process])}
    if not resume:
        prepare_output(out, overwrite)
    process = make_process(cfg, device)
    solver_cfg = solver_config(cfg, window)
    start, state = 0, None
    if resume:
        state, start, extra = load_checkpoint(out, device)
        if extra.get("threshold") is not None and cfg.picard.adaptive:
            solver_cfg.threshold = float(extra["threshold"])
    else:
        if out.exists() and overwrite:
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / INCOMPLETE).write_text("this run has not finished; resume it with --resume\n")
        OmegaConf.save(OmegaConf.create(to_dict(cfg)), out / "config.yaml")
        state = process.initial_state()
        save_checkpoint(out, state, 0, {"threshold": None})
    log(
        out,
        f"{'resume' if resume else 'start'} at step {start}/{cfg.steps}: window {window}, "
        f"executor {executor.name}, device {device}, prior {cfg.prior}",
    )
    bar = Progress(out, cfg.steps, start, progress)
    solver = PicardSolver(process, solver_cfg, executor=executor, callback=bar)
    t0 = time.perf_counter()
    try:
        result = solver.run(state, cfg.steps, start)
    finally:
        bar.close()
        executor.close()
    save_checkpoint(out, result.state, result.step, {"threshold": result.threshold})
    if result.stats.status == "interrupted":
        log(out, f"interrupted at step {result.step}")
        raise RunError(
            f"interrupted at step {result.step}/{cfg.steps}; checkpoint saved: resume with "
            f"`dreampropeller generate --resume {out}`",
            130,
        )
    if result.stats.status == "fault":
        log(out, f"fault at step {result.step}: {result.fault}")
        raise RunError(
            f"{result.fault}; checkpoint of step {result.step} saved: resume with --resume {out}", 1
        )
    if result.stats.status == "nan":
        log(out, f"NaN at step {result.step}")
        raise RunError(
            f"NaN/Inf at step {result.step} (in its gradients or update); stopped and kept the last good "
            f"checkpoint (step {result.step}) in {out}. Lower the learning rate or the guidance scale.",
            1,
        )
    train_s = time.perf_counter() - t0
    metrics = run_metrics(cfg, result, window, executor.name, device, train_s)
    if hasattr(executor, "report"):
        metrics["executor_report"] = executor.report()
    if exports:
        t1 = time.perf_counter()
        if cfg.representation == "gaussians":
            export_gaussian_run(result.state, out, cfg)
        else:
            export_nerf(process, result.state, out, cfg)
        metrics["wall_clock_split"]["export_s"] = round(time.perf_counter() - t1, 3)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / INCOMPLETE).unlink(missing_ok=True)
    log(out, f"done: {result.stats.iterations} iterations for {cfg.steps - start} steps in {train_s:.1f}s")
    return metrics


def run_metrics(
    cfg: TextTo3DConfig,
    result: SolverResult,
    window: int,
    executor: str,
    device: torch.device,
    train_s: float,
) -> dict[str, Any]:
    """What ``metrics.json`` holds."""
    s = result.stats
    return {
        "prompt": cfg.prompt,
        "seed": cfg.seed,
        "prior": cfg.prior,
        "device": str(device),
        "steps": cfg.steps,
        "start": s.start,
        "window": window,
        "executor": executor,
        "iterations": s.iterations,
        "unit_evals": s.unit_evals,
        "rounds_speedup": round(s.rounds_speedup, 4),
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


def nerf_params(process: TextTo3D, state: State) -> dict[str, torch.Tensor]:
    """The NeRF parameters of a state."""
    return {k: state[k] for k in process.param_keys}


def export_nerf(process: TextTo3D, state: State, out: Path, cfg: TextTo3DConfig) -> None:
    """Turntable video, a 4-view PNG and a vertex-coloured mesh (obj + glb) of a finished NeRF."""
    e = cfg.export
    params = nerf_params(process, state)
    levels = process.active_levels(cfg.steps)
    # empty space is skipped through an occupancy grid of the final density: exports cost a fraction
    occupancy = occupancy_grid(
        nerf_density_fn(params, cfg.nerf, levels), cfg.nerf.radius, 64, OCCUPANCY_LEVEL
    )
    render = nerf_render_fn(
        params,
        cfg.nerf,
        e.video_size,
        e.video_size,
        e.video_samples,
        shading="diffuse",
        active_levels=levels,
        occupancy=occupancy,
    )
    view = {"elevation": e.elevation, "distance": e.distance, "fovy": e.fovy}
    with torch.no_grad():
        write_turntable(
            render, out / "turntable.mp4", n_views=e.turntable_views, fps=e.fps, progress=False, **view
        )
        write_views_png(render, out / "views.png", n=4, **view)
        mesh = extract_mesh(
            nerf_density_fn(params, cfg.nerf, levels),
            nerf_color_fn(params, cfg.nerf, levels),
            bound=cfg.nerf.radius,
            resolution=e.mesh_resolution,
            threshold=e.mesh_threshold,
        )
    write_obj(mesh, out / "mesh.obj")
    write_glb(mesh, out / "mesh.glb")


def load_run(run_dir: Path, device: torch.device | str = "cpu") -> tuple[TextTo3DConfig, State, int]:
    """Config, checkpointed state and step of a run directory."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{str(run_dir)!r} is not a run directory (no config.yaml)")
    cfg = build(TextTo3DConfig, OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True))
    state, step, _ = load_checkpoint(run_dir, device)
    return cfg, state, step


def eval_renderer(
    cfg: TextTo3DConfig, params: dict[str, torch.Tensor], levels: int
) -> Callable[[Cameras], tuple[torch.Tensor, torch.Tensor]]:
    """``render_fn(cameras) -> (rgb [B, 3, H, W] on white, alpha [B, 1, H, W])`` of one NeRF (no grad)."""
    slotted = {k: v.detach()[None] for k, v in params.items()}

    def render_fn(cameras: Cameras, resolution: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            out = render_cameras(
                slotted,
                cameras,
                resolution,
                resolution,
                cfg.nerf,
                num_samples=64,
                shading="diffuse",
                active_levels=levels,
                ray_chunk=16384,
            )
        return out["rgb"][0].permute(0, 3, 1, 2), out["opacity"][0].permute(0, 3, 1, 2)

    return render_fn


def eval_mesh(cfg: TextTo3DConfig, params: dict[str, torch.Tensor], levels: int) -> tuple[Any, Any]:
    """``(vertices, faces)`` of the NeRF's surface in the canonical z-up frame."""
    with torch.no_grad():
        mesh = extract_mesh(
            nerf_density_fn(params, cfg.nerf, levels),
            None,
            bound=cfg.nerf.radius,
            resolution=cfg.export.mesh_resolution,
            threshold=cfg.export.mesh_threshold,
        )
    return mesh.vertices, mesh.faces


def state_assets(
    process: TextTo3D, cfg: TextTo3DConfig, state: State, step: int
) -> tuple[Callable[[Cameras], tuple[torch.Tensor, torch.Tensor]], tuple[Any, Any]]:
    """``(render_fn, (vertices, faces))`` of a state, for evaluation (dispatch on the representation)."""
    if cfg.representation == "gaussians":
        return gaussian_assets(cfg, state)
    params = {k: state[k] for k in process.param_keys}
    levels = levels_at(cfg, step)
    return eval_renderer(cfg, params, levels), eval_mesh(cfg, params, levels)


def load_run_renderer(
    run_dir: Path,
) -> tuple[Callable[[Cameras], tuple[torch.Tensor, torch.Tensor]], str, Any]:
    """``(render_fn, prompt, mesh)`` of a NeRF run for evaluation (mesh re-extracted z-up)."""
    cfg, state, step = load_run(run_dir)
    if cfg.representation == "gaussians":
        render_fn, mesh = gaussian_assets(cfg, state)
        return render_fn, cfg.prompt, mesh
    params = {k: v for k, v in state.items() if not k.startswith("optim/")}
    levels = levels_at(cfg, step)
    return eval_renderer(cfg, params, levels), cfg.prompt, eval_mesh(cfg, params, levels)
