"""Objective metrics against the library's known truth: silhouettes, colour, surface distance, features.

All of it is plain tensor math: the asset-level wiring lives in ``asset.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dreampropeller.guidance.tiny.library import COLOUR_NAMES, SHAPES, colour_table, shape_sdf
from dreampropeller.guidance.tiny.render import BOUND_RADIUS, trace
from dreampropeller.scene.cameras import Cameras


def silhouette_iou(a: torch.Tensor, b: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Per-view IoU [B] of the masks ``a > threshold`` and ``b > threshold`` (alphas [B, 1, H, W])."""
    ma, mb = a.flatten(1) > threshold, b.flatten(1) > threshold
    inter = (ma & mb).sum(1).float()
    union = (ma | mb).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


def library_silhouettes(cameras: Cameras, height: int, width: int) -> torch.Tensor:
    """Alphas [S, B, 1, H, W] of every library shape seen by ``cameras``."""
    n = len(cameras)
    ids = torch.arange(len(SHAPES)).repeat_interleave(n)
    cams = Cameras(
        *(
            getattr(cameras, f).repeat(len(SHAPES), *([1] * (getattr(cameras, f).dim() - 1)))
            for f in ("c2w", "fovy", "elevation", "azimuth", "distance")
        )
    )
    return trace(ids, cams, height, width).alpha.reshape(len(SHAPES), n, 1, height, width)


def shape_ious(alpha: torch.Tensor, silhouettes: torch.Tensor) -> torch.Tensor:
    """Mean IoU over views [S] of an asset's alphas [B, 1, H, W] with each shape's silhouettes."""
    return torch.stack([silhouette_iou(alpha, s.to(alpha)).mean() for s in silhouettes])


def foreground_colour(rgb: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Per-channel median colour [3] of the covered pixels (interior ones when there are enough)."""
    pixels = rgb.permute(0, 2, 3, 1).reshape(-1, 3)
    a = alpha.reshape(-1)
    for threshold in (0.99, 0.5, 0.0):
        keep = a > threshold
        if keep.sum() >= 8:
            return pixels[keep].median(dim=0).values
    return pixels.median(dim=0).values


def chromaticity(rgb: torch.Tensor) -> torch.Tensor:
    """rgb / (r + g + b): the colour without its brightness, so shading does not change it."""
    return rgb / rgb.sum(-1, keepdim=True).clamp(min=1e-6)


def colour_spread(
    rgb: torch.Tensor, alpha: torch.Tensor, threshold: float = 0.5, background: float = 1.0
) -> float:
    """How unevenly an object is coloured: RMS chromaticity distance of its covered pixels to their
    median chromaticity (rgb [B, 3, H, W] composited over a solid ``background``, alpha [B, 1, H, W]).

    Pixels with alpha above ``threshold`` count, with the background taken out first
    (``(rgb - (1 - alpha) * background) / alpha``), so half-transparent surfaces are read by their own
    colour and edges do not count as speckle. 0 for a uniformly coloured object whatever its shading
    (chromaticity ignores brightness); a speckled albedo scores high. No covered pixel: 0.
    """
    a = alpha.permute(0, 2, 3, 1).reshape(-1, 1).double()
    pixels = rgb.permute(0, 2, 3, 1).reshape(-1, 3).double()
    keep = a[:, 0] > threshold
    if not bool(keep.any()):
        return 0.0
    a, pixels = a[keep], pixels[keep]
    own = ((pixels - (1.0 - a) * background) / a).clamp(0.0, 1.0)
    chroma = chromaticity(own)
    centre = chroma.median(dim=0).values
    return float((chroma - centre).square().sum(-1).mean().sqrt())


def colour_distances(rgb: torch.Tensor) -> torch.Tensor:
    """Chromaticity distance [n_colours] of a colour [3] to every library colour."""
    return (chromaticity(rgb)[None] - chromaticity(colour_table(rgb.device))).norm(dim=-1)


def nearest_colour(rgb: torch.Tensor) -> str:
    """Name of the library colour closest in chromaticity."""
    return COLOUR_NAMES[int(colour_distances(rgb).argmin())]


# -- surfaces ---------------------------------------------------------------------------------------
def surface_samples(shape: str | int, n: int, generator: torch.Generator, band: float = 0.02) -> torch.Tensor:
    """About-uniform points [n, 3] on a library shape's surface.

    Points uniform in a thin band just inside the surface, projected onto it along the exact SDF
    gradient: the band's volume near a patch is proportional to the patch's area.
    """
    found, total = [], 0
    while total < n:
        p = (torch.rand(65536, 3, generator=generator) * 2.0 - 1.0) * BOUND_RADIUS
        d = shape_sdf(shape, p)
        keep = (d > -band) & (d <= 0.0)
        p, d = p[keep], d[keep]
        offsets = torch.eye(3) * 1e-4
        grad = torch.stack([shape_sdf(shape, p + o) - shape_sdf(shape, p - o) for o in offsets], -1)
        p = p - d[:, None] * F.normalize(grad, dim=-1)
        found.append(p)
        total += p.shape[0]
    return torch.cat(found)[:n]


def mesh_surface_samples(
    vertices: torch.Tensor, faces: torch.Tensor, n: int, generator: torch.Generator
) -> torch.Tensor:
    """Area-uniform points [n, 3] on a triangle mesh."""
    tri = vertices[faces]  # [F, 3, 3]
    area = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1).norm(dim=-1)
    if float(area.sum()) <= 0.0:
        raise ValueError("the mesh has no area; pass a mesh with at least one non-degenerate triangle")
    face = torch.multinomial(area, n, replacement=True, generator=generator)
    u = torch.rand(n, 2, generator=generator)
    flip = u.sum(-1) > 1.0
    u = torch.where(flip[:, None], 1.0 - u, u)
    t = tri[face]
    return t[:, 0] + u[:, :1] * (t[:, 1] - t[:, 0]) + u[:, 1:] * (t[:, 2] - t[:, 0])


def _segment_distance(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    e = b - a
    h = (((p - a) * e).sum(-1) / (e * e).sum(-1).clamp(min=1e-12)).clamp(0.0, 1.0)
    return (p - a - h[..., None] * e).norm(dim=-1)


def point_triangle_distance(p: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """Exact distances [...] from points [..., 3] to triangles [..., 3, 3] (broadcast)."""
    a, b, c = tri[..., 0, :], tri[..., 1, :], tri[..., 2, :]
    normal = torch.linalg.cross(b - a, c - a, dim=-1)
    area2 = (normal * normal).sum(-1).clamp(min=1e-20)
    height = ((p - a) * normal).sum(-1) / area2.sqrt()
    foot = p - (height / area2.sqrt())[..., None] * normal
    # barycentric coordinates of the foot from sub-triangle areas (signed along the normal)
    wa = (torch.linalg.cross(b - foot, c - foot, dim=-1) * normal).sum(-1) / area2
    wb = (torch.linalg.cross(c - foot, a - foot, dim=-1) * normal).sum(-1) / area2
    wc = 1.0 - wa - wb
    inside = (wa >= 0) & (wb >= 0) & (wc >= 0)
    edges = torch.stack(
        [_segment_distance(p, a, b), _segment_distance(p, b, c), _segment_distance(p, c, a)]
    ).amin(0)
    return torch.where(inside, height.abs(), edges)


def points_to_mesh_distance(
    points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor, candidates: int = 16, chunk: int = 2048
) -> torch.Tensor:
    """Distances [N] from points to a mesh: exact point-triangle distance over the nearest face centroids."""
    tri = vertices[faces]
    centroids = tri.mean(1)
    k = min(candidates, faces.shape[0])
    out = []
    for start in range(0, points.shape[0], chunk):
        p = points[start : start + chunk]
        near = torch.cdist(p, centroids).topk(k, largest=False).indices  # [n, k]
        out.append(point_triangle_distance(p[:, None, :], tri[near]).amin(1))
    return torch.cat(out)


def chamfer_to_shape(
    vertices: torch.Tensor, faces: torch.Tensor, shape: str | int, n: int = 10000, seed: int = 0
) -> float:
    """Symmetric chamfer distance (mean of both directions, world units) of a mesh to a library shape.

    Mesh -> truth uses the exact SDF; truth -> mesh the exact distance to the mesh's triangles, so a
    perfect mesh scores ~0 rather than the sampling spacing.
    """
    vertices, faces = torch.as_tensor(vertices, dtype=torch.float32), torch.as_tensor(faces, dtype=torch.long)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(
            f"mesh must be vertices [V, 3] and faces [F, 3], got {tuple(vertices.shape)}, "
            f"{tuple(faces.shape)}"
        )
    gen = torch.Generator().manual_seed(seed)
    mesh_pts = mesh_surface_samples(vertices, faces, n, gen)
    to_truth = shape_sdf(shape, mesh_pts).abs().mean()
    truth_pts = surface_samples(shape, n, gen)
    to_mesh = points_to_mesh_distance(truth_pts, vertices, faces).mean()
    return float(0.5 * (to_truth + to_mesh))


# -- features ---------------------------------------------------------------------------------------
def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(m)
    return (vecs * vals.clamp(min=0.0).sqrt()) @ vecs.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a [N, F] and b [M, F] (FID's formula)."""
    a, b = a.double(), b.double()
    mu = (a.mean(0) - b.mean(0)).pow(2).sum()
    ca = torch.cov(a.T) if a.shape[0] > 1 else torch.zeros(a.shape[1], a.shape[1], dtype=a.dtype)
    cb = torch.cov(b.T) if b.shape[0] > 1 else torch.zeros(b.shape[1], b.shape[1], dtype=b.dtype)
    root_a = _sqrt_psd(ca)
    cross = torch.linalg.eigvalsh(root_a @ cb @ root_a).clamp(min=0.0).sqrt().sum()
    return float(mu + ca.trace() + cb.trace() - 2.0 * cross)
