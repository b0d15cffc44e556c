"""The ``distributed`` executor: a window's units on the ranks of a torch.distributed process group.

Started by torchrun (env:// rendezvous); every rank builds the same process (its static parts, e.g.
prior weights, load once per rank). Rank 0 runs the solver and rolls out; every rank (rank 0 too,
unless ``include_rank0=False``) evaluates its share of the window: slot ``i`` goes to the ``i``-th
computing rank, round robin. Ranks > 0 sit in :meth:`DistributedExecutor.serve`.

Only what a unit needs travels: the entries ``process.param_keys`` plus the optional
``process.unit_keys`` (never the optimizer moments). One window is one message each way:

* down, collectives from rank 0: a header ``int64[2] = (opcode, meta bytes)`` and the meta (JSON:
  per rank its slots ``(t, state index)`` and the layout of its states) broadcast on a gloo control
  group; then every rank's states as ONE flat byte buffer each, scattered (NCCL for CUDA states);
* up, point to point so that a silent rank is named: ``int64[2] = (meta bytes, payload bytes)``, the
  meta (drift layouts, or the text of an exception) and the drifts as one flat byte buffer.

Bytes travel as raw bytes, so a drift computed on rank 3 is bit for bit the drift rank 0 would
have computed. Every wait has a deadline (``timeout`` for rank 0 and for a message in flight,
``idle_timeout`` for a worker waiting for the next window); a rank that dies or hangs makes rank 0
raise :class:`DistributedFault`, which the solver turns into ``status="fault"`` with the last exact
state (resume with ``solver.run(state, T, start=step)``). Nothing waits forever.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import signal
import threading
import time
import traceback
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist

from dreampropeller.picard.executors.sequential import Executor
from dreampropeller.picard.process import Drift, PicardError, Process, State

ENV_TIMEOUT = "DREAMPROPELLER_DIST_TIMEOUT"
ENV_IDLE_TIMEOUT = "DREAMPROPELLER_DIST_IDLE_TIMEOUT"
ENV_BACKEND = "DREAMPROPELLER_DIST_BACKEND"
ENV_INCLUDE_RANK0 = "DREAMPROPELLER_DIST_INCLUDE_RANK0"
ENV_BATCH = "DREAMPROPELLER_DIST_BATCH"
DEFAULT_TIMEOUT = 300.0
DEFAULT_IDLE_TIMEOUT = 3600.0

_WORK, _RELEASE, _STOP = 1, 2, 3
_ALIGN = 16  # byte offset of every tensor in a buffer (any dtype can be viewed in place)
_FRAME, _HEAD = 4096, 24  # control message size; its int64 head (op, meta bytes, payload bytes)


class DistributedError(PicardError):
    """Bad use of the distributed executor (wrong rank, bad setting, missing entries)."""


class DistributedFault(RuntimeError):
    """A rank died, hung or could not be reached: the run stops with its last exact state.

    ``resumable`` tells the solver to return that state (``status="fault"``) instead of raising.
    """

    resumable = True

    def __init__(self, message: str, rank: int | None = None, operation: str = "") -> None:
        super().__init__(message)
        self.rank = rank
        self.operation = operation


class RemoteUnitError(RuntimeError):
    """A unit raised an exception on another rank (the message carries its traceback)."""


# -- settings ------------------------------------------------------------------------------------------
def _seconds(value: float | None, env: str, default: float) -> float:
    if value is None:
        raw = os.environ.get(env)
        if raw is None or raw == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            raise DistributedError(f"{env} must be a number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise DistributedError(f"timeouts must be positive finite seconds, got {value!r} (check {env})")
    return float(value)


def _flag(value: bool | None, env: str, default: bool) -> bool:
    if value is not None:
        return bool(value)
    raw = os.environ.get(env, "").strip().lower()
    if raw in ("", "default"):
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise DistributedError(f"{env} must be 0 or 1, got {raw!r}")


# -- wire format: tensors <-> one byte buffer ------------------------------------------------------------
def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise DistributedError(f"unknown dtype {name!r} in a message (ranks with different torch versions?)")
    return dtype


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def layout_of(x: dict[str, torch.Tensor]) -> tuple[list[list[Any]], int]:
    """``[[key, dtype, shape], ...]`` of ``x`` and the bytes its buffer needs."""
    entries = [[k, str(v.dtype), list(v.shape)] for k, v in x.items()]
    return entries, sum(_aligned(v.numel() * v.element_size()) for v in x.values())


def pack_into(buffer: torch.Tensor, x: dict[str, torch.Tensor]) -> None:
    """Write the raw bytes of ``x``'s tensors into ``buffer`` (uint8), each at an aligned offset."""
    offset = 0
    for v in x.values():
        nbytes = v.numel() * v.element_size()
        if nbytes:
            raw = v.detach().reshape(-1).view(torch.uint8)
            buffer[offset : offset + nbytes].copy_(raw, non_blocking=False)
        offset += _aligned(nbytes)


def unpack(buffer: torch.Tensor, layout: list[list[Any]], device: torch.device) -> dict[str, torch.Tensor]:
    """The tensors written by :func:`pack_into`, bit for bit, on ``device``."""
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for key, dtype_name, shape in layout:
        dtype = _dtype(dtype_name)
        numel = math.prod(shape)
        nbytes = numel * dtype.itemsize
        if nbytes:
            value = buffer[offset : offset + nbytes].view(dtype).reshape(shape)
        else:
            value = torch.empty(shape, dtype=dtype, device=buffer.device)
        out[key] = value.to(device)
        offset += _aligned(nbytes)
    return out


def pack(xs: Sequence[dict[str, torch.Tensor]], device: torch.device) -> tuple[list[Any], torch.Tensor]:
    """Layouts of ``xs`` and one uint8 buffer on ``device`` holding all of them, back to back."""
    layouts = [layout_of(x) for x in xs]
    buffer = torch.empty(sum(n for _, n in layouts), dtype=torch.uint8, device=device)
    offset = 0
    for x, (_, n) in zip(xs, layouts, strict=True):
        pack_into(buffer[offset : offset + n], x)
        offset += n
    return [entries for entries, _ in layouts], buffer


def unpack_all(
    buffer: torch.Tensor, layouts: list[Any], device: torch.device
) -> list[dict[str, torch.Tensor]]:
    """Inverse of :func:`pack`."""
    out = []
    offset = 0
    for entries in layouts:
        n = sum(_aligned(math.prod(s) * _dtype(d).itemsize) for _, d, s in entries)
        out.append(unpack(buffer[offset : offset + n], entries, device))
        offset += n
    return out


def make_frame(op: int, meta: Any = None, nbytes: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A fixed-size control message ``(op, meta length, payload bytes, meta JSON)``.

    The JSON rides inside the frame when it fits (one message instead of two); else it is returned
    as a second tensor to send after the frame.
    """
    raw = json.dumps(meta).encode() if meta is not None else b""
    frame = torch.zeros(_FRAME, dtype=torch.uint8)
    frame[:_HEAD].view(torch.int64).copy_(torch.tensor([op, len(raw), nbytes]))
    extra = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else None
    if extra is not None and len(raw) <= _FRAME - _HEAD:
        frame[_HEAD : _HEAD + len(raw)] = extra
        extra = None
    return frame, extra


def read_frame(frame: torch.Tensor) -> tuple[int, int, int, Any]:
    """``(op, meta length, payload bytes, meta)``; meta is ``...`` when it follows in its own message."""
    op, meta_len, nbytes = (int(v) for v in frame[:_HEAD].view(torch.int64))
    if meta_len == 0:
        return op, meta_len, nbytes, None
    if meta_len > _FRAME - _HEAD:
        return op, meta_len, nbytes, ...
    return op, meta_len, nbytes, json.loads(frame[_HEAD : _HEAD + meta_len].numpy().tobytes())


def _json_of(t: torch.Tensor) -> Any:
    return json.loads(t.numpy().tobytes())


def travelling_keys(process: Process, x: State) -> list[str]:
    """The entries a unit needs: ``param_keys`` plus ``unit_keys`` (every entry if both are empty)."""
    wanted = set(process.param_keys) | set(getattr(process, "unit_keys", ()) or ())
    if not wanted:
        return list(x)
    missing = sorted(wanted - set(x))
    if missing:
        raise DistributedError(
            f"the state lacks {missing[:3]} named by the process's param_keys/unit_keys: "
            "list only entries the state has"
        )
    return [k for k in x if k in wanted]


def assign_slots(n: int, ranks: Sequence[int]) -> dict[int, list[int]]:
    """Round robin: slot ``i`` goes to ``ranks[i % len(ranks)]``."""
    if not ranks:
        raise DistributedError("no rank computes units: keep include_rank0=True or use more than one rank")
    shares: dict[int, list[int]] = {r: [] for r in ranks}
    for i in range(n):
        shares[ranks[i % len(ranks)]].append(i)
    return shares


# -- the executor ----------------------------------------------------------------------------------------
class DistributedExecutor(Executor):
    """Units on the ranks of a torch.distributed group; rank 0 solves, ranks > 0 :meth:`serve`.

    Joins the group torchrun set up (``init_process_group`` with env:// if none exists yet: NCCL when
    CUDA is available, else gloo; device ``cuda:LOCAL_RANK``). Without a launcher (``WORLD_SIZE``
    unset or 1) it is the sequential executor (``batch=True``: the batched one).

    ``timeout``: seconds rank 0 waits for any operation, including a worker's units
    (``DREAMPROPELLER_DIST_TIMEOUT``, default 300). ``idle_timeout``: seconds a worker waits for the
    next window (``DREAMPROPELLER_DIST_IDLE_TIMEOUT``, default 3600). ``batch``: a rank evaluates its
    share with ``unit_batch`` (faster, not bit exact).
    """

    name = "distributed"

    def __init__(
        self,
        timeout: float | None = None,
        idle_timeout: float | None = None,
        include_rank0: bool | None = None,
        batch: bool | None = None,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        self.timeout = _seconds(timeout, ENV_TIMEOUT, DEFAULT_TIMEOUT)
        self.idle_timeout = _seconds(idle_timeout, ENV_IDLE_TIMEOUT, DEFAULT_IDLE_TIMEOUT)
        self.include_rank0 = _flag(include_rank0, ENV_INCLUDE_RANK0, True)
        self.batch = _flag(batch, ENV_BATCH, False)
        self.backend = backend or os.environ.get(ENV_BACKEND) or None
        if self.backend not in (None, "gloo", "nccl"):
            raise DistributedError(f"backend must be gloo or nccl, got {self.backend!r}")
        self.wait_seconds = 0.0
        self.messages = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.fault: DistributedFault | None = None
        self.rank = 0
        self.world_size = 1
        self.device = torch.device("cpu")
        self._connected = False
        self._owns_group = False
        self._ctrl: Any = None  # gloo group for headers, meta and CPU payloads
        self._data_backend = "gloo"
        self._bound: Process | None = None
        self._release_pending = False
        self._stopped = False
        self._sigterm: Any = None
        self._terminated = False
        self._connect()

    # -- group set-up --------------------------------------------------------------------------------
    def _connect(self) -> None:
        if dist.is_available() and dist.is_initialized():
            backend = str(dist.get_backend())
        else:
            world = int(os.environ.get("WORLD_SIZE", "1") or 1)
            if world <= 1:
                self._connected = True
                return
            if not dist.is_available():
                raise DistributedError("torch.distributed is not available in this torch build")
            backend = self.backend or ("nccl" if torch.cuda.is_available() else "gloo")
            if backend == "nccl":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group(
                backend, init_method="env://", timeout=datetime.timedelta(seconds=self._group_timeout)
            )
            self._owns_group = True
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self._data_backend = "nccl" if "nccl" in backend else "gloo"
        if self._data_backend == "nccl":
            self.device = torch.device("cuda", torch.cuda.current_device())
            self._ctrl = dist.new_group(
                backend="gloo", timeout=datetime.timedelta(seconds=self._group_timeout)
            )
        elif torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
            self.device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        self._connected = True
        if self.rank == 0 and self.world_size > 1:
            self._install_sigterm()

    @property
    def _group_timeout(self) -> float:
        return max(self.timeout, self.idle_timeout)

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the rank that runs the solver, prints and writes files)."""
        return self.rank == 0

    @property
    def computing_ranks(self) -> list[int]:
        """Ranks that evaluate units."""
        first = 0 if self.include_rank0 or self.world_size == 1 else 1
        return list(range(first, self.world_size))

    @property
    def parallel_width(self) -> int:
        return len(self.computing_ranks)

    def _install_sigterm(self) -> None:
        """torchrun SIGTERMs the survivors when a rank dies: turn that into a fault at the next window."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        def handler(signum: int, frame: Any) -> None:
            self._terminated = True

        self._sigterm = signal.signal(signal.SIGTERM, handler)

    # -- rank 0 ----------------------------------------------------------------------------------------
    def bind(self, process: Process) -> None:
        """Rank 0: a new process makes the workers move on to their next one (``serve`` returns).

        The message goes out with the next window, so that a fault always surfaces in ``evaluate``.
        """
        if self.world_size > 1 and self.rank != 0:
            raise DistributedError(
                f"rank {self.rank} only serves: call executor.serve(process) on ranks > 0 "
                "and run the solver on rank 0 (see docs/distributed.md)"
            )
        if self._bound is not None and process is not self._bound and self.world_size > 1:
            self._release_pending = True
        self._bound = process

    def _release_workers(self) -> None:
        if self._release_pending:
            self._broadcast_header(_RELEASE)
            self._release_pending = False

    def _check_usable(self) -> None:
        if self._terminated and self.fault is None:
            self.fault = DistributedFault(
                "distributed run stopped: the launcher sent SIGTERM (another rank failed)", None, "sigterm"
            )
        if self.fault is not None:
            raise self.fault
        if self._stopped:
            raise DistributedError("this distributed executor was closed: make a new one")

    def _fail(self, what: str, err: BaseException, rank: int | None, timeout: float) -> DistributedFault:
        who = f"rank {rank}" if rank is not None else f"a rank of 1..{self.world_size - 1}"
        kind = "did not answer in time" if "timed out" in str(err).lower() else "failed"
        self.fault = DistributedFault(
            f"distributed run stopped: {who} {kind} during {what} (timeout {timeout:g} s, "
            f"{ENV_TIMEOUT}): {type(err).__name__}: {str(err).strip()[:300]}",
            rank,
            what,
        )
        return self.fault

    def _wait(self, work: Any, what: str, rank: int | None = None, timeout: float | None = None) -> None:
        """Wait for ``work`` at most ``timeout`` (what is left of the configured timeout, by default
        all of it); a failure names the configured timeout, the one a user can change."""
        limit = self.timeout if timeout is None else timeout
        try:
            work.wait(timeout=datetime.timedelta(seconds=limit))
        except Exception as err:
            raise self._fail(what, err, rank, self.timeout) from err

    def _broadcast_header(self, op: int, meta: Any = None) -> None:
        frame, extra = make_frame(op, meta)
        self._wait(dist.broadcast(frame, 0, group=self._ctrl, async_op=True), "the broadcast of the header")
        if extra is not None:
            self._wait(
                dist.broadcast(extra, 0, group=self._ctrl, async_op=True), "the broadcast of the layout"
            )
        self.messages += 1

    def _payload_group(self, device_type: str) -> Any:
        return None if device_type == "cuda" and self._data_backend == "nccl" else self._ctrl

    def evaluate(self, process: Process, states: Sequence[State], ts: Sequence[int]) -> list[Drift]:
        self.bind(process)
        self._check_usable()
        self._release_workers()
        if not states:
            return []
        keys = travelling_keys(process, states[0])
        subs = [{k: x[k] for k in keys} if len(keys) != len(x) else x for x in states]
        shares = assign_slots(len(states), self.computing_ranks)
        remote = {r: s for r, s in shares.items() if r != 0 and s}
        out: list[Drift | None] = [None] * len(states)
        if remote:
            self._send_window(subs, ts, remote)
        local = shares.get(0, [])
        error: BaseException | None = None
        try:
            for i, d in zip(local, self._compute(process, [subs[i] for i in local], [ts[i] for i in local])):
                out[i] = d
        except Exception as err:  # collect the workers' answers first, so the group stays in step
            error = err
        if remote:
            home = next(iter(states[0].values())).device if states[0] else torch.device("cpu")
            for r, drifts in self._receive(remote, ts, home, error is None).items():
                for i, d in zip(remote[r], drifts, strict=True):
                    out[i] = d
        if error is not None:
            raise error
        return out  # type: ignore[return-value]

    def _compute(self, process: Process, xs: list[State], ts: list[int]) -> list[Drift]:
        if self.batch and len(xs) > 1 and process.has_unit_batch:
            return process.unit_batch(xs, ts)
        return [process.unit(x, t) for x, t in zip(xs, ts, strict=True)]

    def _comm_device(self, device_type: str) -> torch.device:
        return self.device if device_type == "cuda" and self._data_backend == "nccl" else torch.device("cpu")

    def _send_window(self, subs: list[State], ts: Sequence[int], remote: dict[int, list[int]]) -> None:
        """Header and layout (broadcast), then each rank's distinct states as one buffer (scatter)."""
        t0 = time.perf_counter()
        first = next(iter(subs[0].values()), None)
        device_type = "cuda" if first is not None and first.is_cuda else "cpu"
        ranks_meta: list[dict[str, Any]] = [
            {"slots": [], "states": [], "nbytes": 0} for _ in range(self.world_size)
        ]
        packed: dict[int, list[tuple[State, int]]] = {}
        for r, slots in remote.items():
            index: dict[int, int] = {}
            uniq: list[tuple[State, int]] = []
            for i in slots:  # a window often repeats one guess: send it once
                if id(subs[i]) not in index:
                    index[id(subs[i])] = len(uniq)
                    entries, nbytes = layout_of(subs[i])
                    uniq.append((subs[i], nbytes))
                    ranks_meta[r]["states"].append(entries)
                ranks_meta[r]["slots"].append([int(ts[i]), index[id(subs[i])]])
            ranks_meta[r]["nbytes"] = sum(n for _, n in uniq)
            packed[r] = uniq
        width = max(m["nbytes"] for m in ranks_meta)
        self._broadcast_header(_WORK, {"device": device_type, "ranks": ranks_meta})
        if width:
            rows = torch.zeros(
                self.world_size, width, dtype=torch.uint8, device=self._comm_device(device_type)
            )
            for r, uniq in packed.items():
                offset = 0
                for x, nbytes in uniq:
                    pack_into(rows[r, offset : offset + nbytes], x)
                    offset += nbytes
            work = dist.scatter(
                torch.empty_like(rows[0]),
                list(rows.unbind(0)),
                src=0,
                group=self._payload_group(device_type),
                async_op=True,
            )
            self._wait(work, "the scatter of the states")
            self.bytes_sent += sum(m["nbytes"] for m in ranks_meta)
        self.comm_seconds += time.perf_counter() - t0

    def _receive(
        self, remote: dict[int, list[int]], ts: Sequence[int], home: torch.device, raise_errors: bool = True
    ) -> dict[int, list[Drift]]:
        """Every remote rank's drifts (all are drained before a unit's error is raised)."""
        t0 = time.perf_counter()
        frames = {r: torch.empty(_FRAME, dtype=torch.uint8) for r in remote}
        works = {r: dist.irecv(frames[r], src=r, group=self._ctrl) for r in remote}
        deadline = time.monotonic() + self.timeout
        for r, work in works.items():
            steps = [ts[i] for i in remote[r]]
            left = max(deadline - time.monotonic(), 0.001)
            self._wait(work, f"the return of the drifts of steps {steps[0]}..{steps[-1]}", r, left)
        t1 = time.perf_counter()
        self.wait_seconds += t1 - t0
        out: dict[int, list[Drift]] = {}
        errors: list[str] = []
        for r in remote:
            _, meta_len, nbytes, meta = read_frame(frames[r])
            if meta is ...:
                meta_t = torch.empty(meta_len, dtype=torch.uint8)
                self._wait(dist.irecv(meta_t, src=r, group=self._ctrl), "the receive of the layout", r)
                meta = _json_of(meta_t)
            device_type = meta.get("device", "cpu")
            payload = torch.empty(nbytes, dtype=torch.uint8, device=self._comm_device(device_type))
            if nbytes:
                work = dist.irecv(payload, src=r, group=self._payload_group(device_type))
                self._wait(work, "the receive of the drifts", r)
            self.bytes_received += nbytes
            if "error" in meta:
                steps = [ts[i] for i in remote[r]]
                errors.append(f"a unit failed on rank {r} (steps {steps}):\n{meta['error']}")
            else:
                out[r] = unpack_all(payload, meta["drifts"], home)
        self.comm_seconds += time.perf_counter() - t1
        if errors and raise_errors:
            raise RemoteUnitError(errors[0])
        return out

    # -- ranks > 0 -------------------------------------------------------------------------------------
    def serve(self, process: Process) -> bool:
        """Ranks > 0: evaluate units for rank 0 until it moves on (``True``) or stops (``False``).

        ``process`` must be built on this rank exactly as rank 0 built its own (same seed, same
        config); its static parts stay loaded between windows.
        """
        if self.rank == 0:
            raise DistributedError("serve() runs on ranks > 0; rank 0 runs the solver with this executor")
        if self._stopped:
            return False
        while True:
            frame = torch.empty(_FRAME, dtype=torch.uint8)
            self._serve_wait(
                dist.broadcast(frame, 0, group=self._ctrl, async_op=True),
                "waiting for work",
                self.idle_timeout,
            )
            op, meta_len, _, meta = read_frame(frame)
            if op == _STOP:
                self._stopped = True
                return False
            if op == _RELEASE:
                return True
            if op != _WORK:
                raise DistributedFault(f"rank {self.rank} got an unknown opcode {op}", 0, "header")
            if meta is ...:
                meta_t = torch.empty(meta_len, dtype=torch.uint8)
                self._serve_wait(
                    dist.broadcast(meta_t, 0, group=self._ctrl, async_op=True), "receiving the layout"
                )
                meta = _json_of(meta_t)
            self._serve_window(process, meta)

    def serve_all(self, processes: Iterable[Process]) -> int:
        """Ranks > 0: :meth:`serve` each process in turn (built lazily) until rank 0 stops; exit code."""
        try:
            for process in processes:
                if not self.serve(process):
                    break
        except DistributedFault as fault:
            print(f"dreampropeller [rank {self.rank}]: {fault}", flush=True)
            return 1
        finally:
            self.close()
        return 0

    def _serve_wait(self, work: Any, what: str, timeout: float | None = None) -> None:
        limit = self.timeout if timeout is None else timeout
        try:
            work.wait(timeout=datetime.timedelta(seconds=limit))
        except Exception as err:
            self._stopped = True
            self.fault = DistributedFault(
                f"rank {self.rank} lost rank 0 while {what} (timeout {limit:g} s): "
                f"{type(err).__name__}: {str(err).strip()[:300]}",
                0,
                what,
            )
            raise self.fault from err

    def _serve_window(self, process: Process, meta: dict[str, Any]) -> None:
        device_type = meta["device"]
        comm_device = self._comm_device(device_type)
        width = max(m["nbytes"] for m in meta["ranks"])
        buffer = torch.empty(width, dtype=torch.uint8, device=comm_device)
        if width:
            work = dist.scatter(buffer, None, src=0, group=self._payload_group(device_type), async_op=True)
            self._serve_wait(work, "receiving the states")
        mine = meta["ranks"][self.rank]
        if not mine["slots"]:
            return
        target = self.device if device_type == "cuda" else torch.device("cpu")
        try:
            states = unpack_all(buffer, mine["states"], target)
            xs = [states[si] for _, si in mine["slots"]]
            ts = [t for t, _ in mine["slots"]]
            drifts = self._compute(process, xs, ts)
            layouts, payload = pack(drifts, comm_device)
            reply: dict[str, Any] = {"device": device_type, "drifts": layouts}
        except Exception:
            reply = {"device": device_type, "error": traceback.format_exc()[-4000:]}
            payload = torch.empty(0, dtype=torch.uint8, device=comm_device)
        frame, extra = make_frame(_WORK, reply, payload.numel())
        self._serve_wait(dist.isend(frame, 0, group=self._ctrl), "returning the drifts")
        if extra is not None:
            self._serve_wait(dist.isend(extra, 0, group=self._ctrl), "returning the drifts")
        if payload.numel():
            self._serve_wait(
                dist.isend(payload, 0, group=self._payload_group(device_type)), "returning the drifts"
            )

    # -- reports and shutdown ---------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """Where the executor's time and bytes went (JSON-ready)."""
        return {
            "executor": self.name,
            "backend": self._data_backend if self.world_size > 1 else "local",
            "world_size": self.world_size,
            "computing_ranks": self.computing_ranks,
            "timeout_s": self.timeout,
            "messages": self.messages,
            "comm_s": round(self.comm_seconds, 6),
            "wait_s": round(self.wait_seconds, 6),
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "fault": str(self.fault) if self.fault else None,
        }

    def close(self) -> None:
        """Rank 0: tell the workers to stop. Every rank: leave the group if this executor created it."""
        if not self._connected:
            return
        if self.world_size > 1 and self.rank == 0 and self.fault is None and not self._stopped:
            with contextlib.suppress(DistributedFault):  # a worker gone at shutdown changes nothing
                self._broadcast_header(_STOP)
        self._stopped = True
        if self._sigterm is not None:
            signal.signal(signal.SIGTERM, self._sigterm)
            self._sigterm = None
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self._owns_group = False
        self._connected = False

    def __enter__(self) -> DistributedExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
