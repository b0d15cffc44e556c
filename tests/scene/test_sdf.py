"""The NeuS SDF field and renderer: the starting sphere, NeuS opacity against hand values and its
telescoping along a ray, an unbiased surface depth, normals and eikonal values against analytic ones,
gradients that reach every parameter, and slots that do not see each other."""

import math

import numpy as np
import pytest
import torch

from dreampropeller.scene.hashgrid import SceneError
from dreampropeller.scene.nerf import stack_params
from dreampropeller.scene.sdf import (
    SDF_NET,
    VARIANCE,
    SdfShape,
    eikonal_loss,
    in_cells,
    init_sdf_params,
    inv_std,
    neus_alpha,
    render_sdf_rays,
    sdf_field,
    sdf_keys,
    sdf_normals,
    sdf_occupancy,
    sdf_value,
)
from dreampropeller.scene.volume import composite

SHAPE = SdfShape(n_levels=4, log2_hashmap_size=10, finest_resolution=64, init_radius=0.5)


def params(seed=0, shape=SHAPE, perturb=0.0):
    """One slotted parameter set; ``perturb`` gives the SDF MLP's zero output layer random weights."""
    p = init_sdf_params(shape, torch.Generator().manual_seed(seed))
    if perturb:
        g = torch.Generator().manual_seed(seed + 100)
        w = p[f"{SDF_NET}.{shape.sdf_layers}.weight"]
        p[f"{SDF_NET}.{shape.sdf_layers}.weight"] = torch.randn(w.shape, generator=g) * perturb
        p["geometry.encoding"] = torch.randn(p["geometry.encoding"].shape, generator=g) * perturb
    return stack_params([p])


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_starts_as_the_sphere_with_the_configured_variance():
    torch.set_num_threads(1)
    p = params()
    assert tuple(p) == sdf_keys(SHAPE)
    pts = torch.rand(1, 200, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1
    want = pts.norm(dim=-1) - 0.5
    assert torch.allclose(sdf_value(p, pts, SHAPE), want, atol=1e-6)
    assert float(inv_std(p)[0]) == pytest.approx(math.exp(3.0), rel=1e-6)
    with pytest.raises(SceneError, match="init_radius"):
        SdfShape(init_radius=1.5)


def test_neus_alpha_against_hand_values():
    s, d = 20.0, 0.1
    # a section centred on the surface, the ray against the normal: (sig(1) - sig(-1)) / sig(1) = 1 - e^-1
    a = neus_alpha(torch.tensor([0.0]), torch.tensor([-1.0]), torch.tensor([d]), torch.tensor(s))
    want = (sigmoid(1.0) - sigmoid(-1.0) + 1e-5) / (sigmoid(1.0) + 1e-5)
    assert float(a) == pytest.approx(want, rel=1e-6)
    assert want == pytest.approx(1.0 - math.exp(-1.0), abs=1e-4)
    # leaving the surface (cos > 0): transparent
    a = neus_alpha(torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([d]), torch.tensor(s))
    assert float(a) == pytest.approx(1e-5 / (0.5 + 1e-5), rel=1e-6)
    # cosine annealing at 0: the ends move by (1/2 - cos/2) * d / 2 = 0.025 for cos = 0
    a = neus_alpha(torch.tensor([0.2]), torch.tensor([0.0]), torch.tensor([d]), torch.tensor(s), 0.0)
    prev, nxt = sigmoid(s * 0.225), sigmoid(s * 0.175)
    assert float(a) == pytest.approx((prev - nxt + 1e-5) / (prev + 1e-5), rel=1e-5)  # float32


def test_transmittance_telescopes_along_a_ray_through_a_plane():
    # f(t) = 0.3 - t along the ray, 40 sections of 0.02 from t = 0 to 0.8: prod(1 - alpha) is
    # sig(s f(0.8)) / sig(s f(0)) (NeuS eq. 13), here with s = 10
    s, n, d = 10.0, 40, 0.02
    centres = (torch.arange(n, dtype=torch.float64) + 0.5) * d
    alpha = neus_alpha(0.3 - centres, torch.full((n,), -1.0, dtype=torch.float64), torch.full((n,), d), s)
    weights = composite(-torch.log1p(-alpha), torch.ones_like(alpha))
    want = 1.0 - sigmoid(s * (0.3 - 0.8)) / sigmoid(s * 0.3)
    assert float(weights.sum()) == pytest.approx(want, abs=2e-4)


def test_the_sphere_renders_opaque_at_an_unbiased_depth():
    p = params()
    rays_o = torch.tensor([[[2.0, 0.0, 0.0], [0.0, -2.0, 0.0], [2.0, 0.9, 0.0]]])
    rays_d = torch.tensor([[[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]])
    with torch.no_grad():
        out = render_sdf_rays(p, rays_o, rays_d, SHAPE, num_samples=128)
    op, depth = out["opacity"][0, :, 0], out["depth"][0, :, 0]
    assert float(op[0]) > 0.999 and float(op[1]) > 0.999
    # the NeuS weight is symmetric about the zero crossing, at 2 - 0.5 = 1.5
    assert float(depth[0] / op[0]) == pytest.approx(1.5, abs=5e-3)
    assert float(op[2]) < 0.01  # passes 0.9 from the centre: misses the ball
    # white background where it is empty, the albedo (sigmoid of a near-zero MLP) where it is opaque
    assert torch.allclose(out["rgb"][0, 2], torch.ones(3), atol=0.02)
    # a normal map of the sphere: the outward normal at the hit point
    assert torch.allclose(out["normal"][0, 0] / op[0], torch.tensor([1.0, 0.0, 0.0]), atol=1e-3)
    assert float(out["eikonal"][0]) < 1e-8  # |grad (|x| - r)| = 1


@pytest.mark.parametrize("mode", ["analytic", "finite_difference"])
def test_normals_match_finite_differences_of_the_sphere(mode):
    shape = SdfShape(n_levels=4, log2_hashmap_size=10, finest_resolution=64, normal_mode=mode)
    p = params(shape=shape)
    pts = torch.rand(1, 100, 3, generator=torch.Generator().manual_seed(2)) * 1.6 - 0.8
    pts = pts[:, pts[0].norm(dim=-1) > 0.2]  # central differences of |x| at eps 0.01 are O(eps^2 / |x|^2)
    with torch.no_grad():
        _, _, grad = sdf_field(p, pts, shape)
    x = pts[0].double().numpy()
    h = 1e-6
    fd = np.stack(
        [
            (np.linalg.norm(x + h * e, axis=1) - np.linalg.norm(x - h * e, axis=1)) / (2 * h)
            for e in np.eye(3)
        ],
        axis=1,
    )
    assert np.allclose(sdf_normals(grad)[0].double().numpy(), fd, atol=1e-5 if mode == "analytic" else 1e-3)


def test_gradient_of_a_trained_field_matches_finite_differences():
    shape = SHAPE
    p = {k: v.double() for k, v in params(perturb=0.5, shape=shape).items()}
    pts = (torch.rand(1, 200, 3, generator=torch.Generator().manual_seed(3)) * 1.6 - 0.8).double()
    with torch.no_grad():
        _, _, grad = sdf_field(p, pts, shape)
    h = 1e-7
    eye = torch.eye(3, dtype=torch.float64) * h
    fd = torch.stack(
        [(sdf_value(p, pts + e, shape) - sdf_value(p, pts - e, shape)) / (2 * h) for e in eye], dim=-1
    )
    close = (grad - fd).norm(dim=-1) < 1e-3 * fd.norm(dim=-1).clamp_min(1.0)
    # central differences straddle a hash-grid cell boundary for a few points (the field's kinks)
    assert float(close.double().mean()) > 0.95
    assert float((grad - fd).norm(dim=-1).max()) < 1e3  # and stay finite


def test_eikonal_against_hand_values():
    grad = torch.tensor([[[3.0, 4.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.5, 0.0]]])
    # (5 - 1)^2, 0, (0.5 - 1)^2
    assert float(eikonal_loss(grad)[0]) == pytest.approx((16.0 + 0.0 + 0.25) / 3)
    mask = torch.tensor([[True, False, True]])
    assert float(eikonal_loss(grad, mask)[0]) == pytest.approx((16.0 + 0.25) / 2)


def test_gradients_reach_every_parameter_and_slots_are_independent():
    a, b = params(0, perturb=0.1), params(1, perturb=0.1)
    both = {k: torch.cat([a[k], b[k]]).requires_grad_(True) for k in a}
    g = torch.Generator().manual_seed(4)
    rays_o = torch.randn(2, 30, 3, generator=g) * 0.1 + torch.tensor([0.0, -2.0, 0.3])
    rays_d = torch.nn.functional.normalize(-rays_o + torch.randn(2, 30, 3, generator=g) * 0.2, dim=-1)
    gens = [torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)]
    out = render_sdf_rays(both, rays_o, rays_d, SHAPE, num_samples=16, generator=gens, shading="diffuse")
    loss = out["rgb"].square().sum() + out["eikonal"].sum()
    grads = torch.autograd.grad(loss, list(both.values()))
    for k, gr in zip(both, grads, strict=True):
        assert float(gr[0].abs().sum()) > 0, k
    assert VARIANCE in both
    gens = [torch.Generator().manual_seed(6)]
    alone = render_sdf_rays(
        b, rays_o[1:], rays_d[1:], SHAPE, num_samples=16, generator=gens, shading="diffuse"
    )
    assert torch.allclose(alone["rgb"][0], out["rgb"][1].detach(), atol=1e-6)
    assert torch.allclose(alone["eikonal"][0], out["eikonal"][1].detach(), atol=1e-7)


def test_occupancy_keeps_the_visible_band_and_renders_alike():
    p = params()
    occ = sdf_occupancy(p, SHAPE, 16, 1e-3)
    g = (torch.arange(16) + 0.5) / 16 * 2 - 1
    centres = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), -1)
    f = centres.norm(dim=-1) - 0.5
    # NeuS opacity of a cell-long section facing the surface, by hand: below 1e-3 from f ~ 0.37 out
    s, cell = math.exp(3.0), 2.0 / 16
    hand = torch.tensor(
        [
            [
                (sigmoid(s * (x + cell / 2)) - sigmoid(s * (x - cell / 2)) + 1e-5)
                / (sigmoid(s * (x + cell / 2)) + 1e-5)
                for x in row
            ]
            for row in f.reshape(-1, 16).tolist()
        ]
    ).reshape(16, 16, 16)
    dilated = torch.nn.functional.max_pool3d((hand > 1e-3).float()[None, None], 3, 1, 1)[0, 0] > 0
    assert torch.equal(occ, dilated)
    assert bool(occ[f < 0.3].all()) and not bool(occ[f > 0.6].any())
    cams_o = torch.tensor([[[2.0, 0.1, 0.0], [0.3, -2.0, 0.2], [1.5, 1.5, 0.0]]])
    dirs = torch.nn.functional.normalize(-cams_o + torch.tensor([0.0, 0.0, 0.1]), dim=-1)
    with torch.no_grad():
        full = render_sdf_rays(p, cams_o, dirs, SHAPE, num_samples=64, shading="diffuse")
        sparse = render_sdf_rays(p, cams_o, dirs, SHAPE, num_samples=64, shading="diffuse", occupancy=occ)
    assert float((full["rgb"] - sparse["rgb"]).abs().max()) < 5e-3
    assert float((full["opacity"] - sparse["opacity"]).abs().max()) < 5e-3
    assert in_cells(occ, torch.zeros(1, 1, 3), 1.0).all()
