"""The distributed executor's parts that need no second process: wire format, settings, world size 1."""

from __future__ import annotations

import pytest
import torch

from dreampropeller.bench.picard import states_equal
from dreampropeller.bench.problems import GrowingFourier, make_problem
from dreampropeller.picard.executors import distributed as D
from dreampropeller.picard.executors import make_executor
from dreampropeller.picard.executors.distributed import (
    DistributedError,
    DistributedExecutor,
    assign_slots,
    make_frame,
    pack,
    read_frame,
    travelling_keys,
    unpack_all,
)
from dreampropeller.picard.solver import PicardSolver, SolverConfig, run_sequential


@pytest.fixture(autouse=True)
def no_launcher(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", D.ENV_TIMEOUT, D.ENV_IDLE_TIMEOUT, D.ENV_BACKEND, D.ENV_INCLUDE_RANK0):
        monkeypatch.delenv(var, raising=False)


def odd_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "w": torch.randn(3, 5, generator=g),
        "t": torch.randn(4, 6, generator=g, dtype=torch.float64).T,  # not contiguous
        "step": torch.tensor(7, dtype=torch.int64),  # 0-d
        "mask": torch.tensor([True, False, True]),  # 1 byte per element: offsets must realign after it
        "half": torch.tensor([1.5, -2.25, float("nan")], dtype=torch.float16),
        "empty": torch.zeros(0, 4),
        "big": torch.tensor([2**62 + 1], dtype=torch.int64),  # not representable in float64
    }


def bits_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Same keys, dtypes, shapes and bytes (NaN included)."""
    return list(a) == list(b) and all(
        a[k].dtype == b[k].dtype
        and a[k].shape == b[k].shape
        and torch.equal(a[k].reshape(-1).view(torch.uint8), b[k].reshape(-1).view(torch.uint8))
        for k in a
    )


def test_pack_unpack_is_bit_exact_for_every_dtype_and_layout():
    xs = [odd_state(), {"a": torch.arange(5, dtype=torch.int32)}, {}]
    layouts, buffer = pack(xs, torch.device("cpu"))
    assert buffer.dtype == torch.uint8 and buffer.numel() % D._ALIGN == 0
    back = unpack_all(buffer.clone(), layouts, torch.device("cpu"))
    assert all(bits_equal(x, y) for x, y in zip(xs, back, strict=True))


def test_frame_carries_small_meta_inline_and_flags_large_meta():
    frame, extra = make_frame(1, {"ranks": [1, 2]}, nbytes=123)
    assert extra is None and frame.numel() == D._FRAME
    assert read_frame(frame) == (1, len(b'{"ranks": [1, 2]}'), 123, {"ranks": [1, 2]})
    big = {"error": "x" * (D._FRAME * 2)}
    frame, extra = make_frame(1, big)
    op, meta_len, nbytes, meta = read_frame(frame)
    assert (op, nbytes, meta) == (1, 0, ...) and extra is not None and extra.numel() == meta_len
    assert D._json_of(extra) == big
    assert read_frame(make_frame(3)[0]) == (3, 0, 0, None)


def test_assign_slots_round_robin_and_no_computing_rank():
    assert assign_slots(5, [0, 1]) == {0: [0, 2, 4], 1: [1, 3]}
    assert assign_slots(2, [1, 2, 3]) == {1: [0], 2: [1], 3: []}
    with pytest.raises(DistributedError, match="no rank computes"):
        assign_slots(3, [])


def test_only_parameters_and_unit_keys_travel():
    pr = make_problem("quadratic")
    keys = travelling_keys(pr.process, pr.x0)
    assert keys == ["x"] and any(k.startswith("optim/") for k in pr.x0)  # the moments stay home
    pr.process.unit_keys = ("optim/step",)
    with pytest.raises(DistributedError, match="lacks"):
        travelling_keys(pr.process, {"x": pr.x0["x"]})


def test_settings_from_environment_and_bad_values(monkeypatch):
    monkeypatch.setenv(D.ENV_TIMEOUT, "12.5")
    monkeypatch.setenv(D.ENV_INCLUDE_RANK0, "0")
    ex = DistributedExecutor()
    assert ex.timeout == 12.5 and ex.include_rank0 is False and ex.idle_timeout == D.DEFAULT_IDLE_TIMEOUT
    monkeypatch.setenv(D.ENV_TIMEOUT, "soon")
    with pytest.raises(DistributedError, match="DREAMPROPELLER_DIST_TIMEOUT must be a number"):
        DistributedExecutor()
    with pytest.raises(DistributedError, match="positive"):
        DistributedExecutor(timeout=0, idle_timeout=5)
    with pytest.raises(DistributedError, match="backend must be gloo or nccl"):
        DistributedExecutor(timeout=1, backend="mpi")


@pytest.mark.parametrize("name", ["mlp", "growing"])
def test_world_size_one_is_the_sequential_executor(name):
    torch.set_num_threads(1)
    if name == "growing":
        proc = GrowingFourier(every=7)
        x0 = proc.initial_state(proc.init)
    else:
        pr = make_problem(name)
        proc, x0 = pr.process, pr.x0
    ex = make_executor("distributed")
    assert isinstance(ex, DistributedExecutor) and ex.world_size == 1 and ex.parallel_width == 1
    res = PicardSolver(proc, SolverConfig(window=6, threshold=0.0, adaptive=False), executor=ex).run(x0, 25)
    ex.close()
    assert res.stats.status == "done" and res.stats.comm_s == 0.0
    assert states_equal(res.state, run_sequential(proc, x0, 25).state)
    with pytest.raises(DistributedError, match="rank 0 runs the solver"):
        ex.serve(proc)


def test_solver_turns_a_resumable_fault_into_status_fault():
    pr = make_problem("quadratic")

    class Flaky(D.Executor):
        def evaluate(self, process, states, ts):
            if ts[0] >= 9:
                raise D.DistributedFault("rank 3 failed during the scatter", 3, "scatter")
            return super().evaluate(process, states, ts)

    cfg = SolverConfig(window=4, threshold=0.0, adaptive=False)
    res = PicardSolver(pr.process, cfg, executor=Flaky()).run(pr.x0, 20)
    assert res.stats.status == "fault" and res.step == 9
    assert res.fault == "DistributedFault: rank 3 failed during the scatter"
    assert states_equal(res.state, run_sequential(pr.process, pr.x0, 9).state)

    class Broken(D.Executor):
        def evaluate(self, process, states, ts):
            raise RuntimeError("a bug, not a fault")

    with pytest.raises(RuntimeError, match="a bug"):
        PicardSolver(pr.process, cfg, executor=Broken()).run(pr.x0, 20)
