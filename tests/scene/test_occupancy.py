"""Empty-space skipping: a full grid changes nothing, an empty cell contributes nothing, gradients flow."""

import torch

from dreampropeller.scene.cameras import cameras_from_spherical
from dreampropeller.scene.nerf import NeRFConfig, init_nerf_params, nerf_density, stack_params
from dreampropeller.scene.volume import occupancy_grid, render_cameras

CFG = NeRFConfig(n_levels=4, log2_hashmap_size=10, finest_resolution=64)


def _params(seed):
    return stack_params([init_nerf_params(CFG, torch.Generator().manual_seed(seed)) for _ in range(2)])


def _render(params, occupancy, grad=False):
    cams = cameras_from_spherical(20.0, 30.0, 2.0, 50.0)
    with torch.set_grad_enabled(grad):
        return render_cameras(
            params, cams, 12, 12, CFG, num_samples=16, shading="diffuse", occupancy=occupancy
        )


def test_full_grid_equals_dense_render():
    params = _params(0)
    dense = _render(params, None)
    full = _render(params, torch.ones(2, 8, 8, 8, dtype=torch.bool))
    for k in ("rgb", "opacity", "normal"):
        assert torch.allclose(dense[k], full[k], atol=1e-5), k


def test_empty_grid_renders_background_and_partial_grid_changes_little():
    params = _params(1)
    empty = _render(params, torch.zeros(8, 8, 8, dtype=torch.bool))
    assert float(empty["opacity"].abs().max()) == 0.0
    assert torch.allclose(empty["rgb"], torch.ones_like(empty["rgb"]))
    slot0 = {k: v[:1] for k, v in params.items()}
    grid = occupancy_grid(lambda p: nerf_density(slot0, p[None], CFG)[0], CFG.radius, 16, 0.05)
    assert 0.0 < grid.float().mean() < 1.0  # the blob is occupied, the corners are not
    sparse = _render(slot0, grid)
    dense = _render(slot0, None)
    assert float((sparse["rgb"] - dense["rgb"]).abs().max()) < 0.05


def test_gradients_reach_parameters_through_sparse_samples():
    params = {k: v.clone().requires_grad_(True) for k, v in _params(2).items()}
    out = _render(params, torch.ones(8, 8, 8, dtype=torch.bool), grad=True)
    out["rgb"].sum().backward()
    assert float(params["geometry.encoding"].grad.abs().sum()) > 0
    assert float(params["material.albedo_net.0.weight"].grad.abs().sum()) > 0
