"""Shading math, light sampler and the per-camera mode chooser."""

import pytest
import torch

from dreampropeller.scene.hashgrid import SceneError
from dreampropeller.scene.shading import (
    ShadingConfig,
    choose_shading,
    sample_light_positions,
    shade,
    shading_codes,
)


def test_shade_modes_by_hand():
    cfg = ShadingConfig(ambient=0.2, diffuse=0.8)
    albedo = torch.tensor([[0.5, 0.25, 1.0]]).expand(3, 3)
    normals = torch.tensor([[0.0, 0.0, 1.0]]).expand(3, 3)
    points = torch.zeros(3, 3)
    # light 60 degrees off the normal: n . l = 0.5
    light = torch.tensor([[0.0, 3.0**0.5, 1.0]]).expand(3, 3)
    codes = torch.tensor([0, 1, 2])
    out = shade(albedo, normals, points, light, codes, cfg)
    assert torch.allclose(out[0], albedo[0])
    assert torch.allclose(out[1], albedo[1] * (0.2 + 0.8 * 0.5))
    assert torch.allclose(out[2], torch.full((3,), 0.2 + 0.8 * 0.5))
    # a light behind the surface leaves the ambient term only
    back = shade(albedo, normals, points, -light, torch.tensor([1, 1, 1]), cfg)
    assert torch.allclose(back, albedo * 0.2)
    with pytest.raises(SceneError, match="normals"):
        shade(albedo, None, points, light, codes, cfg)


def test_light_sampler_is_deterministic_and_near_the_camera():
    cfg = ShadingConfig(light_distance_range=(0.8, 1.5), light_perturb=0.3)
    cams = torch.tensor([[2.0, 0.0, 0.0]]).repeat(500, 1)
    a = sample_light_positions(cams, torch.Generator().manual_seed(1), cfg)
    b = sample_light_positions(cams, torch.Generator().manual_seed(1), cfg)
    assert torch.equal(a, b)
    dist = a.norm(dim=-1)
    assert dist.min() >= 0.8 - 1e-6 and dist.max() <= 1.5 + 1e-6
    cos = torch.nn.functional.normalize(a, dim=-1)[:, 0]
    assert cos.mean() > 0.9  # mostly on the camera's side


def test_choose_shading_schedule():
    cfg = ShadingConfig(ambient_only_steps=100, albedo_prob=0.2, textureless_prob=0.5)
    assert choose_shading(99, 5, torch.Generator().manual_seed(0), cfg) == ["albedo"] * 5
    modes = choose_shading(100, 4000, torch.Generator().manual_seed(0), cfg)
    frac = {m: modes.count(m) / 4000 for m in ("albedo", "textureless", "diffuse")}
    assert abs(frac["albedo"] - 0.2) < 0.03
    assert abs(frac["textureless"] - 0.4) < 0.03
    assert abs(frac["diffuse"] - 0.4) < 0.03
    # same generator state afterwards whatever the step (always n draws)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    choose_shading(0, 7, g1, cfg)
    choose_shading(500, 7, g2, cfg)
    assert torch.equal(torch.rand(2, generator=g1), torch.rand(2, generator=g2))


def test_shading_codes_forms():
    assert shading_codes("diffuse", 2, 3, 4, torch.device("cpu")).unique().tolist() == [1]
    per_slot = shading_codes(["albedo", "textureless"], 2, 3, 4, torch.device("cpu"))
    assert per_slot[0].unique().tolist() == [0] and per_slot[1].unique().tolist() == [2]
    per_cam = shading_codes([["albedo", "diffuse"]], 1, 2, 3, torch.device("cpu"))
    assert per_cam.tolist() == [[0, 0, 0, 1, 1, 1]]
    with pytest.raises(SceneError, match="per slot"):
        shading_codes(["albedo"], 2, 1, 1, torch.device("cpu"))
    with pytest.raises(SceneError):
        ShadingConfig(light_distance_range=(2.0, 1.0))
