"""The NeRF + SDS Picard process: exactness at threshold 0, batched == per-slot, schedules at t."""

import pytest
import torch

from dreampropeller.bench.picard import states_equal
from dreampropeller.config.loading import build, merge_config
from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.guidance.tiny.model import TinyPrior
from dreampropeller.picard.executors import BatchedExecutor
from dreampropeller.picard.solver import PicardSolver, SolverConfig, run_sequential
from dreampropeller.systems.factory import build_process

from .conftest import TINY_OVERRIDES

SURFACE_LOSSES = ["loss.lambda_normal_smooth=0.5", "loss.lambda_opaque=10", "nerf.albedo_levels=2"]


NO_SURFACE_LOSSES = ["loss.lambda_normal_smooth=0", "loss.lambda_opaque=0"]


@pytest.fixture(scope="module", params=[NO_SURFACE_LOSSES, SURFACE_LOSSES], ids=["orient", "orient+smooth"])
def process(random_prior_dir, request):
    torch.set_num_threads(1)
    data = merge_config(
        TextTo3DConfig(),
        overrides=[*TINY_OVERRIDES, "prompt=a red cube", "loss.lambda_orient=0.1", *request.param],
        free=["optimizer"],
    )
    cfg = build(TextTo3DConfig, data)
    return build_process(cfg, TinyPrior.load(random_prior_dir))


def test_unit_is_deterministic_and_depends_on_t(process):
    x = process.initial_state()
    a, b = process.unit(x, 3), process.unit(x, 3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = process.unit(x, 4)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert set(a) == set(process.param_keys)
    assert float(sum(v.abs().sum() for v in a.values())) > 0


def test_unit_batch_equals_per_slot_units(process):
    x0 = process.initial_state()
    x1 = process.update(x0, process.unit(x0, 0), 0)
    xs, ts = [x0, x1, x1, x0], [0, 1, 5, 7]  # slots at different steps (and hash-grid levels)
    batched = process.unit_batch(xs, ts)
    for x, t, d in zip(xs, ts, batched):
        single = process.unit(x, t)
        for k in single:
            scale = single[k].abs().max().clamp_min(1e-8)
            assert float((d[k] - single[k]).abs().max() / scale) < 1e-4, (t, k)


def test_zero_threshold_reproduces_sequential(process):
    x0 = process.initial_state()
    steps = 7
    seq = run_sequential(process, x0, steps)
    prop = PicardSolver(process, SolverConfig(window=4, threshold=0.0, adaptive=False)).run(x0, steps)
    assert states_equal(prop.state, seq.state)
    assert any(k.startswith("optim/exp_avg_sq/") for k in seq.state)


def test_batched_executor_runs_a_window(process):
    x0 = process.initial_state()
    result = PicardSolver(process, SolverConfig(window=4), executor=BatchedExecutor()).run(x0, 8)
    assert result.step == 8 and result.stats.status == "done"
    assert result.stats.iterations <= 8 and result.stats.unit_evals >= 8


def test_progressive_levels(process):
    assert process.active_levels(0) == 2
    assert process.active_levels(3) == 3
    assert process.active_levels(1000) == 4


def test_scheduled_grad_clip_is_evaluated_at_each_slots_own_step(random_prior_dir):
    """A clip that is tight at step 0 and loose from step 5: a window holding both must clip each slot
    by its own step (it used to take the window's first step for every slot)."""
    data = merge_config(
        TextTo3DConfig(),
        overrides=[*TINY_OVERRIDES, "prompt=a red cube", "sds.grad_clip=[0,1e-4,100.0,5]"],
        free=["optimizer"],
    )
    proc = build_process(build(TextTo3DConfig, data), TinyPrior.load(random_prior_dir))
    x0 = proc.initial_state()
    batched = proc.unit_batch([x0, x0], [0, 6])
    for t, d in zip([0, 6], batched):
        single = proc.unit(x0, t)
        for k in single:
            scale = single[k].abs().max().clamp_min(1e-8)
            assert float((d[k] - single[k]).abs().max() / scale) < 1e-4, (t, k)
