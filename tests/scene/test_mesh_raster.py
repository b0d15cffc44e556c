import math
import time

import pytest
import torch

from dreampropeller.scene.cameras import cameras_from_spherical
from dreampropeller.scene.mesh_raster import (
    MeshRasterError,
    antialias,
    interpolate,
    mesh_render_fn,
    mesh_topology,
    rasterize,
    render_mesh,
    sphere_mesh,
    to_clip,
)

F64 = torch.float64


# ------------------------------------------------------------------------------------- reference (slow)


def brute_force_rasterize(pos, faces, h, w):
    """Per pixel, per triangle, in plain Python: ids (-1 = none), perspective barycentrics, z/w."""
    pos = pos.tolist()
    faces = faces.tolist()
    ids = [[-1] * w for _ in range(h)]
    bary = [[(0.0, 0.0)] * w for _ in range(h)]
    depth = [[0.0] * w for _ in range(h)]
    for j in range(h):
        for i in range(w):
            px, py = (2 * i + 1) / w - 1, (2 * j + 1) / h - 1
            best = math.inf
            for fi, face in enumerate(faces):
                vs = [pos[k] for k in face]
                if any(v[3] <= 0 for v in vs):
                    continue
                (x0, y0), (x1, y1), (x2, y2) = [(v[0] / v[3], v[1] / v[3]) for v in vs]
                e0 = (x1 - px) * (y2 - py) - (x2 - px) * (y1 - py)
                e1 = (x2 - px) * (y0 - py) - (x0 - px) * (y2 - py)
                e2 = (x0 - px) * (y1 - py) - (x1 - px) * (y0 - py)
                area = e0 + e1 + e2
                if area == 0:
                    continue
                s = [e0 / area, e1 / area, e2 / area]
                if min(s) < 0:
                    continue
                z = sum(sk * v[2] / v[3] for sk, v in zip(s, vs))
                if not -1 <= z <= 1 or z >= best:
                    continue
                best = z
                persp = [sk / v[3] for sk, v in zip(s, vs)]
                total = sum(persp)
                ids[j][i] = fi
                bary[j][i] = (persp[0] / total, persp[1] / total)
                depth[j][i] = z
    return torch.tensor(ids), torch.tensor(bary, dtype=F64), torch.tensor(depth, dtype=F64)


def random_clip_mesh(n_faces=7, seed=0):
    """Separate random triangles in clip space: overlapping, at different and crossing depths."""
    g = torch.Generator().manual_seed(seed)
    nv = 3 * n_faces
    w = 1 + 2 * torch.rand(nv, generator=g, dtype=F64)
    xy = (torch.rand(nv, 2, generator=g, dtype=F64) * 2.4 - 1.2) * w[:, None]
    z = (torch.rand(nv, generator=g, dtype=F64) * 1.8 - 0.9) * w
    pos = torch.cat([xy, z[:, None], w[:, None]], -1)
    return pos, torch.arange(nv).reshape(n_faces, 3)


def cube_mesh(half=0.5, dtype=F64):
    v = torch.tensor(
        [[x, y, z] for x in (-half, half) for y in (-half, half) for z in (-half, half)], dtype=dtype
    )
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = [t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))]
    return v, torch.tensor(faces)


# ------------------------------------------------------------------------------------------- rasterize


@pytest.mark.parametrize("seed", [0, 1])
def test_rasterize_matches_brute_force_loop(seed):
    h, w = 12, 16
    pos, faces = random_clip_mesh(seed=seed)
    rast = rasterize(pos, faces, (h, w))
    assert rast.shape == (1, h, w, 4)
    ids, bary, depth = brute_force_rasterize(pos, faces, h, w)
    assert (ids >= 0).sum() > 40  # the scene covers a good part of the image ...
    got = rast[0, ..., 3].long() - 1
    assert torch.equal(got, ids)
    covered = ids >= 0
    torch.testing.assert_close(rast[0, ..., :2][covered], bary[covered], atol=1e-5, rtol=0)
    torch.testing.assert_close(rast[0, ..., 2][covered], depth[covered], atol=1e-5, rtol=0)
    assert (rast[0][~covered] == 0).all()


def test_overlapping_triangles_really_overlap():
    # ... and the depth test decided something: some pixels lie inside several triangles
    h, w = 12, 16
    pos, faces = random_clip_mesh(seed=0)
    hits = 0
    for f in range(faces.shape[0]):
        hits = hits + (rasterize(pos, faces[f : f + 1], (h, w))[0, ..., 3] > 0).long()
    assert (hits >= 2).sum() > 10


def test_chunks_and_batches_give_the_same_image():
    pos, faces = random_clip_mesh(seed=1)
    whole = rasterize(pos, faces, (12, 16))
    chunked = rasterize(pos, faces, (12, 16), max_pairs=7)
    torch.testing.assert_close(chunked, whole)
    other = pos.flip(0)
    both = rasterize(torch.stack([pos, other]), faces, (12, 16))
    torch.testing.assert_close(both[0], whole[0])
    torch.testing.assert_close(both[1], rasterize(other, faces, (12, 16))[0])


def test_depth_test_nearer_quad_wins_whatever_the_order():
    cams = cameras_from_spherical(0.0, 0.0, 3.0, 40.0)  # on +x looking at the origin
    near_quad = [[0.3, -0.3, -0.3], [0.3, 0.3, -0.3], [0.3, 0.3, 0.3], [0.3, -0.3, 0.3]]
    far_quad = [[-0.3, -0.6, -0.6], [-0.3, 0.6, -0.6], [-0.3, 0.6, 0.6], [-0.3, -0.6, 0.6]]
    quad = torch.tensor([[0, 1, 2], [0, 2, 3]])
    for first, second in ((near_quad, far_quad), (far_quad, near_quad)):
        verts = torch.tensor(first + second, dtype=F64)
        faces = torch.cat([quad, quad + 4])
        colours = torch.tensor([[1.0, 0, 0]] * 4 + [[0, 0, 1.0]] * 4, dtype=F64)
        colours = colours if first is near_quad else colours.flip(0)  # red is always the near quad
        rgb, alpha = render_mesh(verts, faces, colours, cams, 32, antialias_edges=False)
        assert torch.allclose(rgb[0, 16, 16], torch.tensor([1.0, 0, 0], dtype=F64))  # centre: near quad
        assert torch.allclose(rgb[0, 16, 10], torch.tensor([0, 0, 1.0], dtype=F64))  # only the far quad
        assert alpha[0, 16, 10, 0] == 1 and alpha[0, 0, 0, 0] == 0


# ----------------------------------------------------------------------------------- cameras, interpolate


def test_to_clip_puts_camera_ray_points_on_their_pixel_centres():
    h, w = 6, 10
    cams = cameras_from_spherical(torch.tensor([20.0, -10.0]), torch.tensor([30.0, 200.0]), 2.0, 50.0)
    cams.c2w = cams.c2w.double()
    origins, dirs = cams.rays(h, w)
    pts = origins + 1.7 * dirs  # [B, H, W, 3]
    for b in range(2):
        clip = to_clip(pts[b].reshape(-1, 3), cams.index([b]), (h, w))[0]
        ndc = clip[:, :2] / clip[:, 3:]
        j, i = torch.meshgrid(torch.arange(h, dtype=F64), torch.arange(w, dtype=F64), indexing="ij")
        want = torch.stack([(2 * i + 1) / w - 1, (2 * j + 1) / h - 1], -1).reshape(-1, 2)
        torch.testing.assert_close(ndc, want, atol=1e-9, rtol=0)
        depth = ((pts[b] - origins[b]) * -cams.c2w[b, :3, 2]).sum(-1).reshape(-1)  # along the view axis
        # (the float32-built camera frame is orthonormal to ~1e-7 only: inverse vs transpose)
        torch.testing.assert_close(clip[:, 3], depth, atol=1e-6, rtol=0)


def test_interpolated_positions_are_the_surface_points_under_the_pixel_rays():
    h, w = 24, 20
    cams = cameras_from_spherical(10.0, 25.0, 2.0, 50.0)
    cams.c2w = cams.c2w.double()
    # one big slanted triangle (not parallel to the image plane, so perspective correction matters)
    tri_v = torch.tensor([[0.4, -0.6, -0.5], [-0.5, 0.7, -0.3], [0.1, 0.0, 0.6]], dtype=F64)
    faces = torch.tensor([[0, 1, 2]])
    rast = rasterize(to_clip(tri_v, cams, (h, w)), faces, (h, w))
    got = interpolate(tri_v, rast, faces)[0]
    # the ray-plane intersection, by hand
    o, d = (t[0].reshape(-1, 3) for t in cams.rays(h, w))
    n = torch.linalg.cross(tri_v[1] - tri_v[0], tri_v[2] - tri_v[0])
    t = ((tri_v[0] - o) @ n) / (d @ n)
    hit = o + t[:, None] * d
    # inside the triangle (3D barycentrics of the hit point)
    m = torch.stack([tri_v[0] - tri_v[2], tri_v[1] - tri_v[2]], -1)
    ab = torch.linalg.lstsq(m.expand(hit.shape[0], 3, 2), (hit - tri_v[2])[..., None]).solution[..., 0]
    inside = (ab >= 0).all(-1) & (ab.sum(-1) <= 1)
    covered = rast[0, ..., 3].reshape(-1) > 0
    assert inside.sum() > 100
    assert torch.equal(covered, inside)
    torch.testing.assert_close(got.reshape(-1, 3)[covered], hit[covered], atol=1e-9, rtol=0)
    assert (got.reshape(-1, 3)[~covered] == 0).all()


def test_interpolate_batched_attributes():
    pos, faces = random_clip_mesh(seed=2)
    rast = rasterize(torch.stack([pos, pos]), faces, (8, 8))
    attr = torch.randn(2, pos.shape[0], 3, dtype=F64)
    both = interpolate(attr, rast, faces)
    torch.testing.assert_close(both[1], interpolate(attr[1], rast[1:], faces)[0])


def test_barycentric_gradients_match_finite_differences():
    pos, faces = random_clip_mesh(n_faces=4, seed=3)
    attr = torch.randn(pos.shape[0], 2, dtype=F64)

    def image(p, a):
        rast = rasterize(p, faces, (8, 10))
        return torch.cat([rast[..., :3], interpolate(a, rast, faces)], -1)

    assert torch.autograd.gradcheck(image, (pos.clone().requires_grad_(), attr.clone().requires_grad_()))


# ------------------------------------------------------------------------------------------ antialias


def test_topology_finds_the_neighbour_across_each_edge():
    faces = torch.tensor([[0, 1, 2], [2, 1, 3]])  # share edge 1-2
    opp = mesh_topology(faces)
    assert opp.tolist() == [[3, -1, -1], [-1, -1, 0]]
    _, cube = cube_mesh()
    assert (mesh_topology(cube) >= 0).all()  # closed
    assert (mesh_topology(torch.tensor([[0, 1, 2]])) == -1).all()


def one_triangle(x0=0.55):
    # clip space, w = 1: a triangle in the middle of a small image
    return torch.tensor([[-0.6, -0.5, 0.0, 1.0], [x0, -0.3, 0.1, 1.0], [-0.2, 0.65, 0.2, 1.0]], dtype=F64)


def coverage(pos, faces, size=(12, 14), aa=True):
    rast = rasterize(pos, faces, size)
    mask = interpolate(torch.ones(pos.shape[-2], 1, dtype=F64), rast, faces)  # 1 on the triangle
    return antialias(mask, rast, pos, faces) if aa else mask


def test_antialias_gives_silhouettes_gradients_that_match_finite_differences():
    faces = torch.tensor([[0, 1, 2]])
    pos = one_triangle().requires_grad_()
    loss = coverage(pos, faces).sum()
    (grad,) = torch.autograd.grad(loss, pos)
    assert grad[1, 0] > 0  # pushing the right-hand vertex right grows the covered area
    assert grad[0, 0] < 0
    eps = 1e-6
    for k, c in ((1, 0), (0, 0), (2, 1), (0, 1)):
        plus, minus = pos.detach().clone(), pos.detach().clone()
        plus[k, c] += eps
        minus[k, c] -= eps
        fd = (coverage(plus, faces).sum() - coverage(minus, faces).sum()) / (2 * eps)
        assert abs(float(fd) - float(grad[k, c])) < 1e-6 * max(1.0, abs(float(fd)))
    assert torch.autograd.gradcheck(lambda p: coverage(p, faces), (pos,))


def test_without_antialias_coverage_has_no_position_gradient():
    faces = torch.tensor([[0, 1, 2]])
    pos = one_triangle().requires_grad_()
    (grad,) = torch.autograd.grad(coverage(pos, faces, aa=False).sum(), pos)
    assert (grad == 0).all()


def test_antialiased_coverage_follows_the_true_area():
    # the triangle's exact area in pixels (shoelace formula) and its gradient in the clip positions
    size = (40, 48)
    faces = torch.tensor([[0, 1, 2]])
    errs_aa, errs_point = [], []
    for x0 in torch.linspace(0.40, 0.60, 7).tolist():
        pos = one_triangle(x0).requires_grad_()
        ndc = pos[:, :2] / pos[:, 3:]
        scr = torch.stack([(ndc[:, 0] + 1) * size[1] / 2, (ndc[:, 1] + 1) * size[0] / 2], -1)
        e1, e2 = scr[1] - scr[0], scr[2] - scr[0]
        area = 0.5 * (e1[0] * e2[1] - e1[1] * e2[0]).abs()
        (darea,) = torch.autograd.grad(area, pos)
        aa = coverage(pos, faces, size).sum()
        (grad,) = torch.autograd.grad(aa, pos)
        errs_aa.append(abs(float(aa.detach() - area.detach())))
        errs_point.append(abs(float(coverage(pos.detach(), faces, size, aa=False).sum() - area.detach())))
        # the crossings move like the edges: about the true derivative (measured within 4 %)
        assert float((grad - darea).norm() / darea.norm()) < 0.08
    assert max(errs_aa) < 0.2  # measured 0.06 px; point sampling is off by up to 4 px here
    assert sum(errs_aa) < 0.1 * sum(errs_point)


def test_antialias_blends_silhouettes_but_not_interior_edges():
    # a flat quad of two triangles with different colours: the diagonal is no silhouette
    pos = torch.tensor(
        [[-0.7, -0.7, 0, 1], [0.7, -0.6, 0, 1], [0.6, 0.7, 0, 1], [-0.6, 0.6, 0, 1]], dtype=F64
    )
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    rast = rasterize(pos, faces, (16, 16))
    ids = rast[..., 3:]
    color = torch.cat([(ids == 1).double(), (ids == 2).double()], -1)  # red / green per triangle
    out = antialias(color, rast, pos, faces)
    changed = (out != color).any(-1)[0]
    assert changed.any()
    inside = (rast[0, ..., 3] > 0).double()
    # every changed pixel touches the background (4-neighbourhood): the outline, never the diagonal
    pad = torch.nn.functional.pad(inside, (1, 1, 1, 1), value=0)
    near_bg = (pad[:-2, 1:-1] == 0) | (pad[2:, 1:-1] == 0) | (pad[1:-1, :-2] == 0) | (pad[1:-1, 2:] == 0)
    near_bg |= inside == 0
    assert not (changed & ~near_bg).any()
    # with every edge taken for a boundary, the diagonal is blended too
    boundary = torch.full((2, 3), -1)
    assert (antialias(color, rast, pos, faces, topology=boundary) != out).any()
    # fold the second triangle over the first (vertex 3 crosses the diagonal, in front): now the
    # diagonal is a silhouette, blended as if it were a boundary
    folded = pos.clone()
    folded[3] = torch.tensor([0.5, -0.2, -0.5, 1], dtype=F64)
    rast = rasterize(folded, faces, (16, 16))
    ids = rast[..., 3:]
    color = torch.cat([(ids == 1).double(), (ids == 2).double()], -1)
    out = antialias(color, rast, folded, faces)
    assert (out != color).any()
    torch.testing.assert_close(out, antialias(color, rast, folded, faces, topology=boundary))


# ------------------------------------------------------------------------------------------ render_mesh


@pytest.mark.parametrize("aa", [False, True])
def test_cube_from_the_front_covers_its_projected_square(aa):
    size, dist, fovy = 64, 3.0, 40.0
    verts, faces = cube_mesh()
    cams = cameras_from_spherical(0.0, 0.0, dist, fovy)
    rgb, alpha = render_mesh(verts, faces, verts + 0.5, cams, size, background=1.0, antialias_edges=aa)
    assert rgb.shape == (1, size, size, 3) and alpha.shape == (1, size, size, 1)
    focal = 0.5 * size / math.tan(math.radians(fovy) / 2)
    side = 2 * focal * 0.5 / (dist - 0.5)  # the front face (x = 0.5) is the silhouette, 35.2 px
    if aa:  # the antialiased coverage is the square's area, within a pixel row
        assert abs(float(alpha.sum()) - side**2) < side  # measured 0.14 px of 1237
    else:  # point sampling: the pixel centres i + 1/2 inside [size/2 - side/2, size/2 + side/2], squared
        n = math.floor(size / 2 + side / 2 - 0.5) - math.ceil(size / 2 - side / 2 - 0.5) + 1
        assert float(alpha.sum()) == n * n
    empty = alpha[0, ..., 0] == 0
    assert (rgb[0][empty] == 1).all()  # white background


def test_render_mesh_takes_a_colour_function_and_gives_vertex_gradients():
    verts, faces = cube_mesh()
    cams = cameras_from_spherical(torch.tensor([20.0, 10.0]), torch.tensor([30.0, -100.0]), 2.5, 45.0)
    rgb_v, alpha_v = render_mesh(verts, faces, verts + 0.5, cams, (20, 24))
    rgb_f, alpha_f = render_mesh(verts, faces, lambda p: p + 0.5, cams, (20, 24))
    torch.testing.assert_close(rgb_f, rgb_v)
    torch.testing.assert_close(alpha_f, alpha_v)
    v = verts.clone().requires_grad_()
    _, alpha = render_mesh(v, faces, verts + 0.5, cams, (20, 24))
    (grad,) = torch.autograd.grad(alpha.sum(), v)
    # growing the cube grows its silhouette: the gradient points outwards on the whole
    assert float((grad * verts).sum()) > 0


def test_mesh_render_fn_follows_the_render_contract():
    verts, faces = sphere_mesh(8, 12)
    fn = mesh_render_fn(verts.requires_grad_(), faces, torch.full((verts.shape[0], 3), 0.2), (16, 20))
    rgb, alpha = fn(cameras_from_spherical(15.0, torch.tensor([0.0, 90.0, 180.0]), 2.0, 50.0))
    assert rgb.shape == (3, 16, 20, 3) and alpha.shape == (3, 16, 20, 1)
    assert not rgb.requires_grad and not alpha.requires_grad
    assert float(rgb.min()) >= 0 and float(rgb.max()) <= 1
    assert float(alpha.min()) >= 0 and float(alpha.max()) <= 1


def test_twenty_thousand_faces_at_128_px_is_fast_on_one_core():
    verts, faces = sphere_mesh(100, 100)
    assert faces.shape[0] == 19800
    cams = cameras_from_spherical(15.0, 30.0, 1.5, 50.0)
    v = verts.clone().requires_grad_()
    t0 = time.perf_counter()
    rgb, alpha = render_mesh(v, faces, verts + 0.5, cams, 128)
    (rgb.sum() + alpha.sum()).backward()
    elapsed = time.perf_counter() - t0
    assert alpha.sum() > 5000
    assert elapsed < 5.0  # about 0.05 s on one idle core; the bound only catches a pixels x faces blow-up


# --------------------------------------------------------------------------------------------- inputs


def test_bad_inputs_are_refused_with_a_reason():
    pos, faces = random_clip_mesh(n_faces=2)
    with pytest.raises(MeshRasterError, match="clip positions"):
        rasterize(pos[:, :3], faces, 8)
    with pytest.raises(MeshRasterError, match="face indices"):
        rasterize(pos, faces + 100, 8)
    with pytest.raises(MeshRasterError, match="integer"):
        rasterize(pos, faces.double(), 8)
    with pytest.raises(MeshRasterError, match="resolution"):
        rasterize(pos, faces, (0, 8))
    with pytest.raises(MeshRasterError, match="backend"):
        rasterize(pos, faces, 8, backend="opengl")
    with pytest.raises(MeshRasterError, match="nvdiffrast"):
        rasterize(pos, faces, 8, backend="nvdiffrast")  # CPU tensors
    torch.testing.assert_close(rasterize(pos, faces, 8, backend="auto"), rasterize(pos, faces, 8))


def test_triangles_behind_the_camera_are_dropped():
    pos, faces = random_clip_mesh(n_faces=3, seed=4)
    behind = pos.clone()
    behind[3:6, 3] *= -1  # the second triangle goes behind the camera plane
    rast = rasterize(behind, faces, (12, 16))
    assert not (rast[..., 3] == 2).any()


def test_per_camera_vertices_render_like_separate_calls():
    verts, faces = cube_mesh()
    cams = cameras_from_spherical(torch.tensor([20.0, 10.0]), torch.tensor([30.0, -100.0]), 2.5, 45.0)
    moved = torch.stack([verts, verts * 0.8 + 0.1])
    rgb, alpha = render_mesh(moved, faces, lambda p: p + 0.5, cams, (20, 24))
    for b in range(2):
        rgb_b, alpha_b = render_mesh(moved[b], faces, lambda p: p + 0.5, cams.index([b]), (20, 24))
        torch.testing.assert_close(rgb[b], rgb_b[0])
        torch.testing.assert_close(alpha[b], alpha_b[0])
