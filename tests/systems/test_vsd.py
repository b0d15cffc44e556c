"""NeRF + VSD (VariationalScoreDistillation) on a tiny random Stable Diffusion: synchronized mode is
exact under Picard at threshold 0 (LoRA + AdamW state in the state), worker mode trains the worker's
own LoRA on the units it evaluates."""

import pytest
import torch

from dreampropeller.bench.picard import states_equal
from dreampropeller.bench.random_models import sd_components
from dreampropeller.config.loading import build, merge_config
from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.guidance.stable_diffusion import StableDiffusionPrior
from dreampropeller.guidance.variational import LORA, is_lora_key
from dreampropeller.guidance.vsd import lora_parameters
from dreampropeller.picard.executors import BatchedExecutor
from dreampropeller.picard.solver import PicardSolver, SolverConfig, run_sequential
from dreampropeller.systems.factory import build_process
from dreampropeller.systems.nerf import NerfTextTo3D

TINY = ["render.height=16", "render.width=16", "render.batch_size=1", "render.num_samples=8"]
TINY += ["nerf.n_levels=4", "nerf.log2_hashmap_size=10", "levels.start=2", "levels.every=3"]
VSD = ["guidance=vsd", "sds.guidance_scale=7.5", "sds.cfg_convention=diffusers", "vsd.lora_rank=2"]
VSD += ["vsd.camera_hidden=8", "vsd.lora_lr=0.01"]


def make(mode: str) -> NerfTextTo3D:
    torch.set_num_threads(1)
    prior = StableDiffusionPrior(**sd_components("tiny", seed=0))
    data = merge_config(
        TextTo3DConfig(), overrides=[*TINY, *VSD, f"vsd.mode={mode}", "prompt=a red cube"], free=["optimizer"]
    )
    return build_process(build(TextTo3DConfig, data), prior)


@pytest.fixture(scope="module")
def synced():
    return make("synchronized")


def test_synchronized_state_holds_lora_and_its_optimizer(synced):
    x0 = synced.initial_state()
    lora = [k for k in x0 if k.startswith(LORA)]
    assert len(lora) == len(lora_parameters(synced.guidance.prior)) > 0
    assert any(k.startswith("optim/exp_avg/lora/") for k in x0)
    assert set(lora) <= set(synced.param_keys)
    d = synced.unit(x0, 0)
    assert set(d) == set(synced.param_keys)
    assert sum(float(d[k].abs().sum()) for k in lora) > 0
    assert all(torch.equal(v, synced.unit(x0, 0)[k]) for k, v in d.items())
    x1 = synced.update(x0, d, 0)
    assert any(not torch.equal(x1[k], x0[k]) for k in lora)
    assert float(x1["optim/step/" + lora[0]]) == 1.0
    assert not is_lora_key("encoding.grid") and is_lora_key("optim/exp_avg/" + lora[0])


def test_synchronized_propelled_equals_sequential(synced):
    x0 = synced.initial_state()
    seq = run_sequential(synced, x0, 5)
    prop = PicardSolver(synced, SolverConfig(window=4, threshold=0.0, adaptive=False)).run(x0, 5)
    assert states_equal(prop.state, seq.state)
    assert any(not torch.equal(seq.state[k], x0[k]) for k in x0 if k.startswith(LORA))


def test_synchronized_batched_units_match_single_units(synced):
    x0 = synced.initial_state()
    x1 = synced.update(x0, synced.unit(x0, 0), 0)
    xs, ts = [x0, x1, x1], [0, 1, 4]
    for x, t, d in zip(xs, ts, synced.unit_batch(xs, ts)):
        single = synced.unit(x, t)
        for k in single:
            scale = single[k].abs().max().clamp_min(1e-8)
            assert float((d[k] - single[k]).abs().max() / scale) < 1e-3, (t, k)


def test_worker_mode_trains_its_own_lora_on_evaluated_units():
    a, b = make("worker"), make("worker")
    x0 = a.initial_state()
    assert not any(k.startswith(LORA) for k in x0)
    before = a.guidance.lora_tensors()
    d1 = a.unit(x0, 0)
    after = a.guidance.lora_tensors()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # the same history gives the same units (a fresh worker replays it exactly)
    e1 = b.unit(x0, 0)
    assert all(torch.equal(d1[k], e1[k]) for k in d1)
    d2, e2 = a.unit(x0, 0), b.unit(x0, 0)
    assert all(torch.equal(d2[k], e2[k]) for k in d2)
    assert any(not torch.equal(d1[k], d2[k]) for k in d1)  # the LoRA moved between the two calls


def test_worker_mode_runs_propelled_with_batched_executor():
    proc = make("worker")
    x0 = proc.initial_state()
    result = PicardSolver(proc, SolverConfig(window=3), executor=BatchedExecutor()).run(x0, 6)
    assert result.step == 6 and result.stats.status == "done"
    assert all(torch.isfinite(v).all() for v in result.state.values())
