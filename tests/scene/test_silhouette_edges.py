"""Edge-sampled silhouette gradients (``silhouette_edges``): against finite differences of supersampled
coverage (an independent computation: point-sampled rasterization at 16x the size, box-filtered), for
UV spheres, a DMTet ball, a single triangle under a non-uniform loss, and occluded edges."""

import pytest
import torch
import torch.nn.functional as F

from dreampropeller.scene.cameras import cameras_from_spherical
from dreampropeller.scene.marching_tets import marching_tets
from dreampropeller.scene.mesh_raster import (
    MeshRasterError,
    antialias,
    mesh_edges,
    rasterize,
    render_mesh,
    silhouette_edges,
    sphere_mesh,
    to_clip,
)
from dreampropeller.scene.tetgrid import tet_grid

F64 = torch.float64
CAMS = cameras_from_spherical(15.0, 30.0, 1.5, 50.0)


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def supersampled(clip, faces, size, colour, background, ss=16):
    """The box-filtered image [H, W, C] of a mesh of one ``colour`` rendered at ``ss`` times ``size``."""
    h, w = (size, size) if isinstance(size, int) else size
    rast = rasterize(clip, faces, (h * ss, w * ss))
    mask = (rast[0, ..., 3:] > 0).to(clip.dtype)
    img = mask * colour + (1 - mask) * background
    return F.avg_pool2d(img.permute(2, 0, 1)[None], ss)[0].permute(1, 2, 0)


def edge_image(clip, faces, size, colour, background, **options):
    rast = rasterize(clip, faces, size)
    mask = (rast[..., 3:] > 0).to(clip.dtype)
    img = mask * colour + (1 - mask) * background
    return silhouette_edges(img, rast, clip, faces, **options)[0]


def coverage_gradient(verts, faces, radius, size=32):
    """d(total coverage)/d(radius) of ``verts * radius``: edge-sampled and by central differences of
    the supersampled coverage."""
    r = torch.tensor(radius, dtype=F64, requires_grad=True)
    one = torch.ones(1, dtype=F64)
    (grad,) = torch.autograd.grad(edge_image(to_clip(verts * r, CAMS, size), faces, size, one, 0).sum(), r)
    eps = 0.005
    plus = supersampled(to_clip(verts * (radius + eps), CAMS, size), faces, size, one, 0).sum()
    minus = supersampled(to_clip(verts * (radius - eps), CAMS, size), faces, size, one, 0).sum()
    return float(grad), float(plus - minus) / (2 * eps)


# the finite differences measured once (512 px renders box-filtered to 32 px): docs/dmtet.md's table
@pytest.mark.parametrize("n, fd_measured", [(10, 1998), (20, 2052), (40, 2076)])
def test_uv_sphere_coverage_gradient_matches_finite_differences(n, fd_measured):
    verts, faces = sphere_mesh(n, n, 1.0)
    grad, fd = coverage_gradient(verts.double(), faces, 0.5)
    assert abs(fd / fd_measured - 1) < 0.01
    assert abs(grad / fd - 1) < 0.03  # measured 0.1 %
    # the antialiasing pass gets a fraction of it (its gradient is the problem this op solves)
    r = torch.tensor(0.5, dtype=F64, requires_grad=True)
    _, alpha = render_mesh(
        verts.double() * r, faces, torch.ones(1, 3, dtype=F64).expand(verts.shape[0], 3), CAMS, 32
    )
    (aa,) = torch.autograd.grad(alpha.sum(), r)
    assert float(aa) < 0.5 * fd


def test_dmtet_ball_coverage_gradient_matches_finite_differences():
    grid, tets = tet_grid(32, 0.75)
    grid = grid.double()

    def ball(r):
        return marching_tets(grid, grid.norm(dim=-1) - r, tets)

    r = torch.tensor(0.4, dtype=F64, requires_grad=True)
    verts, faces = ball(r)
    clip = to_clip(verts, CAMS, 32)
    one = torch.ones(1, dtype=F64)
    (grad,) = torch.autograd.grad(edge_image(clip, faces, 32, one, 0).sum(), r)
    eps = 0.005
    cov = [
        supersampled(to_clip(ball(x)[0], CAMS, 32), ball(x)[1], 32, one, 0).sum()
        for x in (0.4 + eps, 0.4 - eps)
    ]
    fd = float(cov[0] - cov[1]) / (2 * eps)
    assert abs(fd / 1525 - 1) < 0.01  # measured once, docs/dmtet.md
    assert abs(float(grad) / fd - 1) < 0.03  # measured 0.3 %
    # the antialiasing pass sees none of these sub-pixel triangles' outline
    rast = rasterize(clip, faces, 32)
    aa = antialias((rast[..., 3:] > 0).to(F64), rast, clip, faces).sum()
    grad_aa = torch.autograd.grad(aa, r)[0] if aa.requires_grad else torch.zeros(())  # no pair at all
    assert abs(float(grad_aa)) < 0.05 * fd


def triangle():
    return torch.tensor([[-0.6, -0.5, 0.0, 1.0], [0.55, -0.3, 0.1, 1.0], [-0.2, 0.65, 0.2, 1.3]], dtype=F64)


def test_triangle_vertex_gradients_match_supersampled_finite_differences():
    size, faces = (20, 24), torch.tensor([[0, 1, 2]])
    colour = torch.tensor([0.9, 0.2, 0.1], dtype=F64)
    background = torch.tensor([0.1, 0.3, 1.0], dtype=F64)
    # a smooth, non-uniform dLoss/dImage (random per-pixel weights would test the finite differences'
    # smearing at the vertices, where the pixels a vertex crosses change within +-eps)
    j, i, ch = torch.meshgrid(*(torch.arange(n, dtype=F64) for n in (*size, 3)), indexing="ij")
    weights = 0.3 + torch.sin(i / 4 + ch) * torch.cos(j / 5 - ch)
    pos = triangle().requires_grad_()
    gen = torch.Generator().manual_seed(1)
    img = edge_image(pos[None], faces, size, colour, background, samples_per_pixel=64, generator=gen)
    (grad,) = torch.autograd.grad((img * weights).sum(), pos)
    fd = torch.zeros_like(grad)
    eps = 0.02
    for k in range(3):
        for c in (0, 1, 3):  # (z moves nothing on screen)
            plus, minus = triangle(), triangle()
            plus[k, c] += eps
            minus[k, c] -= eps
            lp = (supersampled(plus[None], faces, size, colour, background, 32) * weights).sum()
            lm = (supersampled(minus[None], faces, size, colour, background, 32) * weights).sum()
            fd[k, c] = (lp - lm) / (2 * eps)
    assert float(fd.norm()) > 3
    assert float((grad - fd).norm() / fd.norm()) < 0.05  # measured 1.1 %


def test_occluded_edges_give_nothing_and_the_visible_part_is_right():
    # a big near square (z/w = -0.5) in front of a triangle (z/w = 0.5): fully hidden, then half
    square = torch.tensor(
        [[-0.5, -0.5, -0.5, 1], [0.5, -0.5, -0.5, 1], [0.5, 0.5, -0.5, 1], [-0.5, 0.5, -0.5, 1]], dtype=F64
    )
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6]])
    one = torch.ones(1, dtype=F64)
    for shift, hidden in ((0.0, True), (0.45, False)):
        tri = torch.tensor([[-0.3, -0.3, 0.5, 1], [0.3, -0.3, 0.5, 1], [0.0, 0.3, 0.5, 1]], dtype=F64)
        tri[:, 0] += shift
        pos = torch.cat([square, tri]).requires_grad_()
        (grad,) = torch.autograd.grad(edge_image(pos[None], faces, 32, one, 0).sum(), pos)
        assert float(grad[:4].abs().sum()) > 1  # the square's outline moves
        if hidden:
            assert (grad[4:] == 0).all()
        else:  # the visible right part of the triangle: as the supersampled reference says
            eps = 0.02
            fd = torch.zeros(3, 4, dtype=F64)
            for k in range(3):
                for c in (0, 1, 3):
                    plus, minus = pos.detach().clone(), pos.detach().clone()
                    plus[4 + k, c] += eps
                    minus[4 + k, c] -= eps
                    fd[k, c] = (
                        supersampled(plus[None], faces, 32, one, 0).sum()
                        - supersampled(minus[None], faces, 32, one, 0).sum()
                    ) / (2 * eps)
            assert float(fd.norm()) > 5
            assert float((grad[4:] - fd).norm() / fd.norm()) < 0.1


def test_forward_is_unchanged_and_samples_are_deterministic():
    verts, faces = sphere_mesh(12, 16)
    v = verts.double().requires_grad_()
    colours = torch.rand(verts.shape[0], 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    plain = render_mesh(v, faces, colours, CAMS, 24, antialias_edges=False)
    edged = render_mesh(v, faces, colours, CAMS, 24, silhouette="edges")
    assert all(torch.equal(a, b) for a, b in zip(plain, edged))

    def grad(gen):
        rgb, alpha = render_mesh(v, faces, colours, CAMS, 24, silhouette="edges", generator=gen)
        return torch.autograd.grad(rgb.sum() + alpha.sum(), v)[0]

    mid = grad(None)
    assert torch.equal(mid, grad(None))
    seeded = grad(torch.Generator().manual_seed(5))
    assert torch.equal(seeded, grad(torch.Generator().manual_seed(5)))
    assert not torch.equal(seeded, mid)
    assert float((seeded - mid).norm() / mid.norm()) < 0.3  # two stratified estimates of one gradient


def test_mesh_edges_and_bad_inputs():
    cube = torch.tensor(
        [
            [0, 1, 3],
            [0, 3, 2],
            [4, 6, 7],
            [4, 7, 5],
            [0, 4, 5],
            [0, 5, 1],
            [2, 3, 7],
            [2, 7, 6],
            [0, 2, 6],
            [0, 6, 4],
            [1, 5, 7],
            [1, 7, 3],
        ]
    )
    e = mesh_edges(cube)
    assert e.shape == (18, 4) and (e[:, 3] >= 0).all()
    pairs = {tuple(sorted(r[:2])) for r in e.tolist()}
    assert len(pairs) == 18
    for a, b, c, d in e.tolist():  # c and d are the third vertices of the two faces on a-b
        faces = {tuple(sorted(f)) for f in cube.tolist()}
        assert tuple(sorted((a, b, c))) in faces and tuple(sorted((a, b, d))) in faces
    assert (mesh_edges(torch.tensor([[0, 1, 2]]))[:, 3] == -1).all()
    pos = triangle()[None]
    rast = rasterize(pos, torch.tensor([[0, 1, 2]]), 8)
    with pytest.raises(MeshRasterError, match="edges"):
        silhouette_edges(rast, rast, pos, torch.tensor([[0, 1, 2]]), edges=torch.zeros(3, 2))
    with pytest.raises(MeshRasterError, match="silhouette"):
        render_mesh(
            torch.zeros(3, 3), torch.tensor([[0, 1, 2]]), torch.zeros(3, 3), CAMS, 8, silhouette="blur"
        )
