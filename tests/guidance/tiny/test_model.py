import pytest
import torch

from dreampropeller.guidance.tiny.model import PriorWeightsMissing, TinyPrior, TinyPriorConfig
from dreampropeller.guidance.tiny.sampling import ddim_sample, ddim_timesteps


@pytest.fixture(scope="module")
def prior():
    torch.manual_seed(0)
    return TinyPrior(TinyPriorConfig()).eval()


def test_interface_attributes(prior):
    assert prior.uses_camera and prior.image_size == 32 and prior.num_train_timesteps == 1000
    assert prior.alphas_cumprod.shape == (1000,)
    assert prior.alphas_cumprod[0] > 0.999 and prior.alphas_cumprod[-1] < 1e-3
    assert 3e6 < prior.num_parameters() < 5e6  # fits the 20 MB budget in float32


def test_predict_noise_shapes_broadcast_and_determinism(prior):
    cond = prior.encode_text(["a red cube"])
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([10, 500, 990])
    camera = torch.tensor([[15.0, 30.0, 1.8], [0.0, -90.0, 1.5], [45.0, 170.0, 2.0]])
    with torch.no_grad():
        a = prior.predict_noise(x, t, cond, camera)
        b = prior.predict_noise(x, t, cond, camera)
        c = prior.predict_noise(x, t, cond, None)
        d = prior.predict_noise(x, t, prior.encode_text(["a blue sphere"]), camera)
    assert a.shape == (3, 3, 32, 32)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c) and not torch.allclose(a, d)


def test_paraphrases_give_the_same_condition(prior):
    cond = prior.encode_text(["a red cube", "a cube that is red", "red box", ""])
    for key in ("hidden_states", "pooled"):
        assert torch.equal(cond[key][0], cond[key][1]) and torch.equal(cond[key][0], cond[key][2])
        assert not torch.allclose(cond[key][0], cond[key][3])


def test_encode_images_resizes_differentiably(prior):
    rgb = torch.rand(2, 3, 64, 64, requires_grad=True)
    x = prior.encode_images(rgb)
    assert x.shape == (2, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    x.sum().backward()
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0
    assert torch.allclose(
        prior.decode(prior.encode_images(torch.full((1, 3, 32, 32), 0.25))), torch.tensor(0.25)
    )


def test_save_load_round_trip(prior, tmp_path):
    path = prior.save(tmp_path)
    assert path.name == "tiny.safetensors" and (tmp_path / "tiny.json").is_file()
    loaded = TinyPrior.load(tmp_path)
    cond = prior.encode_text(["a green torus"])
    x, t, cam = torch.randn(1, 3, 32, 32), torch.tensor([300]), torch.tensor([[10.0, 0.0, 1.7]])
    with torch.no_grad():
        assert torch.equal(prior.predict_noise(x, t, cond, cam), loaded.predict_noise(x, t, cond, cam))
    assert not any(p.requires_grad for p in loaded.parameters())


def test_missing_weights_error_is_clear(tmp_path):
    with pytest.raises(PriorWeightsMissing, match="no prior weights"):
        TinyPrior.load(tmp_path / "nope.safetensors")


def test_ddim_sampler_is_deterministic_and_bounded(prior):
    cam = torch.tensor([[15.0, 0.0, 1.8], [15.0, 90.0, 1.8]])
    kw = dict(steps=3, guidance_scale=3.0)
    a = ddim_sample(
        prior, ["a red cube", "a blue sphere"], cam, generator=torch.Generator().manual_seed(0), **kw
    )
    b = ddim_sample(
        prior, ["a red cube", "a blue sphere"], cam, generator=torch.Generator().manual_seed(0), **kw
    )
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    assert ddim_timesteps(1000, 4).tolist() == [999, 666, 333, 0]
    with pytest.raises(ValueError, match="steps must be"):
        ddim_timesteps(1000, 0)
