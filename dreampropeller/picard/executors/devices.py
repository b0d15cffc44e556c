"""The ``devices`` executor: one worker thread per local torch device, each with its own replica."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

from dreampropeller.picard.executors.sequential import Executor
from dreampropeller.picard.process import Drift, Process, State


def _move(x: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=False) for k, v in x.items()}


class DevicesExecutor(Executor):
    """One worker thread per torch device, each with its own replica of the process's static parts.

    Slot ``i`` of a window goes to device ``i % k``; with ``batch=True`` a device with several slots
    evaluates them with ``unit_batch`` (faster, equal within float rounding), else one by one (bit
    exact). Drifts come back on the states' device.
    """

    name = "devices"

    def __init__(self, devices: Sequence[torch.device | str], batch: bool = False) -> None:
        super().__init__()
        self.batch = batch
        if not devices:
            raise ValueError("the devices executor needs at least one device (e.g. cuda:0,cuda:1 or cpu,cpu)")
        self.devices = [torch.device(d) for d in devices]
        self._replicas: list[Process] = []
        self._bound: Process | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def bind(self, process: Process) -> None:
        if self._bound is process:
            return
        self._replicas = [process.replicate(d) for d in self.devices]
        self._bound = process
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=len(self.devices), thread_name_prefix="picard-device")

    def _work(
        self, k: int, states: list[State], ts: list[int], home: torch.device
    ) -> tuple[list[Drift], float]:
        device = self.devices[k]
        replica = self._replicas[k]
        t0 = time.perf_counter()
        moved = [_move(x, device) for x in states]
        comm = time.perf_counter() - t0
        drifts = (
            replica.unit_batch(moved, ts)
            if self.batch and len(moved) > 1 and replica.has_unit_batch
            else [replica.unit(x, t) for x, t in zip(moved, ts, strict=True)]
        )
        t1 = time.perf_counter()
        back = [_move(d, home) for d in drifts]
        comm += time.perf_counter() - t1
        return back, comm

    def evaluate(self, process: Process, states: Sequence[State], ts: Sequence[int]) -> list[Drift]:
        self.bind(process)
        assert self._pool is not None
        k = len(self.devices)
        home = next(iter(states[0].values())).device if states and states[0] else torch.device("cpu")
        shares = [list(range(i, len(states), k)) for i in range(k)]
        futures = {
            i: self._pool.submit(self._work, i, [states[j] for j in share], [ts[j] for j in share], home)
            for i, share in enumerate(shares)
            if share
        }
        out: list[Drift | None] = [None] * len(states)
        for i, fut in futures.items():
            drifts, comm = fut.result()
            with self._lock:
                self.comm_seconds += comm
            for j, d in zip(shares[i], drifts, strict=True):
                out[j] = d
        return out  # type: ignore[return-value]

    def worker_states(self, process: Process) -> list[State]:
        """Every replica's state outside the Picard state (one per device)."""
        self.bind(process)
        states = [r.worker_state() for r in self._replicas]
        return states if any(states) else []

    def load_worker_states(self, process: Process, states: Sequence[State]) -> None:
        """Restore each replica's state (the checkpoint must have one per device)."""
        if not states:
            return
        self.bind(process)
        if len(states) != len(self._replicas):
            raise ValueError(
                f"the checkpoint holds {len(states)} workers' state but there are {len(self._replicas)} "
                "devices: resume with the devices it was started with"
            )
        for replica, state in zip(self._replicas, states, strict=True):
            replica.load_worker_state(state)

    @property
    def parallel_width(self) -> int:
        return len(self.devices)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._replicas = []
        self._bound = None
