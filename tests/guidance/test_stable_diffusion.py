"""Stable Diffusion prior on a tiny random-weight pipeline saved in the test: loading, errors, SDS math,
determinism, exactness of a propelled run, and the CLI."""

import shutil

import pytest
import torch

from dreampropeller.bench.picard import states_equal
from dreampropeller.bench.random_models import save_components, sd_components
from dreampropeller.config.loading import build, merge_config
from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.guidance.registry import PriorError, load_prior
from dreampropeller.guidance.sds import SDSConfig, guided_noise, sds_gradient
from dreampropeller.guidance.stable_diffusion import StableDiffusionPrior
from dreampropeller.picard.solver import PicardSolver, SolverConfig, run_sequential
from dreampropeller.systems.factory import build_process

TINY = [
    "render.height=16",
    "render.width=16",
    "render.batch_size=1",
    "render.num_samples=8",
    "nerf.n_levels=4",
    "nerf.log2_hashmap_size=10",
    "levels.start=2",
    "levels.every=3",
]


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return save_components(sd_components("tiny", seed=0), tmp_path_factory.mktemp("sd"))


@pytest.fixture(scope="module")
def prior(sd_dir, monkeypatch_module):
    return load_prior("sd", str(sd_dir))


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    yield mp
    mp.undo()


def test_loads_through_registry(prior):
    assert isinstance(prior, StableDiffusionPrior)
    assert prior.image_size == 16 and prior.num_train_timesteps == 1000
    assert prior.alphas_cumprod.shape == (1000,)
    # scaled_linear betas of SD: alpha_bar(0) = 1 - 0.00085
    assert float(prior.alphas_cumprod[0]) == pytest.approx(1 - 0.00085, rel=1e-6)
    assert all(not p.requires_grad for p in prior.parameters())


def test_encode_images_resizes_and_keeps_gradient(prior):
    rgb = torch.rand(2, 3, 24, 24, requires_grad=True)
    lat = prior.encode_images(rgb)
    assert lat.shape == (2, 4, 8, 8) and lat.dtype == torch.float32
    lat.sum().backward()
    assert rgb.grad is not None and float(rgb.grad.abs().sum()) > 0
    assert prior.decode(lat.detach()).shape == (2, 3, 16, 16)


def test_sds_gradient_follows_cfg_convention(prior):
    cond = prior.encode_text(["a red cube"])
    uncond = prior.encode_text([""])
    g = torch.Generator().manual_seed(0)
    lat = torch.randn(2, 4, 8, 8, generator=g)
    noise = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([100, 700])
    cond2 = {k: v.expand(2, *v.shape[1:]) for k, v in cond.items()}
    uncond2 = {k: v.expand(2, *v.shape[1:]) for k, v in uncond.items()}
    noisy = prior.add_noise(lat, noise, t)
    with torch.no_grad():
        eps_c = prior.predict_noise(noisy, t, cond2)
        eps_u = prior.predict_noise(noisy, t, uncond2)
    w = (1 - prior.alphas_cumprod[t]).view(-1, 1, 1, 1)
    for conv, s in (("threestudio", 100.0), ("diffusers", 7.5)):
        cfg = SDSConfig(guidance_scale=s, cfg_convention=conv)
        grad = sds_gradient(prior, lat, t, noise, cond2, uncond2, None, cfg)
        hand = w * (guided_noise(eps_c, eps_u, s, conv) - noise)
        assert grad.shape == lat.shape
        # the gradient batches [cond, uncond] in one UNet call, the hand computation does not: float32
        # round-off of eps (~1e-7 of its size) is amplified by the guidance scale
        torch.testing.assert_close(grad, hand, rtol=1e-4, atol=1e-6 * (1 + s))
    # threestudio's s equals diffusers' s + 1
    a = sds_gradient(prior, lat, t, noise, cond2, uncond2, None, SDSConfig(100.0, "threestudio"))
    b = sds_gradient(prior, lat, t, noise, cond2, uncond2, None, SDSConfig(101.0, "diffusers"))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def _process(prior, extra=()):
    data = merge_config(TextTo3DConfig(), overrides=[*TINY, "prompt=a red cube", *extra], free=["optimizer"])
    return build_process(build(TextTo3DConfig, data), prior)


def test_unit_deterministic_and_propelled_equals_sequential(prior):
    process = _process(prior)
    x0 = process.initial_state()
    a, b = process.unit(x0, 2), process.unit(x0, 2)
    assert set(a) == set(process.param_keys)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], process.unit(x0, 3)[k]) for k in a)
    seq = run_sequential(process, x0, 5)
    prop = PicardSolver(process, SolverConfig(window=4, threshold=0.0, adaptive=False)).run(x0, 5)
    assert states_equal(prop.state, seq.state)
    assert not states_equal(seq.state, x0)


def test_missing_or_malformed_directory_gives_one_line(sd_dir, tmp_path):
    with pytest.raises(PriorError, match="does not exist"):
        load_prior("sd", str(tmp_path / "nope"))
    broken = tmp_path / "broken"
    shutil.copytree(sd_dir, broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(PriorError, match="no 'vae' component") as err:
        load_prior("sd", str(broken))
    assert "\n" not in str(err.value)
    (broken / "vae").mkdir()
    (broken / "vae" / "config.json").write_text("{}")
    with pytest.raises(PriorError, match="vae/ has no weights"):
        load_prior("sd", str(broken))
    with pytest.raises(PriorError, match="nor in the local Hugging Face cache"):
        load_prior("sd", "nobody-here/no-such-model")


def test_cli_generate_with_sd_dir(sd_dir, tmp_path, capsys):
    from dreampropeller.cli import main

    out = tmp_path / "run"
    args = ["generate", "a red cube", "--prior", "sd", "--prior-path", str(sd_dir), "--steps", "3"]
    args += ["--out", str(out), "--device", "cpu", "--quiet", *TINY]
    args += ["export.turntable_views=2", "export.video_size=16", "export.video_samples=4"]
    args += ["export.mesh_resolution=16"]
    assert main(args) == 0
    assert (out / "metrics.json").is_file() and not (out / "INCOMPLETE").exists()
    capsys.readouterr()
    missing = str(tmp_path / "missing")
    args = ["generate", "a red cube", "--prior", "sd", "--prior-path", missing, "--out", str(tmp_path / "r2")]
    code = main([*args, "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "does not exist" in err[0]
