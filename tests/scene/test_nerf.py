"""NeRF field: parameters, blob density, slot batching, normals."""

import pytest
import torch

from dreampropeller.scene.hashgrid import SceneError
from dreampropeller.scene.nerf import (
    NeRFConfig,
    init_nerf_params,
    nerf_background,
    nerf_field,
    nerf_field_with_normals,
    nerf_normals,
    sample_background_colors,
    slot_params,
    stack_params,
    unstack_params,
)

SMALL = dict(n_levels=4, log2_hashmap_size=10, base_resolution=4, finest_resolution=32, density_hidden=16)


def _slots(cfg: NeRFConfig, p: int, noise: float = 0.3) -> dict[str, torch.Tensor]:
    """``p`` different parameter sets (tables perturbed well above their 1e-4 init)."""
    sets = []
    for k in range(p):
        g = torch.Generator().manual_seed(100 + k)
        params = init_nerf_params(cfg, g)
        params["geometry.encoding"] = params["geometry.encoding"] + noise * torch.randn(
            params["geometry.encoding"].shape, generator=g
        )
        sets.append(params)
    return stack_params(sets)


def test_param_names_shapes_and_determinism():
    cfg = NeRFConfig(**SMALL, background="mlp")
    a = init_nerf_params(cfg, torch.Generator().manual_seed(0))
    b = init_nerf_params(cfg, torch.Generator().manual_seed(0))
    assert a["geometry.encoding"].shape == (4, 1024, 2)
    assert a["geometry.density_net.0.weight"].shape == (16, 8)
    assert a["geometry.density_net.1.weight"].shape == (1, 16)
    assert a["material.albedo_net.1.bias"].shape == (3,)
    assert "background.net.0.weight" in a
    assert a["geometry.encoding"].abs().max() <= 1e-4
    assert all(torch.equal(a[k], b[k]) for k in a)
    slotted = stack_params([a, b])
    assert slotted["geometry.encoding"].shape == (2, 4, 1024, 2)
    assert torch.equal(
        unstack_params(slotted)[1]["geometry.density_net.0.bias"], b["geometry.density_net.0.bias"]
    )
    assert slot_params(slotted, 1)["geometry.encoding"].shape == (1, 4, 1024, 2)


def test_blob_density_is_high_at_centre_and_low_outside():
    cfg = NeRFConfig(**SMALL)
    params = stack_params([init_nerf_params(cfg, torch.Generator().manual_seed(0))])
    pts = torch.tensor([[[0.0, 0.0, 0.0], [0.9, 0.0, 0.0]]])
    density, albedo = nerf_field(params, pts, cfg)
    assert density[0, 0] > 5.0 and density[0, 1] < 0.5
    assert albedo.shape == (1, 2, 3) and bool(((albedo > 0) & (albedo < 1)).all())


def test_slot_k_of_batch_equals_single_call():
    cfg = NeRFConfig(**SMALL)
    params = _slots(cfg, 8)
    pts = torch.rand(8, 200, 3, generator=torch.Generator().manual_seed(5)) * 2 - 1
    density, albedo = nerf_field(params, pts, cfg)
    for k in range(8):
        d1, a1 = nerf_field(slot_params(params, k), pts[k : k + 1], cfg)
        assert torch.allclose(density[k], d1[0], rtol=1e-5, atol=1e-5)
        assert torch.allclose(albedo[k], a1[0], rtol=1e-5, atol=1e-6)
    # and the slots really differ
    assert not torch.allclose(density[0], density[1])


@pytest.mark.parametrize("mode", ["finite_difference", "forward_difference", "analytic"])
def test_normals_of_blob_point_outward_and_are_differentiable(mode):
    cfg = NeRFConfig(**SMALL, normal_mode=mode)
    params = {k: v.requires_grad_(True) for k, v in _slots(cfg, 1, noise=0.0).items()}
    g = torch.Generator().manual_seed(6)
    pts = torch.nn.functional.normalize(torch.randn(1, 64, 3, generator=g), dim=-1) * 0.3
    normals = nerf_normals(params, pts, cfg)
    radial = torch.nn.functional.normalize(pts, dim=-1)
    assert (normals * radial).sum(-1).min() > 0.99
    assert torch.allclose(normals.norm(dim=-1), torch.ones(1, 64), atol=1e-5)
    _, _, n2 = nerf_field_with_normals(params, pts, cfg)
    assert torch.allclose(n2, normals, atol=1e-5)
    n2[..., 0].sum().backward()
    assert params["geometry.density_net.0.weight"].grad.abs().sum() > 0


def test_backgrounds():
    dirs = torch.nn.functional.normalize(
        torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(7)), dim=-1
    )
    solid = NeRFConfig(**SMALL, background_color=(0.2, 0.4, 0.6))
    p2 = stack_params([init_nerf_params(solid, torch.Generator().manual_seed(0))] * 2)
    assert torch.allclose(nerf_background(p2, dirs, solid), torch.tensor([0.2, 0.4, 0.6]).expand(2, 5, 3))
    mlp = NeRFConfig(**SMALL, background="mlp")
    p2 = stack_params([init_nerf_params(mlp, torch.Generator().manual_seed(0))] * 2)
    bg = nerf_background(p2, dirs, mlp)
    assert bg.shape == (2, 5, 3) and bool(((bg > 0) & (bg < 1)).all()) and bg[0].std() > 0
    with pytest.raises(SceneError, match="background"):
        nerf_background({"geometry.encoding": p2["geometry.encoding"]}, dirs, mlp)


def test_random_background_colors_draw_a_fixed_amount():
    cfg = NeRFConfig(**SMALL, random_background_prob=0.5)
    mask, colours = sample_background_colors(cfg, 1000, torch.Generator().manual_seed(8))
    assert colours.shape == (1000, 3) and 400 < int(mask.sum()) < 600
    never = NeRFConfig(**SMALL)
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    sample_background_colors(never, 4, g1)
    sample_background_colors(cfg, 4, g2)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))


def test_bad_config_and_points_raise():
    with pytest.raises(SceneError, match="density_activation"):
        NeRFConfig(density_activation="relu")
    cfg = NeRFConfig(**SMALL)
    params = _slots(cfg, 2)
    with pytest.raises(SceneError, match="points must be"):
        nerf_field(params, torch.zeros(1, 4, 3), cfg)
