"""The distributed executor with 2 CPU processes (gloo on 127.0.0.1): exactness, faults, resume.

Each test spawns two fresh processes; rank 0 checks its results in-process (single-threaded, like
the workers, so float summation order is the same everywhere) and writes them to a file the test
reads back.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from dreampropeller.bench.picard import states_equal
from dreampropeller.bench.problems import GrowingFourier, make_problem
from dreampropeller.picard.checkpoint import load_checkpoint, save_checkpoint
from dreampropeller.picard.executors import Executor, distributed
from dreampropeller.picard.executors.distributed import DistributedExecutor
from dreampropeller.picard.process import Process
from dreampropeller.picard.solver import PicardSolver, SolverConfig, run_sequential

STEPS = 30
PROBLEMS = ("quadratic", "mlp", "nonconvex", "growing", "mlp-sgd")


# -- harness ---------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _enter(rank: int, world: int, port: int, timeout: float) -> DistributedExecutor:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        GLOO_SOCKET_IFNAME="lo",
    )
    torch.set_num_threads(1)
    return DistributedExecutor(timeout=timeout, idle_timeout=60, backend="gloo")


def _entry(rank: int, target: str, port: int, out: str, args: dict) -> None:
    result = globals()[target](rank, port, args)
    if result is not None:
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))


def launch(
    target: str, tmp_path: Path, args: dict, limit: float = 60.0
) -> tuple[list[int | None], list[dict]]:
    """Run ``target(rank, port, args)`` on ranks 0 and 1; exit codes and what each rank returned."""
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_entry, args=(r, target, port, str(tmp_path), args)) for r in range(2)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + limit
    procs[0].join(max(deadline - time.monotonic(), 0.1))
    procs[1].join(max(min(deadline - time.monotonic(), args.get("grace", limit)), 0.1))
    codes = []
    for p in procs:
        if p.is_alive():  # a rank the test made hang: ours to end
            p.kill()
            p.join(5)
            codes.append(None)
        else:
            codes.append(p.exitcode)
    results = []
    for r in range(2):
        f = tmp_path / f"rank{r}.json"
        results.append(json.loads(f.read_text()) if f.exists() else {})
    return codes, results


def small_problem(name: str):
    if name == "growing":
        p = GrowingFourier(every=7)
        return p, p.initial_state(p.init)
    pr = make_problem(name)
    return pr.process, pr.x0


class Faulty(Process):
    """A benchmark process whose unit on rank 1 exits, hangs or raises from step ``at`` on."""

    def __init__(self, mode: str, at: int) -> None:
        self.inner, self.x0 = small_problem("mlp")
        self.param_keys = self.inner.param_keys
        self.mode, self.at = mode, at

    def unit(self, x, t):
        if t >= self.at and os.environ.get("RANK") == "1":
            if self.mode == "exit":
                os._exit(7)
            if self.mode == "hang":
                time.sleep(600)
            if self.mode == "raise":
                self.mode = "none"
                raise ValueError(f"unit failed at step {t}")
        return self.inner.unit(x, t)

    def update(self, x, drift, t):
        return self.inner.update(x, drift, t)


# -- rank programs (run in the spawned processes) -------------------------------------------------------
def exact_main(rank: int, port: int, args: dict) -> dict | None:
    ex = _enter(rank, 2, port, 20)
    ex.include_rank0 = args["include_rank0"]
    distributed._FRAME = args["frame"]  # a small frame sends every layout as a message of its own
    names = args["names"]
    if rank > 0:
        ex.serve_all(small_problem(n)[0] for n in names)
        return None
    out = {}
    for name in names:
        proc, x0 = small_problem(name)
        seq = run_sequential(proc, x0, STEPS)
        cfg = SolverConfig(window=args["window"], threshold=0.0, adaptive=False)
        res = PicardSolver(proc, cfg, executor=ex).run(x0, STEPS)
        # any rule: the executor is a drop-in for the sequential one (same drifts, same decisions)
        adaptive = SolverConfig.paper(window=args["window"])
        a = PicardSolver(proc, adaptive, executor=ex).run(x0, STEPS)
        b = PicardSolver(proc, adaptive, executor=Executor()).run(x0, STEPS)
        out[name] = {
            "equal": states_equal(res.state, seq.state),
            "status": res.stats.status,
            "adaptive_equal": states_equal(a.state, b.state) and a.stats.accepted == b.stats.accepted,
        }
    out["report"] = ex.report()
    ex.close()
    return out


def fault_main(rank: int, port: int, args: dict) -> dict | None:
    ex = _enter(rank, 2, port, args["timeout"])
    proc = Faulty(args["mode"], args["at"])
    if rank > 0:
        return {"code": ex.serve_all([proc])}
    x0 = proc.x0
    t0 = time.perf_counter()
    cfg = SolverConfig(window=8, threshold=0.0, adaptive=False)
    res = PicardSolver(proc, cfg, executor=ex).run(x0, STEPS)
    elapsed = time.perf_counter() - t0
    ex.close()
    out = {"status": res.stats.status, "step": res.step, "fault": res.fault, "elapsed": elapsed}
    if res.stats.status != "fault":
        return out
    ckpt = save_checkpoint(Path(args["dir"]) / "fault.safetensors", res.state, res.step, {"fault": res.fault})
    state, step, extra = load_checkpoint(ckpt)
    out["exact_at_fault"] = states_equal(state, run_sequential(proc.inner, x0, step).state)
    resumed = PicardSolver(proc.inner, cfg, executor=Executor()).run(state, STEPS, start=step)
    out["resumed_equal"] = states_equal(resumed.state, run_sequential(proc.inner, x0, STEPS).state)
    out["checkpoint_fault"] = extra["fault"]
    return out


def raise_main(rank: int, port: int, args: dict) -> dict | None:
    ex = _enter(rank, 2, port, 20)
    proc = Faulty("raise", 3)
    if rank > 0:
        return {"code": ex.serve_all([proc])}
    cfg = SolverConfig(window=4, threshold=0.0, adaptive=False)
    try:
        PicardSolver(proc, cfg, executor=ex).run(proc.x0, STEPS)
        message = ""
    except Exception as err:
        message = f"{type(err).__name__}: {err}"
    res = PicardSolver(proc, cfg, executor=ex).run(proc.x0, STEPS)  # the group is still in step
    ex.close()
    ref = run_sequential(proc.inner, proc.x0, STEPS).state
    return {"message": message, "after": states_equal(res.state, ref)}


def tiny_text_to_3d():
    """A text-to-3D process small enough for a test (random tiny prior, seeded the same on every rank)."""
    from dreampropeller.config.schema import RenderConfig, TextTo3DConfig
    from dreampropeller.guidance.tiny.model import TinyPrior, TinyPriorConfig
    from dreampropeller.scene.nerf import NeRFConfig
    from dreampropeller.systems.factory import build_process

    torch.manual_seed(0)
    prior = TinyPrior(TinyPriorConfig(channels=(16, 32, 32), text_dim=32, pooled_dim=32))
    cfg = TextTo3DConfig(
        prompt="a red cube",
        steps=10,
        render=RenderConfig(height=16, width=16, batch_size=1, num_samples=16),
        nerf=NeRFConfig(n_levels=4, log2_hashmap_size=10, finest_resolution=64),
    )
    return build_process(cfg, prior)


def text_to_3d_main(rank: int, port: int, args: dict) -> dict | None:
    ex = _enter(rank, 2, port, 30)
    proc = tiny_text_to_3d()  # every rank builds (and loads) its own prior once
    if rank > 0:
        return {"code": ex.serve_all([proc])}
    x0 = proc.initial_state()
    cfg = SolverConfig(window=4, threshold=0.0, adaptive=False)
    res = PicardSolver(proc, cfg, executor=ex).run(x0, 10)
    report = ex.report()
    ex.close()
    seq = run_sequential(proc, x0, 10)
    _, param_bytes = distributed.layout_of({k: x0[k] for k in distributed.travelling_keys(proc, x0)})
    _, state_bytes = distributed.layout_of(x0)
    return {
        "equal": states_equal(res.state, seq.state),
        "status": res.stats.status,
        "report": report,
        "param_bytes": param_bytes,
        "state_bytes": state_bytes,
    }


def lost_main(rank: int, port: int, args: dict) -> dict | None:
    ex = _enter(rank, 2, port, 20)
    proc, x0 = small_problem("quadratic")
    if rank > 0:
        t0 = time.perf_counter()
        code = ex.serve_all([proc])
        return {"code": code, "elapsed": time.perf_counter() - t0, "fault": str(ex.fault or "")}
    ex.evaluate(proc, [x0, x0], [0, 1])
    os._exit(0)  # rank 0 vanishes without a stop message


# -- tests -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("window", "include_rank0", "frame"), [(8, True, 4096), (3, False, 64)])
def test_zero_threshold_equals_sequential_bit_for_bit(tmp_path, window, include_rank0, frame):
    args = {"names": list(PROBLEMS), "window": window, "include_rank0": include_rank0, "frame": frame}
    codes, (r0, _) = launch("exact_main", tmp_path, args)
    assert codes == [0, 0]
    for name in PROBLEMS:
        assert r0[name] == {"equal": True, "status": "done", "adaptive_equal": True}, name
    report = r0["report"]
    assert report["backend"] == "gloo" and report["world_size"] == 2
    assert report["computing_ranks"] == ([0, 1] if include_rank0 else [1])
    assert report["bytes_sent"] > 0 and report["bytes_received"] > 0 and report["comm_s"] > 0


@pytest.mark.slow  # ~18 s: two ranks each build a prior
def test_tiny_text_to_3d_run_equals_sequential_bit_for_bit(tmp_path):
    pytest.importorskip("dreampropeller.systems.nerf")
    codes, (r0, r1) = launch("text_to_3d_main", tmp_path, {})
    assert codes == [0, 0] and r1 == {"code": 0}
    assert r0["equal"] is True and r0["status"] == "done"
    # each state sent is exactly what a unit reads: parameters + occupancy grid (Adam moments stay on rank 0)
    sent = r0["report"]["bytes_sent"]
    assert sent > 0 and sent % r0["param_bytes"] == 0 and r0["param_bytes"] < r0["state_bytes"] / 2
    assert r0["report"]["bytes_received"] > 0


def test_killed_worker_stops_with_the_last_exact_state_and_resumes(tmp_path):
    args = {"mode": "exit", "at": 13, "timeout": 20, "dir": str(tmp_path)}
    codes, (r0, _) = launch("fault_main", tmp_path, args)
    assert codes == [0, 7]
    assert r0["status"] == "fault"
    assert "rank 1 failed during the return of the drifts" in r0["fault"]
    assert r0["fault"].startswith("DistributedFault: distributed run stopped")
    assert 1 <= r0["step"] <= 13
    assert r0["elapsed"] < 20  # the closed connection is noticed at once, not at the timeout
    assert r0["exact_at_fault"] and r0["resumed_equal"]
    assert r0["checkpoint_fault"] == r0["fault"]


def test_hung_worker_stops_the_run_within_the_timeout(tmp_path):
    args = {"mode": "hang", "at": 10, "timeout": 3, "dir": str(tmp_path), "grace": 1}
    codes, (r0, _) = launch("fault_main", tmp_path, args)
    assert codes[0] == 0 and codes[1] is None  # rank 1 was still asleep: the harness ended it
    assert r0["status"] == "fault" and "rank 1 did not answer in time" in r0["fault"]
    assert "timeout 3 s" in r0["fault"]
    assert 3 <= r0["elapsed"] < 3 + 10
    assert r0["exact_at_fault"] and r0["resumed_equal"]


def test_unit_error_on_a_worker_is_raised_on_rank_0_and_the_group_stays_usable(tmp_path):
    codes, (r0, r1) = launch("raise_main", tmp_path, {})
    assert codes == [0, 0] and r1 == {"code": 0}
    assert r0["message"].startswith("RemoteUnitError: a unit failed on rank 1")
    assert "ValueError: unit failed at step" in r0["message"]
    assert r0["after"] is True


def test_worker_exits_when_rank_0_vanishes(tmp_path):
    codes, (_, r1) = launch("lost_main", tmp_path, {})
    assert codes == [0, 0]
    assert r1["code"] == 1 and r1["elapsed"] < 20
    assert "rank 1 lost rank 0 while waiting for work" in r1["fault"]
