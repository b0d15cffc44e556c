"""Driving a text- / image-to-3D run: resolve once, build the process, solve with progress and
checkpoints, handle Ctrl-C / NaN / faults, then write the outputs and ``metrics.json``.

``generate`` is the public entry point (also ``dreampropeller generate``); ``solve`` is the loop
without a run directory (``bench generate`` uses it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dreampropeller.config.loading import build, merge_config
from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.export.mesh import Mesh
from dreampropeller.guidance.registry import load_prior
from dreampropeller.guidance.tiny.library import PromptError, parse_prompt
from dreampropeller.picard.executors import Executor
from dreampropeller.picard.process import Process, State
from dreampropeller.picard.solver import IterationInfo, PicardSolver, SolverResult
from dreampropeller.report.live import check_logger
from dreampropeller.report.write import write_run_report
from dreampropeller.runs.assets import asset_of, mesh_report, score_asset
from dreampropeller.runs.directory import (
    finish_directory,
    load_run_checkpoint,
    load_run_workers,
    log,
    prepare_output,
    save_run_checkpoint,
    start_directory,
)
from dreampropeller.runs.loading import dmtet_init_sdf, texture_start
from dreampropeller.runs.metrics import run_metrics
from dreampropeller.runs.outputs import write_outputs
from dreampropeller.runs.progress import Progress
from dreampropeller.runs.reference import REFERENCE_RESOLUTION, reference_scores
from dreampropeller.runs.resolve import resolve_config, run_device, run_executor, solver_config
from dreampropeller.systems.factory import build_process


class RunError(RuntimeError):
    """A run that stopped early (NaN, interrupt): the message says where its checkpoint is."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def make_process(cfg: TextTo3DConfig) -> Process:
    """Load the prior of a resolved config and build its process (prompt encoded once); a DMTet run
    with ``dmtet.init_from`` starts from that NeRF run's density field, a texture run from the UV-unwrapped
    mesh of its ``texture.init_from``."""
    device = run_device(cfg)
    init_sdf, uv_start = dmtet_init_sdf(cfg, device), texture_start(cfg, device)
    prior = load_prior(cfg.prior, cfg.prior_path, device)
    return build_process(cfg, prior, device, init_sdf=init_sdf, uv_start=uv_start)


def solve(
    process: Process,
    cfg: TextTo3DConfig,
    executor: Executor,
    state: State | None = None,
    start: int = 0,
    solver_state: dict[str, Any] | None = None,
    callback: Callable[[IterationInfo], None] | None = None,
) -> SolverResult:
    """Run the solver of a resolved config from ``state`` at ``start`` (default: a fresh state)."""
    solver = PicardSolver(process, solver_config(cfg), executor=executor, callback=callback)
    if solver_state:
        solver.load_state_dict(solver_state)
    return solver.run(process.initial_state() if state is None else state, cfg.steps, start)


def _stopped(result: SolverResult, cfg: TextTo3DConfig, out: Path) -> RunError | None:
    """The error of a run that did not finish (interrupt, fault, NaN), logged; None when it finished."""
    status, step = result.stats.status, result.step
    if status == "interrupted":
        log(out, f"interrupted at step {step}")
        return RunError(
            f"interrupted at step {step}/{cfg.steps}; checkpoint saved: resume with "
            f"`dreampropeller generate --resume {out}`",
            130,
        )
    if status == "fault":
        log(out, f"fault at step {step}: {result.fault}")
        return RunError(f"{result.fault}; checkpoint of step {step} saved: resume with --resume {out}", 1)
    if status == "nan":
        log(out, f"NaN at step {step}")
        return RunError(
            f"NaN/Inf at step {step} (in its gradients or update); stopped and kept the last good "
            f"checkpoint (step {step}) in {out}. Lower the learning rate or the guidance scale.",
            1,
        )
    return None


def run_text_to_3d(
    cfg: TextTo3DConfig,
    out: Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    exports: bool = True,
    existing_ok: bool = False,
) -> dict[str, Any]:
    """Run (or resume) ``cfg`` into ``out``; returns the metrics written to ``out/metrics.json``.
    ``existing_ok``: ``out`` may already hold files (a staged run's directory, :mod:`.stages`)."""
    out = Path(out)
    run = resolve_config(cfg)
    check_logger(run.logger)  # an optional extra that may be missing: before anything is written
    executor = run_executor(run)  # first: under torchrun it picks this rank's GPU
    if getattr(executor, "rank", 0) > 0:  # a distributed worker: evaluate units for rank 0, write nothing
        return {"rank": executor.rank, "exit_code": executor.serve_all([make_process(run)])}
    if not resume and not existing_ok:
        prepare_output(out, overwrite)
    process = make_process(run)
    start, state, solver_state = 0, None, None
    workers = lambda: executor.worker_states(process)  # noqa: E731 (a VSD worker LoRA, per replica)
    if resume:
        state, start, solver_state = load_run_checkpoint(out, run_device(run))
        executor.load_worker_states(process, load_run_workers(out, run_device(run)))
    else:
        start_directory(out, cfg, overwrite)
        state = process.initial_state()
        save_run_checkpoint(out, state, 0, {}, workers())
    log(
        out,
        f"{'resume' if resume else 'start'} at step {start}/{run.steps}: window {run.picard.window}, "
        f"executor {executor.name}, device {run.device}, prior {run.prior}",
    )
    bar = Progress(out, run.steps, start, progress, cfg=run, workers=workers)
    t0 = time.perf_counter()
    try:
        result = solve(process, run, executor, state, start, solver_state, callback=bar)
        final_workers = workers()  # before the executor lets its replicas go
    finally:
        bar.close()
        executor.close()
    save_run_checkpoint(out, result.state, result.step, result.solver_state, final_workers)
    stopped = _stopped(result, run, out)
    if stopped is not None:
        raise stopped
    train_s = time.perf_counter() - t0
    metrics = run_metrics(run, result, executor.name, train_s)
    if hasattr(executor, "report"):
        metrics["executor_report"] = executor.report()
    if exports:
        t1 = time.perf_counter()
        asset = asset_of(run, result.state, run.steps)
        mesh = write_outputs(asset, out, run)
        metrics["mesh"] = mesh_report(mesh)
        if run.image.path:  # image-to-3D: how well the front view reproduces the reference image
            metrics["reference"] = reference_scores(asset.render_fn(REFERENCE_RESOLUTION), run)
        metrics["wall_clock_split"]["export_s"] = round(time.perf_counter() - t1, 3)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    finish_directory(out)
    if exports:
        write_library_scores(asset, run, out, mesh)  # eval.json, which the report shows
        write_run_report(out)  # report.html: the run in a browser (a failure is a warning, never fatal)
    log(out, f"done: {result.stats.iterations} iterations for {run.steps - start} steps in {train_s:.1f}s")
    return metrics


def write_library_scores(
    asset: Any, cfg: TextTo3DConfig, out: Path, mesh: Mesh | None = None
) -> dict[str, Any] | None:
    """``eval.json`` (``dreampropeller eval``'s scores) of a run with the embedded prior whose prompt names
    a library shape and colour, so its report shows them; other runs have no truth to score against."""
    if cfg.prior != "tiny":
        return None
    try:
        parse_prompt(cfg.prompt)
    except PromptError:
        return None
    scores = score_asset(asset, cfg.prompt, mesh)
    scores["run_dir"] = str(out)
    (out / "eval.json").write_text(json.dumps(scores, indent=2) + "\n")
    return scores


def load_config(
    prompt: str | None = None,
    files: Sequence[str] = (),
    overrides: Sequence[str] = (),
    **settings: Any,
) -> TextTo3DConfig:
    """A run config: defaults + YAML ``files`` + ``settings`` (``steps=200``, ``representation=...``)
    + ``key=value`` ``overrides``; unknown keys are an error naming the key."""
    extra = {k: v for k, v in settings.items() if v is not None}
    if prompt is not None:
        extra["prompt"] = prompt
    data = merge_config(TextTo3DConfig(), files, overrides, free=["optimizer"], extra=extra)
    return build(TextTo3DConfig, data)


def generate(
    prompt: str,
    out: str | Path,
    *,
    config: Sequence[str] = (),
    overrides: Sequence[str] = (),
    overwrite: bool = False,
    progress: bool = True,
    **settings: Any,
) -> dict[str, Any]:
    """Text-to-3D into the run directory ``out`` (what ``dreampropeller generate`` does); returns the
    metrics. ``settings`` are top-level config keys (``steps=200``, ``seed=1``), ``overrides`` dotted
    ``key=value`` strings (``picard.window=8``), ``config`` YAML files or bundled config names."""
    cfg = load_config(prompt, config, overrides, **settings)
    return run_text_to_3d(cfg, Path(out), overwrite=overwrite, progress=progress)
