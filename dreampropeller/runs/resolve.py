"""Choices made once per run: device, Picard window and executor (``auto`` resolved here, and only
here), written back into the config the run then uses, plus the solver settings of that config."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from dreampropeller.config.loading import ConfigError
from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.picard.device import resolve_device
from dreampropeller.picard.executors import Executor, make_executor
from dreampropeller.picard.solver import SolverConfig
from dreampropeller.systems.factory import validate
from dreampropeller.systems.gaussian_memory import check_memory

CPU_WINDOW = 1  # measured: on 2 CPU cores a window's extra units cost more than batching saves (README)
GPU_WINDOW = 8


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


def resolve_config(cfg: TextTo3DConfig) -> TextTo3DConfig:
    """``cfg`` validated, with ``device``, ``picard.window`` and ``picard.executor`` resolved (``auto``:
    CUDA when present; the measured window of the hardware; ``batched``, one prior forward per window).

    A Gaussian run's estimated peak memory is checked here, at the resolved window.
    """
    validate(cfg)
    try:
        device = resolve_device(cfg.device)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    window = resolve_window(cfg.picard.window, device)
    executor = "batched" if cfg.picard.executor == "auto" else cfg.picard.executor
    picard = dataclasses.replace(cfg.picard, window=window, executor=executor)
    resolved = dataclasses.replace(cfg, device=str(device), picard=picard)
    if cfg.representation == "gaussians":
        check_memory(resolved, window, device, extra_views=1 if cfg.image.path else 0)
    return resolved


def run_device(cfg: TextTo3DConfig) -> torch.device:
    """The torch device of a resolved config."""
    return torch.device(cfg.device)


def run_executor(cfg: TextTo3DConfig) -> Executor:
    """The executor of a resolved config (under torchrun, ``distributed`` picks this rank's GPU)."""
    return make_executor(cfg.picard.executor, cfg.picard.devices or None, cfg.picard.max_batch)


def solver_config(cfg: TextTo3DConfig) -> SolverConfig:
    """The solver settings of a resolved config's ``picard`` section (every :class:`SolverConfig` knob)."""
    knobs = {f.name: getattr(cfg.picard, f.name) for f in dataclasses.fields(SolverConfig)}
    return SolverConfig(**{**knobs, "window": int(cfg.picard.window)})


def with_solver(cfg: TextTo3DConfig, solver: SolverConfig, executor: str) -> TextTo3DConfig:
    """``cfg`` whose ``picard`` section holds ``solver``'s knobs (window 1 runs the sequential executor)."""
    knobs = {f.name: getattr(solver, f.name) for f in dataclasses.fields(SolverConfig)}
    picard = dataclasses.replace(
        cfg.picard, **knobs, executor="sequential" if solver.window == 1 else executor
    )
    return dataclasses.replace(cfg, picard=picard)
