"""Exact signed distance functions of simple solids (negative inside), vectorized over points [..., 3].

Solids of revolution about the z axis reduce to a 2D signed distance in the (radial, z) half plane:
the distance to the revolved solid equals the 2D distance to its cross-section mirrored across the
axis, which is exact. The octahedron uses its eightfold symmetry and an exact point-triangle distance.
"""

from __future__ import annotations

import math

import torch


def _radial(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance from the z axis, z) of points [..., 3]."""
    return torch.linalg.vector_norm(p[..., :2], dim=-1), p[..., 2]


def _box2d(x: torch.Tensor, y: torch.Tensor, hx: float, hy: float) -> torch.Tensor:
    """Exact 2D signed distance to the rectangle |x| <= hx, |y| <= hy."""
    qx, qy = x.abs() - hx, y.abs() - hy
    outside = torch.hypot(qx.clamp(min=0.0), qy.clamp(min=0.0))
    inside = torch.maximum(qx, qy).clamp(max=0.0)
    return outside + inside


def _segment_dist2(
    px: torch.Tensor, py: torch.Tensor, a: tuple[float, float], b: tuple[float, float]
) -> torch.Tensor:
    """Squared 2D distance from points to the segment a-b."""
    ex, ey = b[0] - a[0], b[1] - a[1]
    wx, wy = px - a[0], py - a[1]
    h = ((wx * ex + wy * ey) / (ex * ex + ey * ey)).clamp(0.0, 1.0)
    return (wx - h * ex) ** 2 + (wy - h * ey) ** 2


def _polygon2d(x: torch.Tensor, y: torch.Tensor, verts: list[tuple[float, float]]) -> torch.Tensor:
    """Exact 2D signed distance to a convex polygon given counter-clockwise."""
    n = len(verts)
    dist2 = torch.stack([_segment_dist2(x, y, verts[i], verts[(i + 1) % n]) for i in range(n)]).amin(0)
    inside = torch.ones_like(x, dtype=torch.bool)
    for i in range(n):
        (ax, ay), (bx, by) = verts[i], verts[(i + 1) % n]
        inside &= (bx - ax) * (y - ay) - (by - ay) * (x - ax) >= 0.0  # left of every edge
    d = dist2.sqrt()
    return torch.where(inside, -d, d)


def sphere(p: torch.Tensor, radius: float) -> torch.Tensor:
    """Sphere centred at the origin."""
    return torch.linalg.vector_norm(p, dim=-1) - radius


def box(p: torch.Tensor, half: tuple[float, float, float]) -> torch.Tensor:
    """Axis-aligned box with half extents ``half``."""
    q = p.abs() - torch.tensor(half, dtype=p.dtype, device=p.device)
    outside = torch.linalg.vector_norm(q.clamp(min=0.0), dim=-1)
    inside = q.amax(dim=-1).clamp(max=0.0)
    return outside + inside


def cylinder(p: torch.Tensor, radius: float, half_height: float) -> torch.Tensor:
    """Capped cylinder along z."""
    r, z = _radial(p)
    return _box2d(r, z, radius, half_height)


def cone(p: torch.Tensor, radius: float, z_base: float, z_apex: float) -> torch.Tensor:
    """Solid cone along z: base disc of ``radius`` at ``z_base``, tip at ``z_apex`` (above)."""
    r, z = _radial(p)
    return _polygon2d(r, z, [(-radius, z_base), (radius, z_base), (0.0, z_apex)])


def torus(p: torch.Tensor, major: float, minor: float) -> torch.Tensor:
    """Torus lying in the xy plane (axis z)."""
    r, z = _radial(p)
    return torch.hypot(r - major, z) - minor


def octahedron(p: torch.Tensor, size: float) -> torch.Tensor:
    """Regular octahedron |x| + |y| + |z| <= size (vertices on the axes).

    By symmetry the nearest boundary point of a point in the first octant lies on the face
    x + y + z = size of that octant. Inside, the distance is the distance to that plane; outside it
    is the distance to the face triangle: the plane distance when the projection lands inside the
    triangle, else the distance to its nearest edge.
    """
    q = p.abs()
    plane = (q.sum(-1) - size) / math.sqrt(3.0)
    proj = q - plane[..., None] / math.sqrt(3.0)  # foot on the plane
    corners = torch.eye(3, dtype=p.dtype, device=p.device) * size
    in_triangle = (proj >= 0.0).all(dim=-1)  # barycentrics of this triangle are coordinates / size
    edge = torch.stack([_segment_dist3(q, corners[i], corners[(i + 1) % 3]) for i in range(3)]).amin(0)
    outside = torch.where(in_triangle, plane, edge)
    return torch.where(plane <= 0.0, plane, outside)


def _segment_dist3(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """3D distance from points [..., 3] to the segment a-b."""
    e = b - a
    w = p - a
    h = ((w * e).sum(-1) / (e * e).sum()).clamp(0.0, 1.0)
    return torch.linalg.vector_norm(w - h[..., None] * e, dim=-1)
