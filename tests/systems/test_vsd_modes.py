"""VSD's three LoRA modes on the embedded prior: one algorithm sequentially, the LoRA trained on what
each mode promises (every evaluated unit / accepted steps only), and every worker's LoRA in checkpoints."""

import pytest
import torch

from dreampropeller.bench.picard import states_equal
from dreampropeller.guidance.registry import load_prior
from dreampropeller.guidance.variational import LORA
from dreampropeller.picard.executors import DevicesExecutor
from dreampropeller.picard.solver import PicardSolver, SolverConfig, run_sequential
from dreampropeller.runs.driver import load_config
from dreampropeller.systems.factory import build_process

TINY = ["render.height=16", "render.width=16", "render.batch_size=1", "render.num_samples=8"]
TINY += ["nerf.n_levels=4", "nerf.log2_hashmap_size=10", "nerf.finest_resolution=64", "levels.start=2"]
TINY += ["vsd.lora_rank=2", "vsd.camera_hidden=8", "vsd.lora_lr=0.01", "occupancy.enabled=false"]


def config(mode: str, steps: int = 4, extra: tuple[str, ...] = ()):
    return load_config(
        "a red cube", ["prolificdreamer"], [*TINY, f"vsd.mode={mode}", *extra], prior="tiny", steps=steps
    )


def make(mode: str):
    torch.set_num_threads(1)
    cfg = config(mode)
    return build_process(cfg, load_prior("tiny", None, "cpu"))


def nerf(state):
    return {k: v for k, v in state.items() if not k.startswith(LORA) and "/lora/" not in k}


def lora(state):
    return {k: v for k, v in state.items() if k.startswith(LORA) or "/lora/" in k}


def test_prolificdreamer_on_the_tiny_prior_is_sized_for_it():
    cfg = load_config("a red cube", ["prolificdreamer"], prior="tiny")
    assert (cfg.prior, cfg.prior_path, cfg.guidance) == ("tiny", None, "vsd")
    assert (cfg.render.height, cfg.render.num_samples, cfg.nerf.n_levels) == (32, 32, 8)
    assert (cfg.sds.guidance_scale, cfg.sds.cfg_convention) == (7.5, "diffusers")
    assert load_config("a cat", ["prolificdreamer"], ["steps=7"], prior="tiny").steps == 7  # flags win
    assert load_config("a cat", ["prolificdreamer"]).render.height == 64  # SD: the overlay stays off


def test_modes_are_one_algorithm_sequentially():
    """Sequentially each mode takes a LoRA step per step on that step's renders: equal results."""
    runs = {m: make(m) for m in ("worker", "accepted", "synchronized")}
    finals = {m: run_sequential(p, p.initial_state(), 3).state for m, p in runs.items()}
    assert states_equal(nerf(finals["worker"]), nerf(finals["accepted"]))
    torch.testing.assert_close(nerf(finals["synchronized"]), nerf(finals["worker"]), rtol=1e-5, atol=1e-7)
    w, a = runs["worker"].worker_state(), runs["accepted"].worker_state()
    assert states_equal(w, a) and float(w[next(k for k in w if k.startswith("optim/step/"))]) == 3
    torch.testing.assert_close(lora(finals["synchronized"]), w, rtol=1e-5, atol=1e-7)
    assert not states_equal(w, make("worker").worker_state())  # the LoRA moved from its init


def test_accepted_mode_steps_on_accepted_steps_only_and_worker_on_every_unit():
    for mode in ("accepted", "worker"):
        p = make(mode)
        result = PicardSolver(p, SolverConfig(window=3, threshold=0.0)).run(p.initial_state(), 4)
        state = p.worker_state()
        count = float(state[next(k for k in state if k.startswith("optim/step/"))])
        expected = 4 if mode == "accepted" else result.stats.unit_evals
        assert result.stats.unit_evals > 4 and count == expected, (mode, count, result.stats.unit_evals)
        if mode == "accepted":  # threshold 0: the sequential run, exactly
            ref = make("accepted")
            seq = run_sequential(ref, ref.initial_state(), 4).state
            assert states_equal(result.state, seq) and states_equal(state, ref.worker_state())


def test_devices_executor_saves_and_restores_every_replica_lora():
    p = make("worker")
    ex = DevicesExecutor(["cpu", "cpu"])
    x0 = p.initial_state()
    ex.evaluate(p, [x0, x0], [0, 1])  # each replica trains its LoRA on its own unit
    saved = ex.worker_states(p)
    assert len(saved) == 2 and not states_equal(saved[0], saved[1])
    ex.close()
    q, ex2 = make("worker"), DevicesExecutor(["cpu", "cpu"])
    ex2.load_worker_states(q, saved)
    assert all(states_equal(a, b) for a, b in zip(ex2.worker_states(q), saved, strict=True))
    with pytest.raises(ValueError, match="2 workers"):
        type(ex2).__mro__[1].load_worker_states(ex2, q, saved)  # the one-worker executors refuse two
    ex2.close()


def _run_dir(cfg, out, resume=False):
    from dreampropeller.runs.directory import load_run_checkpoint, load_run_workers
    from dreampropeller.runs.driver import run_text_to_3d

    run_text_to_3d(cfg, out, resume=resume, progress=False, exports=False)
    state, step, _ = load_run_checkpoint(out)
    return state, step, load_run_workers(out)


@pytest.mark.parametrize("mode", ["synchronized", "worker", "accepted"])
def test_resume_restores_the_lora_bit_for_bit(tmp_path, mode):
    """A run stopped at step 2 and resumed to 4 equals the uninterrupted run (threshold 0, window 2);
    the checkpoint holds the LoRA where the mode keeps it, trained (not its init)."""
    torch.set_num_threads(1)
    picard = ("picard.window=2", "picard.threshold=0", "picard.executor=sequential")
    if mode == "worker":
        picard = ("picard.window=1",)  # a worker's LoRA sees every unit: exact only sequentially
    whole, step, whole_workers = _run_dir(config(mode, 4, picard), tmp_path / "whole")
    half, half_step, half_workers = _run_dir(config(mode, 2, picard), tmp_path / "part")
    init = make(mode)
    if mode == "synchronized":
        assert not half_workers and lora(half) and not states_equal(lora(half), lora(init.initial_state()))
    else:
        assert len(half_workers) == 1 and not lora(half)
        assert not states_equal(half_workers[0], init.worker_state())  # trained, not the init
    resumed, step2, resumed_workers = _run_dir(config(mode, 4, picard), tmp_path / "part", resume=True)
    assert (half_step, step, step2) == (2, 4, 4)
    assert states_equal(resumed, whole)
    assert all(states_equal(a, b) for a, b in zip(resumed_workers, whole_workers, strict=True))
