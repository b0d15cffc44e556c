"""Checkpoints of a Picard state: the tensors as safetensors, the step and any metadata as JSON.

One format for every caller: the run driver (``checkpoint.safetensors`` in a run directory, with the
solver's resumable state in the metadata) and distributed fault recovery. Writes go to a temporary
file renamed into place, so a crash never leaves a torn checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from dreampropeller.picard.process import PicardError, State

STEP = "step"
META = "extra"  # the JSON metadata's key in the safetensors header (the name run directories always used)


class CheckpointError(PicardError):
    """A file that is not a dreampropeller checkpoint."""


def save_checkpoint(path: str | Path, state: State, step: int, meta: dict[str, Any] | None = None) -> Path:
    """Atomically write ``state`` (moved to the CPU) with ``step`` and JSON-ready ``meta`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    header = {STEP: str(int(step)), META: json.dumps(meta or {})}
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp), metadata=header)
    os.replace(tmp, path)
    return path


def load_checkpoint(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[State, int, dict[str, Any]]:
    """``(state, step, meta)`` from :func:`save_checkpoint` (resume: ``solver.run(state, T, start=step)``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        state = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a dreampropeller checkpoint ({err})") from None
    if STEP not in header:
        raise CheckpointError(f"{path} is not a dreampropeller checkpoint (no step in its metadata)")
    return state, int(header[STEP]), json.loads(header.get(META, "{}"))
