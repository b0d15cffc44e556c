"""Differentiable mesh rasterization in pure PyTorch, after nvdiffrast's rasterize / interpolate /
antialias contract (Laine et al. 2020, "Modular Primitives for High-Performance Differentiable
Rendering"). Runs on any device; nvdiffrast (CUDA, needs a build) is used behind the same functions
when ``backend`` asks for it and it is importable.

Conventions (nvdiffrast's):

* Input positions are clip space ``[B, V, 4]`` (or ``[V, 4]``, then B = 1). After division by ``w``,
  pixel ``(row j, column i)`` of an ``H x W`` image has its centre at NDC ``x = (2 i + 1) / W - 1``,
  ``y = (2 j + 1) / H - 1``: row 0 is NDC ``y = -1``. :func:`to_clip` makes NDC ``y`` grow downwards,
  so images of our cameras come out with row 0 at the top, like every other renderer here.
* ``rasterize`` gives ``rast [B, H, W, 4] = (u, v, z/w, triangle_id + 1)``, all zero where no triangle
  covers the pixel centre. ``(u, v)`` are perspective-correct barycentrics: the surface point is
  ``u * p0 + v * p1 + (1 - u - v) * p2`` of the triangle's vertices. The nearest ``z/w`` wins (ties go
  to the lower triangle id), and only ``-1 <= z/w <= 1`` is drawn (near and far planes, per pixel).
* ``interpolate(attr, rast, faces)`` blends vertex attributes with those barycentrics.
* ``antialias(color, rast, clip_pos, faces)`` blends pixel pairs across silhouette edges so that the
  image changes continuously with vertex positions (one of the two places where visibility gets
  gradients); ``silhouette_edges(color, rast, clip_pos, faces)`` is the other: it returns ``color``
  as it is and gives the outline its gradient by edge sampling (below).

How the torch path works. Rasterization is a search followed by a differentiable recomputation,
as nvdiffrast's gradient does: (1) without gradients, every triangle is binned into the pixel centres
of its screen bounding box (work proportional to the covered area, not pixels x faces); the
(triangle, pixel) pairs go in chunks of at most ``max_pairs`` through edge functions and a z-buffer
kept with ``scatter_reduce``; (2) for the winning triangle of each covered pixel the barycentrics are
recomputed from the clip-space positions (homogeneous 2D: ``sum_k l_k (x_k - px w_k) = 0``,
``sum_k l_k (y_k - py w_k) = 0``, ``sum_k l_k = 1``), which is differentiable in the positions.
Triangles with a vertex at ``w <= 0`` (behind the camera plane) are dropped instead of clipped, a
simplification that is exact for objects in front of the camera, as ours are. Pixels within a relative
``64 eps`` of a shared edge count as inside both triangles (no cracks along edges through pixel centres).

Antialiasing (the approximation, nvdiffrast's analytic one). For every horizontally or vertically
adjacent pixel pair whose triangle ids differ, take the triangle that is nearer (by the two pixels'
``z/w``; a triangle beats the background) and the pixel P that shows it, Q the other. Follow the line
from P's centre towards Q's centre: the edge through which it leaves the triangle crosses at ``t``
pixels from P. If that edge is a *silhouette* (it has one face only, or the face across it folds to
the same side in screen space) and it is more perpendicular than parallel to the pair (horizontal
pairs handle steep edges, vertical pairs flat ones, so no edge is counted twice), the pair is
treated as a 1-D box filter across the edge: the triangle covers ``[0, t]`` of the segment, so
``P += (1/2 - t) (c_Q - c_P)`` when ``t < 1/2`` and ``Q += (t - 1/2) (c_P - c_Q)`` otherwise. The
derivative of the image sum with respect to the crossing is ``c_P - c_Q`` per pair, the coverage
change of a moving edge. What it leaves out: coverage within a pixel along the edge (a single
crossing per pair), edges of triangles too small to win any pixel, and a blend that uses the
point-sampled colours on either side, and edges where triangles cut through each other.

Edge sampling (:func:`silhouette_edges`; Li et al. 2018, "Differentiable Monte Carlo Ray Tracing
through Edge Sampling"). The derivative of a box-filtered pixel with respect to a moving outline is an
integral along the outline: ``d pixel = integral over the edge inside the pixel of (c_in - c_out) *
(normal velocity)``. Every silhouette edge (a boundary edge, or one whose two faces lie on the same side
of it on screen) is sampled about twice per pixel of its length; a sample's weight is its share of the
edge's length, its colours are read from the rendered image a pixel inside and a pixel outside, and
its visibility is tested exactly against the faces binned into its pixel (a face nearer than the
sample just outside it hides it). The gradient reaches the edge's two endpoints, linearly in the
sample's position along it, and from there the clip positions. Unlike antialiasing it sees every edge
however small its triangles, which is what marching tetrahedra at the render's own resolution makes.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .cameras import Cameras, cameras_from_spherical
from .gaussian_raster import camera_matrices
from .views import RenderFn, broadcast_background

BACKENDS = ("torch", "auto", "nvdiffrast")
#: (triangle, pixel) pairs tested at once by the torch rasterizer (bounds temporary memory).
DEFAULT_MAX_PAIRS = 1 << 19
#: Default clip planes of :func:`to_clip` (world units; our cameras sit 1.5 to 2 from the origin).
DEFAULT_NEAR = 0.05
DEFAULT_FAR = 50.0
#: How far (pixels) an antialiasing crossing may lie outside its pixel pair and still count.
CROSSING_TOLERANCE = 1.0 / 16.0
#: Edge sampling (:func:`silhouette_edges`): samples per pixel of silhouette length, how far (pixels)
#: along the edge's normal the colours on either side are read, and the relative depth margin of the
#: visibility test.
DEFAULT_EDGE_SAMPLES = 2.0
EDGE_READ_OFFSET = 1.0
EDGE_DEPTH_TOLERANCE = 1e-3
#: How far (pixels) past a silhouette sample the exact visibility test looks.
EDGE_PROBE = 1e-3
SILHOUETTE_MODES = ("antialias", "edges", "none")

Colours = Tensor | Callable[[Tensor], Tensor]


class MeshRasterError(ValueError):
    """Bad input to the mesh rasterizer."""


# ------------------------------------------------------------------------------------------------ inputs


def _resolution(resolution: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(resolution, int):
        resolution = (resolution, resolution)
    h, w = (int(r) for r in resolution)
    if h < 1 or w < 1:
        raise MeshRasterError(f"resolution must be positive, got {h}x{w}")
    return h, w


def _positions(clip_pos: Tensor) -> Tensor:
    if clip_pos.dim() == 2:
        clip_pos = clip_pos[None]
    if clip_pos.dim() != 3 or clip_pos.shape[-1] != 4:
        raise MeshRasterError(f"clip positions must be [B, V, 4] or [V, 4], got {tuple(clip_pos.shape)}")
    if not clip_pos.is_floating_point():
        raise MeshRasterError("clip positions must be floating point")
    return clip_pos


def _faces(faces: Tensor, num_vertices: int) -> Tensor:
    if faces.dim() != 2 or faces.shape[1] != 3 or faces.is_floating_point():
        raise MeshRasterError(
            f"faces must be an integer tensor [F, 3], got {tuple(faces.shape)} {faces.dtype}"
        )
    faces = faces.long()
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= num_vertices):
        raise MeshRasterError(
            f"face indices must lie in [0, {num_vertices}), got {faces.min()}..{faces.max()}"
        )
    return faces


def _triangle_ids(rast: Tensor) -> Tensor:
    """Triangle ids + 1 of ``rast`` as long (0 = empty)."""
    if rast.dim() != 4 or rast.shape[-1] != 4:
        raise MeshRasterError(f"rast must be [B, H, W, 4] from rasterize, got {tuple(rast.shape)}")
    return rast[..., 3].detach().round().long()


# ---------------------------------------------------------------------------------------------- backends


def nvdiffrast_available() -> bool:
    """True when nvdiffrast is importable and CUDA is present."""
    return torch.cuda.is_available() and importlib.util.find_spec("nvdiffrast") is not None


def _use_nvdiffrast(backend: str, like: Tensor) -> bool:
    if backend not in BACKENDS:
        raise MeshRasterError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "nvdiffrast" and not (like.is_cuda and nvdiffrast_available()):
        raise MeshRasterError("backend='nvdiffrast' needs CUDA tensors and nvdiffrast; use backend='torch'")
    return backend == "nvdiffrast" or (backend == "auto" and like.is_cuda and nvdiffrast_available())


_NV_CONTEXTS: dict[torch.device, object] = {}


def _nvdiffrast():  # imported lazily: an optional CUDA extension that needs a build
    import nvdiffrast.torch as dr

    return dr


# ---------------------------------------------------------------------------------------------- rasterize


def rasterize(
    clip_pos: Tensor,
    faces: Tensor,
    resolution: int | Sequence[int],
    *,
    max_pairs: int = DEFAULT_MAX_PAIRS,
    backend: str = "torch",
) -> Tensor:
    """``rast [B, H, W, 4] = (u, v, z/w, triangle_id + 1)`` of a mesh at clip positions.

    ``clip_pos`` [B, V, 4] or [V, 4] (B = 1), ``faces`` [F, 3] integer, ``resolution`` (H, W) or an int.
    ``u, v`` and ``z/w`` are differentiable in ``clip_pos``; the ids are not (see the module text).
    """
    pos = _positions(clip_pos)
    tri = _faces(faces, pos.shape[1])
    h, w = _resolution(resolution)
    if _use_nvdiffrast(backend, pos):
        dr = _nvdiffrast()
        if pos.device not in _NV_CONTEXTS:
            _NV_CONTEXTS[pos.device] = dr.RasterizeCudaContext(device=pos.device)
        ctx = _NV_CONTEXTS[pos.device]
        return dr.rasterize(ctx, pos.float().contiguous(), tri.int().contiguous(), (h, w))[0]
    with torch.no_grad():
        ids = _nearest_triangles(pos.detach(), tri, h, w, max_pairs)
    return _rast_from_ids(pos, tri, ids, h, w)


def _nearest_triangles(pos: Tensor, tri: Tensor, h: int, w: int, max_pairs: int) -> Tensor:
    """Index of the nearest triangle at every pixel centre, [B * H * W] long (-1 = none)."""
    b, dev, dtype = pos.shape[0], pos.device, pos.dtype
    nf = tri.shape[0]
    ids = torch.full((b * h * w,), -1, dtype=torch.long, device=dev)
    if nf == 0:
        return ids
    v = pos[:, tri]  # [B, F, 3, 4]
    vw = v[..., 3]
    front = (vw > 0).all(-1)
    vw = torch.where(vw > 0, vw, torch.ones_like(vw))
    x, y, z = v[..., 0] / vw, v[..., 1] / vw, v[..., 2] / vw  # NDC, [B, F, 3]
    x0, x1, x2 = x.unbind(-1)
    y0, y1, y2 = y.unbind(-1)
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    ok = front & torch.isfinite(area) & (area != 0)
    # pixel centre i sits at NDC (2 i + 1) / W - 1, so a bounding box [lo, hi] holds i in [ceil, floor] of:
    fx = ((x + 1) * w - 1) * 0.5
    fy = ((y + 1) * h - 1) * 0.5
    i_lo = torch.ceil(fx.amin(-1).clamp(-1, w)).long().clamp_min(0)
    i_hi = torch.floor(fx.amax(-1).clamp(-1, w)).long().clamp_max(w - 1)
    j_lo = torch.ceil(fy.amin(-1).clamp(-1, h)).long().clamp_min(0)
    j_hi = torch.floor(fy.amax(-1).clamp(-1, h)).long().clamp_max(h - 1)
    bw = (i_hi - i_lo + 1).clamp_min(0)
    counts = bw * (j_hi - j_lo + 1).clamp_min(0) * ok
    keep = counts.flatten().nonzero().squeeze(1)  # index b * F + f, in triangle order
    if keep.numel() == 0:
        return ids
    # edge functions b_k(px, py) = A_k px + B_k py + C_k (screen barycentrics) and z/w likewise
    inv = 1.0 / area
    coef = []
    for k0, k1 in ((1, 2), (2, 0), (0, 1)):
        xa, ya, xb, yb = x[..., k0], y[..., k0], x[..., k1], y[..., k1]
        coef.append(torch.stack([(ya - yb) * inv, (xb - xa) * inv, (xa * yb - xb * ya) * inv], -1))
    coef.append(sum(c * z[..., k, None] for k, c in enumerate(coef)))
    table = torch.cat(coef, -1).reshape(b * nf, 12)[keep]
    counts, bw = counts.flatten()[keep], bw.flatten()[keep]
    i_lo, j_lo = i_lo.flatten()[keep], j_lo.flatten()[keep]
    base = keep // nf * (h * w)  # pixel offset of the triangle's image
    face = keep % nf
    tol = 64 * torch.finfo(dtype).eps
    zbuf = torch.full((b * h * w,), float("inf"), dtype=dtype, device=dev)
    ends = torch.cumsum(counts, 0)
    starts = ends - counts
    lo = 0
    while lo < keep.numel():
        hi = int(torch.searchsorted(ends, starts[lo] + max_pairs, right=True))
        hi = max(hi, lo + 1)  # a triangle bigger than max_pairs goes alone
        sl = slice(lo, hi)
        lo = hi
        n = torch.arange(hi - sl.start, device=dev)
        t = torch.repeat_interleave(n, counts[sl])  # local triangle of each pair
        off = torch.arange(t.numel(), device=dev) - (starts[sl] - starts[sl.start])[t]
        ix = i_lo[sl][t] + off % bw[sl][t]
        iy = j_lo[sl][t] + torch.div(off, bw[sl][t], rounding_mode="floor")
        px = ((2 * ix + 1).to(dtype) / w - 1)[:, None]
        py = ((2 * iy + 1).to(dtype) / h - 1)[:, None]
        c = table[sl][t].reshape(-1, 4, 3)
        e = c[..., 0] * px + c[..., 1] * py + c[..., 2]  # [P, 4]: three barycentrics and z/w
        depth = e[:, 3]
        inside = (e[:, :3] >= -tol).all(-1) & (depth >= -1) & (depth <= 1)
        pix = (base[sl][t] + iy * w + ix)[inside]
        depth, fid = depth[inside], face[sl][t][inside]
        zc = torch.full_like(zbuf, float("inf")).scatter_reduce(0, pix, depth, "amin")
        win = depth == zc[pix]
        idc = torch.full_like(ids, nf).scatter_reduce(0, pix[win], fid[win], "amin")
        nearer = zc < zbuf  # a tie with an earlier chunk keeps the earlier (lower) id
        zbuf = torch.where(nearer, zc, zbuf)
        ids = torch.where(nearer, idc, ids)
    return ids


def _pixel_ndc(flat: Tensor, h: int, w: int, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """Batch index and NDC pixel-centre coordinates of flat pixel indices into [B, H, W]."""
    bi = torch.div(flat, h * w, rounding_mode="floor")
    rem = flat - bi * (h * w)
    iy = torch.div(rem, w, rounding_mode="floor")
    ix = rem - iy * w
    return bi, (2 * ix + 1).to(dtype) / w - 1, (2 * iy + 1).to(dtype) / h - 1


def _rast_from_ids(pos: Tensor, tri: Tensor, ids: Tensor, h: int, w: int) -> Tensor:
    """The rast buffer of given per-pixel triangle ids, barycentrics recomputed differentiably."""
    b = pos.shape[0]
    cov = (ids >= 0).nonzero().squeeze(1)
    bi, px, py = _pixel_ndc(cov, h, w, pos.dtype)
    f = ids[cov]
    vtx = pos[bi[:, None], tri[f]]  # [N, 3, 4]
    ax = vtx[..., 0] - px[:, None] * vtx[..., 3]
    ay = vtx[..., 1] - py[:, None] * vtx[..., 3]
    lam = torch.stack(
        [
            ax[:, 1] * ay[:, 2] - ax[:, 2] * ay[:, 1],
            ax[:, 2] * ay[:, 0] - ax[:, 0] * ay[:, 2],
            ax[:, 0] * ay[:, 1] - ax[:, 1] * ay[:, 0],
        ],
        -1,
    )
    lam = lam / lam.sum(-1, keepdim=True)
    zw = (lam * vtx[..., 2]).sum(-1) / (lam * vtx[..., 3]).sum(-1)
    vals = torch.stack([lam[:, 0], lam[:, 1], zw, (f + 1).to(pos.dtype)], -1)
    return pos.new_zeros(b * h * w, 4).index_put((cov,), vals).reshape(b, h, w, 4)


# -------------------------------------------------------------------------------------------- interpolate


def interpolate(attr: Tensor, rast: Tensor, faces: Tensor, *, backend: str = "torch") -> Tensor:
    """Vertex attributes ``attr`` [V, C] or [B, V, C] at every pixel of ``rast``: [B, H, W, C], 0 where empty.

    Differentiable in ``attr`` and in the barycentrics of ``rast``.
    """
    if attr.dim() not in (2, 3):
        raise MeshRasterError(f"attributes must be [V, C] or [B, V, C], got {tuple(attr.shape)}")
    tri = _faces(faces, attr.shape[-2])
    ids = _triangle_ids(rast)
    b, h, w = ids.shape
    if attr.dim() == 3 and attr.shape[0] not in (1, b):
        raise MeshRasterError(f"attributes for {attr.shape[0]} images, rast has {b}")
    if _use_nvdiffrast(backend, rast):
        a = attr if attr.dim() == 3 else attr[None]
        return _nvdiffrast().interpolate(a.float().contiguous(), rast, tri.int().contiguous())[0]
    flat = ids.reshape(-1)
    cov = (flat > 0).nonzero().squeeze(1)
    idx = tri[flat[cov] - 1]  # [N, 3]
    if attr.dim() == 3 and attr.shape[0] == b and b > 1:
        a = attr[torch.div(cov, h * w, rounding_mode="floor")[:, None], idx]
    else:
        a = attr.reshape(attr.shape[-2:])[idx]  # [N, 3, C]
    r = rast.reshape(-1, 4)[cov]
    u, v = r[:, 0:1], r[:, 1:2]
    vals = u * a[:, 0] + v * a[:, 1] + (1 - u - v) * a[:, 2]
    out = vals.new_zeros(b * h * w, attr.shape[-1]).index_put((cov,), vals)
    return out.reshape(b, h, w, -1)


# --------------------------------------------------------------------------------------------- antialias


def mesh_topology(faces: Tensor) -> Tensor:
    """For each face and edge ``k`` (the edge opposite its vertex ``k``), the vertex across it: [F, 3].

    -1 where the edge has no neighbour or more than one (both count as silhouettes). Depends only on
    ``faces``: compute it once for a fixed topology and pass it to :func:`antialias`.
    """
    tri = faces.long()
    nf = tri.shape[0]
    if nf == 0:
        return tri.new_full((0, 3), -1)
    a, b = tri[:, [1, 2, 0]], tri[:, [2, 0, 1]]
    n = int(tri.max()) + 1
    key = (torch.minimum(a, b) * n + torch.maximum(a, b)).reshape(-1)
    key = torch.where((a == b).reshape(-1), -1 - torch.arange(3 * nf, device=tri.device), key)  # degenerate
    order = torch.argsort(key, stable=True)
    _, counts = torch.unique_consecutive(key[order], return_counts=True)
    first = torch.cumsum(counts, 0) - counts
    pairs = first[counts == 2]
    e1, e2 = order[pairs], order[pairs + 1]  # entries face * 3 + k
    own = tri.reshape(-1)
    opp = torch.full((3 * nf,), -1, dtype=torch.long, device=tri.device)
    opp[e1] = own[e2]
    opp[e2] = own[e1]
    return opp.reshape(nf, 3)


def antialias(
    color: Tensor,
    rast: Tensor,
    clip_pos: Tensor,
    faces: Tensor,
    *,
    topology: Tensor | None = None,
    backend: str = "torch",
) -> Tensor:
    """``color`` [B, H, W, C] with silhouette edges antialiased; differentiable in ``color`` and ``clip_pos``.

    ``rast`` must come from :func:`rasterize` of the same ``clip_pos`` and ``faces``; ``topology`` is
    :func:`mesh_topology` of ``faces`` (computed here when not given). The approximation is described
    in the module text.
    """
    pos = _positions(clip_pos)
    tri = _faces(faces, pos.shape[1])
    ids = _triangle_ids(rast)
    b, h, w = ids.shape
    if color.shape[:3] != (b, h, w):
        raise MeshRasterError(f"color {tuple(color.shape)} does not match rast {tuple(rast.shape)}")
    if pos.shape[0] not in (1, b):
        raise MeshRasterError(f"clip positions for {pos.shape[0]} images, rast has {b}")
    if _use_nvdiffrast(backend, color):
        dr = _nvdiffrast()
        return dr.antialias(
            color.float().contiguous(), rast, pos.float().contiguous(), tri.int().contiguous()
        )
    opp = mesh_topology(tri) if topology is None else topology.to(tri.device).long()
    if opp.shape != tri.shape:
        raise MeshRasterError(f"topology must be [F, 3] like faces, got {tuple(opp.shape)}")
    pos = pos.expand(b, -1, -1)
    vw = pos[..., 3:]
    vw = torch.where(vw > 0, vw, torch.ones_like(vw))
    # vertex positions in pixels: pixel (j, i) has its centre at (i + 1/2, j + 1/2)
    scr = torch.stack(
        [(pos[..., 0] / vw[..., 0] + 1) * (w / 2), (pos[..., 1] / vw[..., 0] + 1) * (h / 2)], -1
    )
    depth = rast[..., 2].detach()
    flat = color.reshape(b * h * w, -1)
    targets: list[Tensor] = []
    deltas: list[Tensor] = []
    for axis, step in ((0, 1), (1, w)):  # 0: horizontal pairs (x), 1: vertical pairs (y)
        cut = (slice(None), slice(None), slice(None, -1)) if axis == 0 else (slice(None), slice(None, -1))
        nxt = (slice(None), slice(None), slice(1, None)) if axis == 0 else (slice(None), slice(1, None))
        t0, t1, z0, z1 = ids[cut], ids[nxt], depth[cut], depth[nxt]
        first = (t0 > 0) & ((t1 == 0) | (z0 < z1))
        chosen = torch.where(first, t0, t1)
        pairs = ((t0 != t1) & (chosen > 0)).nonzero()
        if pairs.numel() == 0:
            continue
        pb, pj, pi = pairs.unbind(-1)
        p0 = (pb * h + pj) * w + pi
        first = first[pb, pj, pi]
        f = chosen[pb, pj, pi] - 1
        pp = torch.where(first, p0, p0 + step)  # the pixel showing the chosen triangle
        qq = torch.where(first, p0 + step, p0)
        sign = first.to(pos.dtype) * 2 - 1  # +1 when Q lies in the positive axis direction
        centre = torch.stack([(pi + 0.5).to(pos.dtype), (pj + 0.5).to(pos.dtype)], -1)
        centre[:, axis] += (~first).to(pos.dtype)
        corners = scr[pb[:, None], tri[f]] - centre[:, None]  # [N, 3, 2] relative to P's centre
        along, perp = corners[..., axis], corners[..., 1 - axis]
        a_al, b_al = along[:, [1, 2, 0]], along[:, [2, 0, 1]]  # edge k joins vertices k+1 and k+2
        a_pp, b_pp = perp[:, [1, 2, 0]], perp[:, [2, 0, 1]]
        d_al, d_pp = b_al - a_al, b_pp - a_pp
        straddle = (a_pp.detach() > 0) != (b_pp.detach() > 0)
        cross = (a_al - a_pp * d_al / torch.where(straddle, d_pp, torch.ones_like(d_pp))) * sign[:, None]
        cross_nd = torch.where(straddle, cross.detach(), torch.full_like(cross, -float("inf")))
        k = cross_nd.argmax(-1, keepdim=True)  # the edge where the line leaves the triangle
        s = cross.gather(1, k).squeeze(1)
        found = straddle.gather(1, k).squeeze(1)
        steep = d_pp.detach().gather(1, k).abs() >= d_al.detach().gather(1, k).abs()
        # silhouette: no neighbour across the edge, or the neighbour's far vertex on this triangle's side
        o = opp[f, k.squeeze(1)]
        kk = k[..., None].expand(-1, 1, 2)
        fixed = corners.detach()
        ea = fixed[:, [1, 2, 0]].gather(1, kk).squeeze(1)
        eb = fixed[:, [2, 0, 1]].gather(1, kk).squeeze(1)
        own = fixed.gather(1, kk).squeeze(1)  # the triangle's vertex opposite the edge
        other = scr.detach()[pb, o.clamp_min(0)] - centre  # the neighbour's
        edge = eb - ea
        side_own = edge[:, 0] * (own - ea)[:, 1] - edge[:, 1] * (own - ea)[:, 0]
        side_other = edge[:, 0] * (other - ea)[:, 1] - edge[:, 1] * (other - ea)[:, 0]
        silhouette = (o < 0) | ((side_own > 0) == (side_other > 0))
        sd = s.detach()
        use = (
            found & steep.squeeze(1) & silhouette & (sd > -CROSSING_TOLERANCE) & (sd < 1 + CROSSING_TOLERANCE)
        )
        if not bool(use.any()):
            continue
        t = s[use].clamp(0, 1)[:, None]
        pp, qq = pp[use], qq[use]
        c_p, c_q = flat[pp], flat[qq]
        targets += [pp, qq]
        deltas += [(0.5 - t).clamp_min(0) * (c_q - c_p), (t - 0.5).clamp_min(0) * (c_p - c_q)]
    if not targets:
        return color
    return flat.index_add(0, torch.cat(targets), torch.cat(deltas).to(flat.dtype)).reshape(color.shape)


# ------------------------------------------------------------------------------------- edge sampling


def mesh_edges(faces: Tensor) -> Tensor:
    """Every edge of ``faces`` once: ``[E, 4] = (a, b, c, d)``: the edge ``a``-``b``, ``c`` the third
    vertex of a face on it, ``d`` the third vertex of the face across it (-1: a boundary edge).

    An edge of more than two faces is listed once per face, as a boundary (as :func:`mesh_topology`
    does). Depends only on ``faces``: compute it once for a fixed topology.
    """
    tri = faces.long()
    if tri.shape[0] == 0:
        return tri.new_zeros((0, 4))
    a, b, c = tri[:, [1, 2, 0]].reshape(-1), tri[:, [2, 0, 1]].reshape(-1), tri.reshape(-1)
    key = torch.minimum(a, b) * (int(tri.max()) + 1) + torch.maximum(a, b)
    keep = (a != b).nonzero().squeeze(1)  # degenerate edges are none
    order = keep[torch.argsort(key[keep], stable=True)]
    _, counts = torch.unique_consecutive(key[order], return_counts=True)
    lone = order[torch.repeat_interleave(counts != 2, counts)]
    first = (torch.cumsum(counts, 0) - counts)[counts == 2]
    e1, e2 = order[first], order[first + 1]
    return torch.cat(
        [
            torch.stack([a[lone], b[lone], c[lone], torch.full_like(lone, -1)], -1),
            torch.stack([a[e1], b[e1], c[e1], c[e2]], -1),
        ]
    )


def _side(a: Tensor, b: Tensor, p: Tensor) -> Tensor:
    """Twice the signed area of (a, b, p): which side of the line a-b the point p lies on."""
    return (b[..., 0] - a[..., 0]) * (p[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (
        p[..., 0] - a[..., 0]
    )


def _front_depth(scr: Tensor, inv_w: Tensor, tri: Tensor, qb: Tensor, q: Tensor, qe: Tensor) -> Tensor:
    """The inverse view depth [N] of the nearest face over each point ``q`` [N, 2] (pixels) of image
    ``qb``, 0 where none covers it. The faces that hold both vertices of the point's edge ``qe`` [N, 2]
    are left out. ``scr`` [B, V, 2]: vertices in pixels; ``inv_w`` [B, V]: 1 / w (0 behind the camera).

    Faces are binned into the unit pixel cells their screen bounding boxes overlap, and each point is
    tested against the faces of its cell (1 / w is affine in screen space over a face).
    """
    b, nv, dev = scr.shape[0], scr.shape[1], scr.device
    front = q.new_zeros(q.shape[0])
    nf = tri.shape[0]
    cx, cy = torch.floor(q[:, 0]).long(), torch.floor(q[:, 1]).long()
    x0, y0 = int(cx.min()), int(cy.min())
    gw, gh = int(cx.max()) - x0 + 1, int(cy.max()) - y0 + 1  # the cells that hold points
    qcell = (qb * gh + (cy - y0)) * gw + (cx - x0)
    wanted = torch.zeros(b * gh * gw, dtype=torch.bool, device=dev)
    wanted[qcell] = True
    v = scr[:, tri]  # [B, F, 3, 2]
    origin = torch.tensor([x0, y0], device=dev)
    lo = (torch.floor(v.amin(2)).long() - origin).clamp_min(0)
    hi = torch.minimum(torch.floor(v.amax(2)).long() - origin, torch.tensor([gw - 1, gh - 1], device=dev))
    span = (hi - lo + 1).clamp_min(0)
    ok = (inv_w[:, tri] > 0).all(-1)
    counts = (span[..., 0] * span[..., 1] * ok).reshape(-1)
    keep = counts.nonzero().squeeze(1)  # b * F + f
    if keep.numel() == 0:
        return front
    counts = counts[keep]
    lo, spx = lo.reshape(-1, 2)[keep], span[..., 0].reshape(-1)[keep]
    k = torch.repeat_interleave(torch.arange(keep.numel(), device=dev), counts)
    off = torch.arange(k.numel(), device=dev) - (torch.cumsum(counts, 0) - counts)[k]
    cell = (keep[k] // nf * gh + lo[k, 1] + off // spx[k]) * gw + lo[k, 0] + off % spx[k]
    sel = wanted[cell]
    cell, face = cell[sel], keep[k[sel]]
    order = torch.argsort(cell)
    cell, face = cell[order], face[order]
    first = torch.searchsorted(cell, qcell)
    n = torch.searchsorted(cell, qcell, right=True) - first
    qi = torch.repeat_interleave(torch.arange(q.shape[0], device=dev), n)
    if qi.numel() == 0:
        return front
    fi = face[first[qi] + torch.arange(qi.numel(), device=dev) - (torch.cumsum(n, 0) - n)[qi]]
    corners = tri[fi % nf]  # [M, 3]
    mine = ((corners == qe[qi, :1]) | (corners == qe[qi, 1:])).sum(-1) >= 2
    vid = (fi // nf)[:, None] * nv + corners
    p, pt = scr.reshape(-1, 2)[vid], q[qi]  # [M, 3, 2], [M, 2]
    e = torch.stack(
        [_side(p[:, 1], p[:, 2], pt), _side(p[:, 2], p[:, 0], pt), _side(p[:, 0], p[:, 1], pt)], -1
    )
    area = e.sum(-1)
    inside = ((e > 0).all(-1) | (e < 0).all(-1)) & ~mine
    depth = (e * inv_w.reshape(-1)[vid]).sum(-1) / torch.where(inside, area, torch.ones_like(area))
    return front.scatter_reduce(0, qi[inside], depth[inside], "amax")


def silhouette_edges(
    color: Tensor,
    rast: Tensor,
    clip_pos: Tensor,
    faces: Tensor,
    *,
    edges: Tensor | None = None,
    samples_per_pixel: float = DEFAULT_EDGE_SAMPLES,
    generator: torch.Generator | None = None,
    offset: float = EDGE_READ_OFFSET,
    depth_tolerance: float = EDGE_DEPTH_TOLERANCE,
) -> Tensor:
    """``color`` [B, H, W, C] unchanged, with silhouette gradients in ``clip_pos`` by edge sampling.

    The alternative to :func:`antialias` (same arguments; ``edges`` is :func:`mesh_edges` of
    ``faces``, computed here when not given): the forward value is ``color`` itself, and the image's
    derivative with respect to the vertices is that of its box-filtered version at every visible
    silhouette (Li et al. 2018, "Differentiable Monte Carlo Ray Tracing through Edge Sampling"):

    * a silhouette edge is a boundary edge, or one whose two faces lie on the same side of it on screen;
    * every silhouette edge gets ``ceil(samples_per_pixel * length)`` samples (at least one), one per
      stratum at its middle, or at a uniform draw of ``generator`` (deterministic either way);
    * a sample moving by ``delta`` pixels along the edge's outward normal changes the pixel that holds
      it by ``(c_in - c_out) * (length / samples) * delta``, where ``c_out`` is the pixel ``offset``
      pixels outside along that normal and ``c_in`` the first covered one of: ``offset`` inside along
      it, ``offset`` towards the face's centroid, the centroid, the sample's own (else no sample);
    * visibility is exact: a sample just outside which a nearer face lies (by a relative view depth
      of more than ``depth_tolerance``) is hidden and gives nothing; one with a farther face there
      while the outside pixel shows none (a fold smaller than a pixel) gives nothing either.

    Only ``clip_pos`` gets gradients from this (``color`` passes through as it is), so gradients reach
    the vertices through the samples' positions, linear in the edge's two endpoints.
    """
    pos = _positions(clip_pos)
    tri = _faces(faces, pos.shape[1])
    ids = _triangle_ids(rast)
    b, h, w = ids.shape
    if color.shape[:3] != (b, h, w):
        raise MeshRasterError(f"color {tuple(color.shape)} does not match rast {tuple(rast.shape)}")
    if pos.shape[0] not in (1, b):
        raise MeshRasterError(f"clip positions for {pos.shape[0]} images, rast has {b}")
    if not samples_per_pixel > 0:
        raise MeshRasterError(f"samples_per_pixel must be > 0, got {samples_per_pixel}")
    edge = mesh_edges(tri) if edges is None else edges.to(tri.device).long()
    if edge.dim() != 2 or edge.shape[1] != 4:
        raise MeshRasterError(f"edges must be [E, 4] from mesh_edges, got {tuple(edge.shape)}")
    if edge.shape[0] == 0 or not pos.requires_grad:
        return color
    pos = pos.expand(b, -1, -1)
    vw = pos[..., 3]
    front = vw.detach() > 0
    vw = torch.where(front, vw, torch.ones_like(vw))
    scr = torch.stack([(pos[..., 0] / vw + 1) * (w / 2), (pos[..., 1] / vw + 1) * (h / 2)], -1)
    fixed = scr.detach()
    ea, eb, ec, ed = edge.unbind(-1)
    # silhouettes, per image: [B, E]
    side_c = _side(fixed[:, ea], fixed[:, eb], fixed[:, ec])
    side_d = _side(fixed[:, ea], fixed[:, eb], fixed[:, ed.clamp_min(0)])
    boundary = (ed < 0)[None]
    sil = (side_c != 0) & (boundary | (torch.sign(side_c) == torch.sign(side_d)))
    sil &= front[:, ea] & front[:, eb] & front[:, ec] & (boundary | front[:, ed.clamp_min(0)])
    bi, ei = sil.nonzero().unbind(-1)
    if bi.numel() == 0:
        return color
    pa, pb = fixed[bi, ea[ei]], fixed[bi, eb[ei]]
    length = (pb - pa).norm(dim=-1)
    count = torch.ceil(length * samples_per_pixel).long().clamp_min(1)
    # samples: edge j gets count[j] strata
    owner = torch.repeat_interleave(torch.arange(bi.numel(), device=pos.device), count)
    start = torch.cumsum(count, 0) - count
    stratum = torch.arange(owner.numel(), device=pos.device) - start[owner]
    if generator is None:
        jitter = torch.full_like(owner, 0.5, dtype=pos.dtype)
    else:
        jitter = torch.rand(owner.numel(), generator=generator, device=generator.device).to(pos)
    s = ((stratum.to(pos.dtype) + jitter) / count[owner].to(pos.dtype))[:, None]
    sb, se = bi[owner], ei[owner]
    p = fixed[sb, ea[se]] * (1 - s) + fixed[sb, eb[se]] * s
    tangent = (pb - pa)[owner] / length[owner].clamp_min(1e-12)[:, None]
    normal = torch.stack([tangent[:, 1], -tangent[:, 0]], -1)
    inward = torch.sign(side_c[bi, ei])[owner]  # the face's side: +1 when left of a -> b
    normal = normal * inward[:, None]  # now pointing outwards (away from the face)

    def pixel(q: Tensor) -> tuple[Tensor, Tensor]:
        i, j = torch.floor(q[:, 0]).long(), torch.floor(q[:, 1]).long()
        inside = (i >= 0) & (i < w) & (j >= 0) & (j < h)
        return (sb * h + j.clamp(0, h - 1)) * w + i.clamp(0, w - 1), inside

    here, on_image = pixel(p)
    outer, _ = pixel(p + offset * normal)
    flat_ids = ids.reshape(-1)
    # the inside colour: the first covered pixel of ``offset`` inwards along the normal, ``offset``
    # towards the face's centroid (inside the face all the way, so right at sharp corners), the
    # centroid, the sample's own pixel
    centroid = (fixed[sb, ea[se]] + fixed[sb, eb[se]] + fixed[sb, ec[se]]) / 3
    to_centre = centroid - p
    reach = to_centre.norm(dim=-1, keepdim=True)
    towards = p + to_centre * (offset / reach.clamp_min(1e-12)).clamp_max(1)
    inner = here
    for q in (centroid, towards, p - offset * normal):
        pix, ok = pixel(q)
        inner = torch.where(ok & (flat_ids[pix] > 0), pix, inner)
    use = on_image & (flat_ids[inner] > 0)
    live = use.nonzero().squeeze(1)
    if live.numel() == 0:
        return color
    # what lies just outside the sample: a nearer face hides it, a farther one is seen past the edge
    inv_w = 1 / vw.detach()[sb, ea[se]] * (1 - s[:, 0]) + 1 / vw.detach()[sb, eb[se]] * s[:, 0]
    vis_w = torch.where(front, 1 / vw.detach(), torch.zeros_like(vw))
    probe = p[live] + EDGE_PROBE * normal[live]
    qe = torch.stack([ea[se[live]], eb[se[live]]], -1)
    past = _front_depth(fixed, vis_w, tri, sb[live], probe, qe)
    hidden = past > inv_w[live] * (1 + depth_tolerance)
    # a surface just past the edge that the outside pixel misses (a fold smaller than ``offset``):
    # the colour does not change there, to within what the image can tell
    folded = (past > 0) & (flat_ids[outer[live]] == 0)
    use[live] = ~hidden & ~folded
    if not bool(use.any()):
        return color
    flat = color.reshape(b * h * w, -1)
    diff = (flat[inner[use]] - flat[outer[use]]).detach()
    weight = (length / count.to(pos.dtype))[owner][use]
    su, sel, n = s[use], se[use], normal[use]
    moving = scr[sb[use], ea[sel]] * (1 - su) + scr[sb[use], eb[sel]] * su
    shift = (moving * n).sum(-1)
    delta = diff * (weight * (shift - shift.detach()))[:, None]
    return flat.index_add(0, here[use], delta.to(flat.dtype)).reshape(color.shape)


# ------------------------------------------------------------------------------------------------ cameras


def to_clip(
    vertices: Tensor,
    cameras: Cameras,
    resolution: int | Sequence[int] = (1, 1),
    *,
    near: float = DEFAULT_NEAR,
    far: float = DEFAULT_FAR,
) -> Tensor:
    """Clip positions [B, V, 4] of world ``vertices`` [V, 3] (or [B, V, 3]) seen by B ``cameras``.

    The pinhole model is the one every renderer here shares (:func:`gaussian_raster.camera_matrices`:
    ``focal = H / (2 tan(fovy / 2))`` pixels on both axes, principal point at the centre); only the
    aspect of ``resolution`` matters. ``w`` is the depth along the view axis, ``z/w`` runs from -1 at
    ``near`` to 1 at ``far``, and NDC ``y`` grows downwards so that rast row 0 is the image's top row.
    Differentiable in ``vertices``.
    """
    h, w = _resolution(resolution)
    if vertices.shape[-1] != 3 or vertices.dim() not in (2, 3):
        raise MeshRasterError(f"vertices must be [V, 3] or [B, V, 3], got {tuple(vertices.shape)}")
    if not 0 < near < far:
        raise MeshRasterError(f"need 0 < near < far, got near={near}, far={far}")
    cams = Cameras(
        cameras.c2w.to(vertices),
        cameras.fovy.to(vertices),
        cameras.elevation,
        cameras.azimuth,
        cameras.distance,
    )
    viewmats, ks = camera_matrices(cams, h, w)  # OpenCV: x right, y down, z forward
    cam = torch.einsum("bij,bvj->bvi", viewmats[:, :3, :3], vertices.expand(len(cams), -1, -1))
    x, y, z = (cam + viewmats[:, None, :3, 3]).unbind(-1)
    fx, fy = ks[:, 0, 0, None], ks[:, 1, 1, None]
    cx, cy = ks[:, 0, 2, None], ks[:, 1, 2, None]
    return torch.stack(
        [
            2 * fx / w * x + (2 * cx / w - 1) * z,
            2 * fy / h * y + (2 * cy / h - 1) * z,
            (far + near) / (far - near) * z - 2 * far * near / (far - near),
            z,
        ],
        -1,
    )


# ----------------------------------------------------------------------------------------------- render


def _background(background: Tensor | float | Sequence[float], like: Tensor) -> Tensor:
    return broadcast_background(background, like, MeshRasterError)


def render_mesh(
    vertices: Tensor,
    faces: Tensor,
    colours: Colours,
    cameras: Cameras,
    resolution: int | Sequence[int],
    background: Tensor | float | Sequence[float] = 1.0,
    *,
    antialias_edges: bool = True,
    topology: Tensor | None = None,
    silhouette: str = "antialias",
    edges: Tensor | None = None,
    generator: torch.Generator | None = None,
    near: float = DEFAULT_NEAR,
    far: float = DEFAULT_FAR,
    max_pairs: int = DEFAULT_MAX_PAIRS,
    backend: str = "torch",
) -> tuple[Tensor, Tensor]:
    """``(rgb [B, H, W, 3], alpha [B, H, W, 1])`` of a mesh, the render contract of :mod:`.views`.

    ``colours``: per-vertex [V, 3] or [B, V, 3], or a function of world points [N, 3] -> [N, 3]
    evaluated at the visible surface point of each covered pixel (a colour field). ``rgb`` is composited
    on ``background``. Silhouettes, with ``antialias_edges``, by ``silhouette``: ``antialias`` blends
    them (:func:`antialias`, ``topology`` its :func:`mesh_topology`), ``edges`` leaves the image as
    rasterized and gives them gradients by edge sampling (:func:`silhouette_edges`, ``edges`` its
    :func:`mesh_edges`, ``generator`` its jitter), ``none`` does neither. Either way rgb and alpha are
    differentiable in ``vertices`` (and in the colours).
    """
    if silhouette not in SILHOUETTE_MODES:
        raise MeshRasterError(f"silhouette must be one of {SILHOUETTE_MODES}, got {silhouette!r}")
    h, w = _resolution(resolution)
    clip = to_clip(vertices, cameras, (h, w), near=near, far=far)
    rast = rasterize(clip, faces, (h, w), max_pairs=max_pairs, backend=backend)
    mask = (rast[..., 3:] > 0).to(clip.dtype)
    if callable(colours):
        points = interpolate(vertices, rast, faces, backend=backend).reshape(-1, 3)
        cov = mask.reshape(-1).nonzero().squeeze(1)
        vals = colours(points[cov])
        col = (
            vals.new_zeros(points.shape[0], vals.shape[-1])
            .index_put((cov,), vals)
            .reshape(*mask.shape[:3], -1)
        )
    else:
        col = interpolate(colours, rast, faces, backend=backend)
    rgb = col + (1 - mask) * _background(background, col)
    img = torch.cat([rgb, mask], -1)
    if antialias_edges and silhouette == "antialias":
        img = antialias(img, rast, clip, faces, topology=topology, backend=backend)
    elif antialias_edges and silhouette == "edges":
        img = silhouette_edges(img, rast, clip, faces, edges=edges, generator=generator)
    return img[..., :3], img[..., 3:]


def mesh_render_fn(
    vertices: Tensor,
    faces: Tensor,
    colours: Colours,
    resolution: int | Sequence[int],
    background: Tensor | float | Sequence[float] = 1.0,
    **options,
) -> RenderFn:
    """A :data:`views.RenderFn` of a fixed mesh (no gradient), for the exporters and the evaluation."""
    topology = options.pop("topology", None)
    if topology is None:
        topology = mesh_topology(faces)

    def render(cameras: Cameras) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            return render_mesh(
                vertices, faces, colours, cameras, resolution, background, topology=topology, **options
            )

    return render


# ----------------------------------------------------------------------------------------- test meshes


def sphere_mesh(n_lat: int = 100, n_lon: int = 100, radius: float = 0.5) -> tuple[Tensor, Tensor]:
    """A closed UV sphere: vertices [2 + (n_lat - 1) n_lon, 3], faces [2 n_lon (n_lat - 1), 3]."""
    theta = torch.arange(1, n_lat, dtype=torch.float64) * (torch.pi / n_lat)
    phi = torch.arange(n_lon, dtype=torch.float64) * (2 * torch.pi / n_lon)
    th, ph = torch.meshgrid(theta, phi, indexing="ij")
    ring = torch.stack([th.sin() * ph.cos(), th.sin() * ph.sin(), th.cos()], -1).reshape(-1, 3)
    verts = torch.cat([ring.new_tensor([[0, 0, 1]]), ring, ring.new_tensor([[0, 0, -1]])]) * radius
    south = verts.shape[0] - 1
    j = torch.arange(n_lon)
    jn = (j + 1) % n_lon
    faces = [torch.stack([torch.zeros_like(j), 1 + j, 1 + jn], -1)]
    for r in range(n_lat - 2):
        a, b = 1 + r * n_lon + j, 1 + r * n_lon + jn
        c, d = a + n_lon, b + n_lon
        faces += [torch.stack([a, c, d], -1), torch.stack([a, d, b], -1)]
    last = 1 + (n_lat - 2) * n_lon
    faces.append(torch.stack([last + j, torch.full_like(j, south), last + jn], -1))
    return verts.float(), torch.cat(faces)


def benchmark(n_lat: int = 100, n_lon: int = 100, size: int = 128, repeats: int = 3) -> dict[str, float]:
    """Seconds of a forward (rasterize + interpolate + antialias) and of forward + backward of a sphere."""
    verts, faces = sphere_mesh(n_lat, n_lon)
    cams = cameras_from_spherical(15.0, 30.0, 1.5, 50.0)
    topo = mesh_topology(faces)
    colours = verts + 0.5
    best = {"raster_s": float("inf"), "render_s": float("inf"), "render_backward_s": float("inf")}
    for _ in range(repeats):
        t0 = time.perf_counter()
        rasterize(to_clip(verts, cams, size), faces, size)
        t1 = time.perf_counter()
        v = verts.clone().requires_grad_(True)
        rgb, alpha = render_mesh(v, faces, colours, cams, size, topology=topo)
        t2 = time.perf_counter()
        (rgb.sum() + alpha.sum()).backward()
        t3 = time.perf_counter()
        best["raster_s"] = min(best["raster_s"], t1 - t0)
        best["render_s"] = min(best["render_s"], t2 - t1)
        best["render_backward_s"] = min(best["render_backward_s"], t3 - t1)
    best["faces"] = float(faces.shape[0])
    best["covered_px"] = float((alpha.detach() > 0).sum())
    return best


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dreampropeller.scene.mesh_raster``: time the torch path on a UV sphere."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lat", type=int, default=100)
    parser.add_argument("--lon", type=int, default=100)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    for key, value in benchmark(args.lat, args.lon, args.size, args.repeats).items():
        print(f"{key:20s} {value:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
