"""The run directory: ``config.yaml``, ``log.txt``, ``checkpoint.safetensors`` and an ``INCOMPLETE``
marker until the exports and ``metrics.json`` are written, so a half-finished directory is never
mistaken for a result."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from dreampropeller.config.loading import ConfigError, to_dict
from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.picard.checkpoint import load_checkpoint, save_checkpoint
from dreampropeller.picard.process import State

INCOMPLETE = "INCOMPLETE"
CHECKPOINT = "checkpoint.safetensors"
CONFIG = "config.yaml"


def prepare_output(out: Path, overwrite: bool) -> None:
    """Refuse an existing non-empty directory unless ``overwrite`` (checked before any work)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(
            f"--out {str(out)!r} exists and is not empty: pass --overwrite or choose another directory"
        )


def start_directory(out: Path, cfg: TextTo3DConfig, overwrite: bool) -> None:
    """A fresh run directory holding ``config.yaml`` (the config as given) and the INCOMPLETE marker."""
    if out.exists() and overwrite:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / INCOMPLETE).write_text("this run has not finished; resume it with --resume\n")
    OmegaConf.save(OmegaConf.create(to_dict(cfg)), out / CONFIG)


def finish_directory(out: Path) -> None:
    """Drop the INCOMPLETE marker (after the exports and metrics are written)."""
    (out / INCOMPLETE).unlink(missing_ok=True)


WORKER = "worker/"  # checkpoint keys of state kept outside the Picard state: worker/<i>/<key>


def save_run_checkpoint(
    out: Path,
    state: State,
    step: int,
    solver_state: dict[str, Any] | None,
    workers: Sequence[State] = (),
) -> Path:
    """The run's checkpoint: the exact state, its step, the solver's resumable state and every worker's
    state outside the Picard state (a worker-mode VSD LoRA and its AdamW state, per replica)."""
    tensors = dict(state)
    for i, w in enumerate(workers):
        tensors.update({f"{WORKER}{i}/{k}": v for k, v in w.items()})
    return save_checkpoint(
        out / CHECKPOINT, tensors, step, {"solver": solver_state or {}, "workers": len(workers)}
    )


def _read(out: Path, device: torch.device | str) -> tuple[State, int, dict[str, Any]]:
    path = Path(out) / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint in {str(out)!r} (expected {CHECKPOINT})")
    return load_checkpoint(path, device)


def load_run_checkpoint(out: Path, device: torch.device | str = "cpu") -> tuple[State, int, dict[str, Any]]:
    """``(state, step, solver_state)`` of a run directory (older runs stored only the threshold); the
    workers' state is left out (:func:`load_run_workers`)."""
    tensors, step, meta = _read(out, device)
    state = {k: v for k, v in tensors.items() if not k.startswith(WORKER)}
    solver = meta.get("solver")
    if solver is None:
        solver = {"threshold": meta["threshold"]} if meta.get("threshold") is not None else {}
    return state, step, solver


def load_run_workers(out: Path, device: torch.device | str = "cpu") -> list[State]:
    """Every worker's state outside the Picard state saved in a run's checkpoint (``[]`` when none)."""
    tensors, _, meta = _read(out, device)
    workers: list[State] = [{} for _ in range(int(meta.get("workers", 0)))]
    for key, value in tensors.items():
        if key.startswith(WORKER):
            index, name = key[len(WORKER) :].split("/", 1)
            workers[int(index)][name] = value
    return workers


def log(out: Path, message: str) -> None:
    """Append a line to the run's log."""
    with (out / "log.txt").open("a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
