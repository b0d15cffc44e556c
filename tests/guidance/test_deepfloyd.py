"""DeepFloyd IF stage I prior on a tiny random-weight IF-shaped pipeline (T5 encoder) saved in the test."""

import shutil

import pytest
import torch

from dreampropeller.bench.picard import states_equal
from dreampropeller.bench.random_models import if_components, save_components
from dreampropeller.config.loading import build, merge_config
from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.guidance.deepfloyd import DeepFloydPrior
from dreampropeller.guidance.registry import PriorError, load_prior
from dreampropeller.guidance.sds import SDSConfig, guided_noise, sds_gradient
from dreampropeller.picard.solver import PicardSolver, SolverConfig, run_sequential
from dreampropeller.systems.factory import build_process

TINY = ["render.height=16", "render.width=16", "render.batch_size=1", "render.num_samples=8"]
TINY += ["nerf.n_levels=4", "nerf.log2_hashmap_size=10", "levels.start=2", "levels.every=3"]


@pytest.fixture(scope="module")
def if_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return save_components(if_components("tiny", seed=0), tmp_path_factory.mktemp("if"))


@pytest.fixture(scope="module")
def prior(if_dir):
    return load_prior("if", str(if_dir))


def test_loads_pixel_space_prior(prior):
    assert isinstance(prior, DeepFloydPrior)
    assert prior.image_size == 16
    x = prior.encode_images(torch.full((1, 3, 32, 32), 0.75))
    assert x.shape == (1, 3, 16, 16)
    torch.testing.assert_close(x, torch.full_like(x, 0.5))
    # squaredcos_cap_v2 schedule: alpha_bar decreases from ~1 to ~0
    ac = prior.alphas_cumprod
    assert float(ac[0]) > 0.999 and float(ac[-1]) < 1e-3 and bool((ac[1:] <= ac[:-1]).all())


def test_text_condition_is_t5_hidden_states(prior):
    cond = prior.encode_text(["a red cube, front view", ""])
    assert cond["hidden_states"].shape == (2, 12, 16)
    assert not torch.equal(cond["hidden_states"][0], cond["hidden_states"][1])


def test_learned_variance_half_is_dropped_and_cfg_matches_hand(prior):
    cond = prior.encode_text(["a blue ball"])
    uncond = prior.encode_text([""])
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 16, 16, generator=g)
    noise = torch.randn(1, 3, 16, 16, generator=g)
    t = torch.tensor([400])
    noisy = prior.add_noise(x, noise, t)
    with torch.no_grad():
        full = prior.unet(noisy, t, encoder_hidden_states=cond["hidden_states"]).sample
        eps_c = prior.predict_noise(noisy, t, cond)
        eps_u = prior.predict_noise(noisy, t, uncond)
    assert full.shape[1] == 6 and eps_c.shape == (1, 3, 16, 16)
    torch.testing.assert_close(eps_c, full[:, :3])
    cfg = SDSConfig(guidance_scale=20.0, cfg_convention="threestudio")
    grad = sds_gradient(prior, x, t, noise, cond, uncond, None, cfg)
    hand = (1 - prior.alphas_cumprod[t]).view(-1, 1, 1, 1) * (
        guided_noise(eps_c, eps_u, 20.0, "threestudio") - noise
    )
    torch.testing.assert_close(grad, hand, rtol=1e-4, atol=1e-5)


def test_propelled_equals_sequential(prior):
    data = merge_config(TextTo3DConfig(), overrides=[*TINY, "prompt=a red cube"], free=["optimizer"])
    process = build_process(build(TextTo3DConfig, data), prior)
    x0 = process.initial_state()
    a, b = process.unit(x0, 1), process.unit(x0, 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    seq = run_sequential(process, x0, 5)
    prop = PicardSolver(process, SolverConfig(window=4, threshold=0.0, adaptive=False)).run(x0, 5)
    assert states_equal(prop.state, seq.state)


def test_missing_text_encoder_named(if_dir, tmp_path):
    broken = tmp_path / "if"
    shutil.copytree(if_dir, broken)
    shutil.rmtree(broken / "text_encoder")
    with pytest.raises(PriorError, match=r"DeepFloyd IF directory .* has no 'text_encoder' component"):
        load_prior("if", str(broken))
