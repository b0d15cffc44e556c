"""The NeuS SDF + SDS Picard process: exactness at threshold 0 (moments included), batched == per-slot,
deterministic units that reach every parameter, and the config checks."""

import pytest
import torch

from dreampropeller.bench.picard import states_equal
from dreampropeller.config.loading import ConfigError, build, merge_config
from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.guidance.tiny.model import TinyPrior
from dreampropeller.picard.executors import BatchedExecutor
from dreampropeller.picard.solver import PicardSolver, SolverConfig, run_sequential
from dreampropeller.systems.factory import build_process, validate
from dreampropeller.systems.sdf import OCCUPANCY, SdfTextTo3D, sdf_levels_at, validate_sdf_config

SDF_TINY = [
    "representation=sdf",
    "prompt=a red cube",
    "render.height=12",
    "render.width=12",
    "render.batch_size=2",
    "render.num_samples=8",
    "sdf.n_levels=4",
    "sdf.log2_hashmap_size=10",
    "sdf.finest_resolution=64",
    "sdf.levels_start=2",
    "sdf.levels_every=2",  # slots of one window at different level counts
    "sdf.cos_anneal_steps=4",
    "sdf.lambda_normal_smooth=1.0",
    "sdf.lambda_opaque=1.0",
    "sdf.occupancy_resolution=16",
    "sdf.occupancy_every=2",  # refreshed inside every window
    "shading.ambient_only_steps=2",  # albedo first, then lit and textureless cameras
]


def tiny_config(*extra):
    data = merge_config(TextTo3DConfig(), overrides=[*SDF_TINY, *extra], free=["optimizer"])
    return build(TextTo3DConfig, data)


@pytest.fixture(scope="module")
def process(random_prior_dir):
    torch.set_num_threads(1)
    cfg = tiny_config()
    validate(cfg)
    proc = build_process(cfg, TinyPrior.load(random_prior_dir), "cpu")
    assert isinstance(proc, SdfTextTo3D)
    return proc


def test_unit_is_deterministic_and_reaches_every_parameter(process):
    x = process.initial_state()
    x = process.update(x, process.unit(x, 0), 0)  # the SDF's output layer starts at zero
    a, b = process.unit(x, 3), process.unit(x, 3)
    assert set(a) == set(process.param_keys)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = process.unit(x, 4)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    for k in process.param_keys:
        assert float(a[k].abs().sum()) > 0, k
    assert sdf_levels_at(process.cfg, 0) == 2 and sdf_levels_at(process.cfg, 5) == 4


def test_unit_batch_equals_per_slot_units(process):
    x0 = process.initial_state()
    x1 = process.update(x0, process.unit(x0, 0), 0)
    xs, ts = [x0, x1, x1, x1], [0, 1, 2, 5]
    for x, t, d in zip(xs, ts, process.unit_batch(xs, ts)):
        single = process.unit(x, t)
        for k in single:
            scale = single[k].abs().max().clamp_min(1e-8)
            assert float((d[k] - single[k]).abs().max() / scale) < 1e-4, (t, k)


def test_zero_threshold_reproduces_sequential(process):
    x0 = process.initial_state()
    seq = run_sequential(process, x0, 6)
    prop = PicardSolver(process, SolverConfig(window=4, threshold=0.0, adaptive=False)).run(x0, 6)
    assert states_equal(prop.state, seq.state)
    assert any(k.startswith("optim/exp_avg_sq/") for k in seq.state)
    assert not torch.equal(seq.state["geometry.encoding"], x0["geometry.encoding"])
    assert not bool(seq.state[OCCUPANCY].all())  # the grid was refreshed: some cells skipped


def test_batched_executor_at_threshold_0_matches_to_float_tolerance(process):
    x0 = process.initial_state()
    seq = run_sequential(process, x0, 5)
    cfg = SolverConfig(window=3, threshold=0.0, adaptive=False)
    result = PicardSolver(process, cfg, executor=BatchedExecutor()).run(x0, 5)
    assert result.step == 5 and result.stats.status == "done"
    assert seq.state.keys() == result.state.keys()
    for k in seq.state:
        a, b = result.state[k].double(), seq.state[k].double()
        assert float((a - b).norm()) <= 1e-4 * max(float(b.norm()), 1e-6), k


def test_config_checks():
    validate_sdf_config(tiny_config())
    with pytest.raises(ConfigError, match="SDS"):
        validate_sdf_config(tiny_config("guidance=vsd"))
    with pytest.raises(ConfigError, match="init_radius"):
        validate_sdf_config(tiny_config("sdf.init_radius=2.0"))
    with pytest.raises(ConfigError, match="normal_mode"):
        validate_sdf_config(tiny_config("sdf.normal_mode=phong"))


def test_the_bench_commands_take_the_sdf_and_dmtet():
    from dreampropeller.commands.bench import BENCH_REPRESENTATIONS
    from dreampropeller.systems.factory import REPRESENTATIONS

    assert {"nerf", "gaussians", "dmtet", "sdf"} <= set(BENCH_REPRESENTATIONS) <= set(REPRESENTATIONS)
