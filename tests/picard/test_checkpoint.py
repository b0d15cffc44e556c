"""One checkpoint format (safetensors + JSON metadata): bit exact for every dtype and layout."""

from __future__ import annotations

import pytest
import torch

from dreampropeller.picard.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

from .test_distributed_local import bits_equal, odd_state


def test_checkpoint_round_trip_and_bad_file(tmp_path):
    x = odd_state()
    path = save_checkpoint(tmp_path / "run" / "ckpt.safetensors", x, 17, {"fault": "rank 1 failed"})
    state, step, meta = load_checkpoint(path)
    assert step == 17 and meta == {"fault": "rank 1 failed"}
    assert bits_equal({k: state[k] for k in x}, {k: v.contiguous() for k, v in x.items()})
    assert not list(tmp_path.glob("run/*.tmp"))
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a dreampropeller checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_resolve_device():
    from dreampropeller.picard.device import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu7")
