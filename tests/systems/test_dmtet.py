"""The DMTet + SDS Picard process: exactness at threshold 0 (moments included), batched == per-slot,
deterministic units, and the config checks."""

import pytest
import torch

from dreampropeller.bench.picard import states_equal
from dreampropeller.config.loading import ConfigError, build, merge_config
from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.guidance.tiny.model import TinyPrior
from dreampropeller.picard.executors import BatchedExecutor
from dreampropeller.picard.solver import PicardSolver, SolverConfig, run_sequential
from dreampropeller.systems.dmtet import DmtetTextTo3D, validate_dmtet_config
from dreampropeller.systems.factory import make_guidance

DMTET_TINY = [
    "representation=dmtet",
    "prompt=a red cube",
    "render.height=16",
    "render.width=16",
    "render.batch_size=2",
    "dmtet.resolution=8",
    "dmtet.log2_hashmap_size=10",
    "dmtet.n_levels=2",
    "dmtet.finest_resolution=32",
    "dmtet.lambda_normal_consistency=0.1",
    "dmtet.lambda_laplacian=1.0",
    "shading.ambient_only_steps=2",  # albedo first, then lit and textureless cameras
]


def tiny_config(*extra):
    data = merge_config(TextTo3DConfig(), overrides=[*DMTET_TINY, *extra], free=["optimizer"])
    return build(TextTo3DConfig, data)


@pytest.fixture(scope="module")
def process(random_prior_dir):
    torch.set_num_threads(1)
    cfg = tiny_config()
    return DmtetTextTo3D(cfg, make_guidance(cfg, TinyPrior.load(random_prior_dir), "cpu"))


def test_unit_is_deterministic_and_moves_the_surface_and_texture(process):
    x = process.initial_state()
    a, b = process.unit(x, 3), process.unit(x, 3)
    assert set(a) == set(process.param_keys)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = process.unit(x, 4)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    for k in ("dmtet.sdf", "dmtet.deformation", "texture.encoding", "texture.albedo_net.0.weight"):
        assert float(a[k].abs().sum()) > 0, k


def test_unit_batch_equals_per_slot_units(process):
    x0 = process.initial_state()
    x1 = process.update(x0, process.unit(x0, 0), 0)
    xs, ts = [x0, x1, x1], [0, 1, 5]
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
    assert not torch.equal(seq.state["dmtet.sdf"], x0["dmtet.sdf"])


def test_batched_executor_runs_a_window(process):
    x0 = process.initial_state()
    result = PicardSolver(process, SolverConfig(window=3), executor=BatchedExecutor()).run(x0, 4)
    assert result.step == 4 and result.stats.status == "done"


def test_config_checks():
    validate_dmtet_config(tiny_config())
    with pytest.raises(ConfigError, match="SDS"):
        validate_dmtet_config(tiny_config("guidance=vsd"))
    with pytest.raises(ConfigError, match="init_radius"):
        validate_dmtet_config(tiny_config("dmtet.init_radius=2.0"))
    with pytest.raises(ConfigError, match="resolution"):
        validate_dmtet_config(tiny_config("dmtet.resolution=1"))


def test_supersampled_and_flat_shaded_units_have_gradients(random_prior_dir):
    cfg = tiny_config("dmtet.supersample=2", "dmtet.normals=face")
    proc = DmtetTextTo3D(cfg, make_guidance(cfg, TinyPrior.load(random_prior_dir), "cpu"))
    x = proc.initial_state()
    d = proc.unit(x, 3)
    assert all(torch.isfinite(v).all() for v in d.values())
    assert float(d["dmtet.sdf"].abs().sum()) > 0
    with pytest.raises(ConfigError, match="supersample"):
        validate_dmtet_config(tiny_config("dmtet.supersample=0"))
    with pytest.raises(ConfigError, match="normals"):
        validate_dmtet_config(tiny_config("dmtet.normals=phong"))


def test_silhouette_modes_give_different_geometry_gradients(random_prior_dir, process):
    # edge sampling (the default) and antialiasing: both reach the SDF, and not identically
    assert process.cfg.dmtet.silhouette == "edges"
    cfg = tiny_config("dmtet.silhouette=antialias")
    proc = DmtetTextTo3D(cfg, make_guidance(cfg, TinyPrior.load(random_prior_dir), "cpu"))
    x = process.initial_state()
    edges, blended = process.unit(x, 3), proc.unit(x, 3)
    assert float(edges["dmtet.sdf"].abs().sum()) > 0 and float(blended["dmtet.sdf"].abs().sum()) > 0
    assert not torch.equal(edges["dmtet.sdf"], blended["dmtet.sdf"])
    with pytest.raises(ConfigError, match="silhouette"):
        validate_dmtet_config(tiny_config("dmtet.silhouette=blur"))
