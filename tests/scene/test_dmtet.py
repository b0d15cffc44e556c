"""DMTet's geometry, texture and renders: bounded deformation, a ball that renders as a disc, gradients
that reach the SDF, deformation and texture, and the mesh regularizers."""

import math

import pytest
import torch

from dreampropeller.scene.cameras import cameras_from_spherical
from dreampropeller.scene.dmtet import (
    DEFORMATION,
    SDF,
    DMTet,
    DMTetShape,
    laplacian_smoothness,
    normal_consistency,
    sdf_from_density,
    sphere_sdf,
)
from dreampropeller.scene.hashgrid import SceneError
from dreampropeller.scene.marching_tets import signed_volume
from dreampropeller.scene.shading import ShadingConfig

SHAPE = DMTetShape(resolution=12, radius=0.75, n_levels=2, log2_hashmap_size=10, finest_resolution=32)


@pytest.fixture(scope="module")
def dmtet():
    torch.set_num_threads(1)
    return DMTet(SHAPE)


def ball(dmtet, radius=0.4, seed=0):
    return dmtet.init_params(sphere_sdf(dmtet.grid_vertices, radius), torch.Generator().manual_seed(seed))


def test_params_and_bounded_deformation(dmtet):
    p = ball(dmtet)
    assert tuple(p) == dmtet.keys
    assert p[SDF].shape == (13**3,) and p[DEFORMATION].shape == (13**3, 3)
    p[DEFORMATION] = torch.full_like(p[DEFORMATION], 1e6)
    moved = dmtet.vertices(p) - dmtet.grid_vertices
    assert float(moved.abs().max()) <= SHAPE.cell / 2 + 1e-6
    with pytest.raises(SceneError):
        dmtet.init_params(torch.zeros(5), torch.Generator())
    with pytest.raises(SceneError):
        DMTetShape(resolution=1)


def test_ball_mesh_and_render(dmtet):
    p = ball(dmtet)
    verts, faces = dmtet.mesh(p)
    assert abs(float(signed_volume(verts, faces)) / (4 / 3 * math.pi * 0.4**3) - 1) < 0.05
    cams = cameras_from_spherical(torch.tensor([15.0, 40.0]), torch.tensor([0.0, 90.0]), 1.8, 50.0)
    out = dmtet.render(
        p, cams, 24, 24, torch.tensor([0, 2]), cams.position, torch.ones(2, 3), ShadingConfig()
    )
    assert out["rgb"].shape == (2, 24, 24, 3) and out["alpha"].shape == (2, 24, 24, 1)
    # the ball's projected disc: radius atan(0.4 / sqrt(1.8^2 - 0.4^2)) of a 25 degree half-fov
    disc = math.pi * (12 * math.tan(math.asin(0.4 / 1.8)) / math.tan(math.radians(25))) ** 2
    assert abs(float(out["alpha"][0].sum()) / disc - 1) < 0.15
    assert float(out["rgb"][:, 0, 0].min()) == 1.0  # the white background in the corner
    inside = out["alpha"][..., 0] > 0.99
    # textureless (code 2) is white lit: never brighter than 1, darker than the albedo-only grey somewhere
    assert float(out["rgb"][1][inside[1]].max()) <= 1.0 + 1e-6
    normals = out["normal"][inside]
    assert torch.allclose(normals.norm(dim=-1), torch.ones(len(normals)), atol=1e-4)


def test_render_gradients_reach_every_parameter(dmtet):
    p = {k: v.requires_grad_(True) for k, v in ball(dmtet).items()}
    cams = cameras_from_spherical(torch.tensor([20.0]), torch.tensor([30.0]), 1.8, 50.0)
    g = torch.Generator().manual_seed(1)
    target = torch.rand(1, 16, 16, 3, generator=g)
    out = dmtet.render(p, cams, 16, 16, torch.tensor([1]), cams.position, torch.ones(1, 3), ShadingConfig())
    (out["rgb"] - target).square().sum().backward()
    for k, v in p.items():
        assert v.grad is not None and float(v.grad.abs().sum()) > 0, k


def test_empty_mesh_renders_the_background(dmtet):
    p = {k: v.requires_grad_(True) for k, v in ball(dmtet, radius=0.01).items()}
    p[SDF] = torch.ones_like(p[SDF]).requires_grad_(True)
    cams = cameras_from_spherical(torch.tensor([20.0]), torch.tensor([30.0]), 1.8, 50.0)
    bg = torch.tensor([[0.2, 0.3, 0.4]])
    out = dmtet.render(p, cams, 8, 8, torch.tensor([0]), cams.position, bg, ShadingConfig())
    assert torch.allclose(out["rgb"], bg.expand(8, 8, 3)[None]) and float(out["alpha"].detach().sum()) == 0
    out["rgb"].sum().backward()
    assert float(p[SDF].grad.abs().sum()) == 0


def test_sdf_from_density_has_the_level_set_and_sign():
    density = torch.tensor([0.0, 5.0, 10.0, 20.0, 1000.0])
    sdf = sdf_from_density(density, 10.0, 0.1)
    assert float(sdf[2]) == 0 and float(sdf[1]) > 0 and float(sdf[3]) < 0
    assert float(sdf.min()) == pytest.approx(-0.4) and float(sdf[0]) == pytest.approx(0.1)
    with pytest.raises(SceneError):
        sdf_from_density(density, 0.0, 0.1)


def test_regularizers_are_zero_on_flat_meshes_and_positive_on_bumps():
    g = torch.linspace(0, 1, 5)
    xy = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    verts = torch.cat([xy, torch.zeros(25, 1)], 1)
    idx = torch.arange(25).reshape(5, 5)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    faces = torch.cat([torch.stack([a, b, c], -1).reshape(-1, 3), torch.stack([a, c, d], -1).reshape(-1, 3)])
    assert float(normal_consistency(verts, faces)) < 1e-10
    interior = (xy > 0).all(1) & (xy < 1).all(1)
    assert float(laplacian_smoothness(verts, faces[:0])) == 0
    bumped = verts.clone()
    bumped[12, 2] = 0.3  # the centre vertex (interior)
    assert interior[12]
    assert float(normal_consistency(bumped, faces)) > 0.01
    assert float(laplacian_smoothness(bumped, faces)) > float(laplacian_smoothness(verts, faces))


def test_flat_shading_uses_each_faces_own_normal(dmtet):
    p = ball(dmtet)
    q = dmtet.grid_vertices.abs() - 0.3  # a box: its faces are planes, normals along the axes
    p[SDF] = q.clamp_min(0).norm(dim=-1) + q.amax(-1).clamp_max(0) + 1e-3
    cams = cameras_from_spherical(torch.tensor([0.0]), torch.tensor([0.0]), 1.8, 30.0)
    args = (cams, 24, 24, torch.tensor([1]), cams.position, torch.ones(1, 3), ShadingConfig())
    flat = dmtet.render(p, *args, normals="face")
    centre = flat["normal"][0, 8:16, 8:16].reshape(-1, 3)  # the front face, seen head on (+x)
    assert torch.allclose(centre, torch.tensor([1.0, 0.0, 0.0]).expand_as(centre), atol=1e-5)
    with pytest.raises(SceneError):
        dmtet.render(p, *args, normals="phong")


def test_edge_sampled_silhouette_moves_the_ball_like_finite_differences(dmtet):
    # a uniform shift of the SDF grows the ball: d(coverage)/d(shift) against finite differences of
    # coverage rendered at 8x the size (box-filtered); the edge-sampled forward is the plain raster
    p = ball(dmtet)
    cams = cameras_from_spherical(torch.tensor([20.0, 5.0]), torch.tensor([30.0, 150.0]), 1.8, 50.0)
    codes, bg = torch.tensor([0, 1]), torch.ones(2, 3)

    def coverage(shift, size, **options):
        q = dict(p, **{SDF: p[SDF] - shift})
        out = dmtet.render(q, cams, size, size, codes, cams.position, bg, ShadingConfig(), **options)
        return out["alpha"].sum() * (16 / size) ** 2

    shift = torch.zeros((), requires_grad=True)
    edges = coverage(shift, 16, silhouette="edges", generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad(edges, shift)
    eps = 0.01
    fd = (coverage(torch.tensor(eps), 128) - coverage(torch.tensor(-eps), 128)) / (2 * eps)
    assert float(fd) > 100
    assert abs(float(grad) / float(fd) - 1) < 0.06  # measured 2.5 % (516 against 503)
    alpha = dmtet.render(p, cams, 16, 16, codes, cams.position, bg, ShadingConfig(), silhouette="edges")[
        "alpha"
    ]
    assert set(alpha.unique().tolist()) <= {0.0, 1.0}  # not blended
    with pytest.raises(SceneError):
        dmtet.render(p, cams, 16, 16, codes, cams.position, bg, ShadingConfig(), silhouette="blur")
