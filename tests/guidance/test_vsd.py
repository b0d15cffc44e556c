"""VSD math on a tiny random Stable Diffusion: LoRA starts as the pretrained UNet, switches on only
inside ``lora_active``, the gradient equals a hand computation, the LoRA loss trains it."""

import pytest
import torch

from dreampropeller.bench.random_models import sd_components
from dreampropeller.guidance.sds import SDSConfig, guided_noise
from dreampropeller.guidance.stable_diffusion import StableDiffusionPrior
from dreampropeller.guidance.vsd import (
    VSDConfig,
    add_lora,
    camera_features,
    draw_lora,
    load_lora,
    lora_active,
    lora_grads,
    lora_noise,
    lora_parameters,
    vsd_gradient,
)


@pytest.fixture(scope="module")
def prior():
    torch.set_num_threads(1)
    p = StableDiffusionPrior(**sd_components("tiny", seed=0)).eval().requires_grad_(False)
    add_lora(p, VSDConfig(lora_rank=2, camera_hidden=8))
    return p


@pytest.fixture(scope="module")
def inputs(prior):
    g = torch.Generator().manual_seed(0)
    cond = prior.encode_text(["a red cube", "a red cube"])
    uncond = prior.encode_text(["", ""])
    lat = torch.randn(2, 4, 8, 8, generator=g)
    noise = torch.randn(2, 4, 8, 8, generator=g)
    camera = torch.tensor([[10.0, 30.0, 1.8], [40.0, -120.0, 1.6]])
    return lat, noise, torch.tensor([50, 800]), cond, uncond, camera


def _perturb(prior, seed=3):
    """Non-zero LoRA B matrices and camera MLP (the LoRA then differs from the pretrained UNet)."""
    g = torch.Generator().manual_seed(seed)
    load_lora(prior, {k: 0.05 * torch.randn(v.shape, generator=g) for k, v in lora_parameters(prior).items()})


def test_lora_is_a_no_op_at_init_and_off_outside_the_block(prior, inputs):
    lat, noise, t, cond, _, camera = inputs
    names = list(lora_parameters(prior))
    assert any("lora_A" in n for n in names) and any("time_embedding.camera" in n for n in names)
    noisy = prior.add_noise(lat, noise, t)
    saved = {k: v.clone() for k, v in lora_parameters(prior).items()}
    with torch.no_grad():
        base = prior.predict_noise(noisy, t, cond)
        torch.testing.assert_close(lora_noise(prior, noisy, t, cond, camera, 1.0), base)
        _perturb(prior)
        assert torch.equal(prior.predict_noise(noisy, t, cond), base)  # LoRA off outside the block
        with lora_active(prior, camera_features(camera)):
            on = prior.predict_noise(noisy, t, cond)
        assert float((on - base).abs().max()) > 1e-4
        assert torch.equal(prior.predict_noise(noisy, t, cond), base)
    load_lora(prior, saved)


def test_vsd_gradient_matches_hand_computation(prior, inputs):
    lat, noise, t, cond, uncond, camera = inputs
    _perturb(prior)
    cfg = SDSConfig(guidance_scale=7.5, cfg_convention="diffusers")
    for scale_lora in (1.0, 2.0):
        vsd = VSDConfig(guidance_scale_lora=scale_lora)
        grad = vsd_gradient(prior, lat, t, noise, cond, uncond, camera, cfg, vsd)
        noisy = prior.add_noise(lat, noise, t)
        with torch.no_grad():
            eps_pre = guided_noise(
                prior.predict_noise(noisy, t, cond), prior.predict_noise(noisy, t, uncond), 7.5, "diffusers"
            )
            with lora_active(prior, camera_features(camera)):
                eps_cam = prior.predict_noise(noisy, t, cond)
            with lora_active(prior, torch.zeros(2, 5)):
                eps_free = prior.predict_noise(noisy, t, cond)
        eps_lora = eps_free + scale_lora * (eps_cam - eps_free)
        hand = (1 - prior.alphas_cumprod[t]).view(-1, 1, 1, 1) * (eps_pre - eps_lora)
        assert grad.shape == lat.shape
        torch.testing.assert_close(grad, hand, rtol=1e-4, atol=1e-5)
        again = vsd_gradient(prior, lat, t, noise, cond, uncond, camera, cfg, vsd)
        assert torch.equal(grad, again)


def test_lora_loss_gradients_and_draws(prior, inputs):
    lat, _, _, cond, _, camera = inputs
    d1 = draw_lora(prior, 2, (4, 8, 8), torch.Generator().manual_seed(5), dropout=0.1)
    d2 = draw_lora(prior, 2, (4, 8, 8), torch.Generator().manual_seed(5), dropout=0.1)
    assert all(torch.equal(d1[k], d2[k]) for k in d1)
    assert d1["t"].shape == (2,) and d1["noise"].shape == (2, 4, 8, 8)
    all_dropped = draw_lora(prior, 64, (1,), torch.Generator().manual_seed(0), dropout=1.0)["keep"]
    assert float(all_dropped.sum()) == 0.0
    grads = lora_grads(prior, lat, cond, camera, d1)
    assert set(grads) == set(lora_parameters(prior))
    assert sum(float(g.abs().sum()) for g in grads.values()) > 0
    assert all(not p.requires_grad for n, p in prior.unet.named_parameters() if n not in grads)


def test_bad_vsd_config():
    with pytest.raises(ValueError, match=r"vsd\.mode"):
        VSDConfig(mode="shared")
