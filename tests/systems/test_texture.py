"""The texture process (DreamGaussian's second stage): exact at threshold 0 with the Adam moments, a
window's units equal the per-slot ones, only the texture moves, and the config checks."""

import pytest
import torch

from dreampropeller.bench.picard import states_equal
from dreampropeller.config.loading import ConfigError, build, merge_config
from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.guidance.distillation import ScoreDistillation
from dreampropeller.guidance.tiny.model import TinyPrior
from dreampropeller.picard.solver import PicardSolver, SolverConfig, run_sequential
from dreampropeller.scene.mesh_raster import sphere_mesh
from dreampropeller.scene.uv_mesh import FACES, TEXTURE, UVS, VERTICES, bake, unwrap
from dreampropeller.systems.texture import TextureTextTo3D, texture_to_logits, validate_texture_config

TEXTURE_TINY = [
    "representation=texture",
    "prompt=a red ball",
    "texture.init_from=somewhere",
    "texture.size=16",
    "render.height=16",
    "render.width=16",
    "render.batch_size=2",
    "shading.ambient_only_steps=2",  # albedo first, then lit and textureless cameras
]


def tiny_config(*extra):
    return build(TextTo3DConfig, merge_config(TextTo3DConfig(), overrides=[*TEXTURE_TINY, *extra]))


@pytest.fixture(scope="module")
def process(random_prior_dir):
    torch.set_num_threads(1)
    cfg = tiny_config()
    vertices, faces = sphere_mesh(8, 10, radius=0.5)
    mesh, _ = unwrap(vertices.float().numpy(), faces.numpy())
    texture = bake(mesh, mesh.vertices * 0.5 + 0.5, 16)
    guidance = ScoreDistillation(
        TinyPrior.load(random_prior_dir), cfg.prompt, cfg.sds, cfg.prompt_processing, "cpu"
    )
    return TextureTextTo3D(cfg, guidance, mesh, texture)


def test_state_holds_the_mesh_and_the_texture_logits(process):
    x = process.initial_state()
    assert torch.allclose(torch.sigmoid(x[TEXTURE]), process.texture.clamp(1e-3, 1 - 1e-3), atol=1e-6)
    assert torch.equal(x[VERTICES], process.mesh.vertices) and torch.equal(x[FACES], process.mesh.faces)
    assert torch.equal(texture_to_logits(torch.tensor([0.5])), torch.zeros(1))


def test_unit_is_deterministic_and_moves_only_the_texture(process):
    x = process.initial_state()
    a, b = process.unit(x, 3), process.unit(x, 3)
    assert set(a) == {TEXTURE} and torch.equal(a[TEXTURE], b[TEXTURE])
    assert float(a[TEXTURE].abs().sum()) > 0
    assert not torch.equal(a[TEXTURE], process.unit(x, 4)[TEXTURE])
    y = process.update(x, a, 3)
    for k in (VERTICES, FACES, UVS):
        assert torch.equal(y[k], x[k])
    assert not torch.equal(y[TEXTURE], x[TEXTURE])


def test_unit_batch_equals_per_slot_units(process):
    x0 = process.initial_state()
    x1 = process.update(x0, process.unit(x0, 0), 0)
    xs, ts = [x0, x1, x1], [0, 1, 5]
    for x, t, d in zip(xs, ts, process.unit_batch(xs, ts), strict=True):
        single = process.unit(x, t)[TEXTURE]
        assert float((d[TEXTURE] - single).abs().max() / single.abs().max()) < 1e-4, t


def test_zero_threshold_reproduces_sequential(process):
    x0 = process.initial_state()
    seq = run_sequential(process, x0, 6)
    prop = PicardSolver(process, SolverConfig(window=4, threshold=0.0, adaptive=False)).run(x0, 6)
    assert states_equal(prop.state, seq.state)
    assert any(k.startswith("optim/exp_avg_sq/") for k in seq.state)
    assert not torch.equal(seq.state[TEXTURE], x0[TEXTURE])


def test_config_checks():
    validate_texture_config(tiny_config())
    with pytest.raises(ConfigError, match="init_from"):
        validate_texture_config(tiny_config("texture.init_from=null"))
    with pytest.raises(ConfigError, match="SDS"):
        validate_texture_config(tiny_config("guidance=vsd"))
    with pytest.raises(ConfigError, match=r"texture\.size"):
        validate_texture_config(tiny_config("texture.size=2"))


def test_topology_is_the_state_faces_own_and_computed_once(process):
    from dreampropeller.scene.mesh_raster import mesh_topology

    x = process.initial_state()
    first = process.topology(x[FACES])
    assert torch.equal(first, mesh_topology(x[FACES])) and process.topology(x[FACES].clone()) is first
    other = x[FACES].flip(1)  # other faces (a resumed run's, say) get their own topology
    assert torch.equal(process.topology(other), mesh_topology(other))
