"""How the units of a window are computed, and the registry of executors by name.

| name | module | what it does |
|---|---|---|
| ``sequential`` | :mod:`.sequential` | one unit after another (the base class :class:`Executor`) |
| ``batched`` | :mod:`.batched` | the whole window in one ``unit_batch`` call on one device |
| ``devices`` | :mod:`.devices` | a thread per local device, each with a replica of the process |
| ``distributed`` | :mod:`.distributed` | torch.distributed ranks started by ``torchrun`` |

The distributed module is imported only when asked for (it pulls in ``torch.distributed``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dreampropeller.picard.executors.batched import BatchedExecutor
from dreampropeller.picard.executors.devices import DevicesExecutor
from dreampropeller.picard.executors.sequential import Executor, SequentialExecutor

EXECUTORS = ("sequential", "batched", "devices", "distributed")

__all__ = [
    "EXECUTORS",
    "BatchedExecutor",
    "DevicesExecutor",
    "Executor",
    "SequentialExecutor",
    "make_executor",
]


def make_executor(name: str, devices: Sequence[str] | None = None, max_batch: int | None = None) -> Executor:
    """An executor by name (one of :data:`EXECUTORS`); ``devices`` defaults to all CUDA devices, else CPU."""
    if name == "sequential":
        return SequentialExecutor()
    if name == "batched":
        return BatchedExecutor(max_batch)
    if name == "devices":
        if not devices:
            n = torch.cuda.device_count()
            devices = [f"cuda:{i}" for i in range(n)] if n else ["cpu"]
        return DevicesExecutor(devices)
    if name == "distributed":
        from dreampropeller.picard.executors.distributed import DistributedExecutor

        return DistributedExecutor()
    raise ValueError(f"unknown executor {name!r}: use sequential, batched, devices or distributed")
