"""Run checkpoints: the exact Picard state (parameters + optimizer state) as safetensors, plus metadata.

Writes go to a temporary file that is renamed into place, so a crash never leaves a torn checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from dreampropeller.picard.process import State

CHECKPOINT = "checkpoint.safetensors"


def save_checkpoint(directory: Path, state: State, step: int, extra: dict[str, Any] | None = None) -> Path:
    """Atomically write ``state`` and ``{"step": step, **extra}`` to ``directory/checkpoint.safetensors``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT
    tmp = directory / (CHECKPOINT + ".tmp")
    meta = {"step": str(int(step)), "extra": json.dumps(extra or {})}
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def load_checkpoint(directory: Path, device: torch.device | str = "cpu") -> tuple[State, int, dict[str, Any]]:
    """``(state, step, extra)`` from ``directory/checkpoint.safetensors``."""
    path = Path(directory) / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint in {str(directory)!r} (expected {CHECKPOINT})")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    state = load_file(str(path), device=str(device))
    return state, int(meta.get("step", 0)), json.loads(meta.get("extra", "{}"))
