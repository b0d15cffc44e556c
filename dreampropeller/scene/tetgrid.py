"""A regular tetrahedral grid, generated in torch (no tet file to download): the domain of DMTet.

The cube ``[-radius, radius]^3`` is cut into ``N^3`` cells; every cell is split into 6 tetrahedra by
the Kuhn (Freudenthal) rule: one tetrahedron per permutation ``(a, b, c)`` of the axes, the path
``v0 -> v0 + e_a -> v0 + e_a + e_b -> v0 + e_a + e_b + e_c`` from the cell's low corner to its high
corner. All of them share the cell's main diagonal, and neighbouring cells cut their common square
along the same diagonal, so the tetrahedra form a conforming mesh (every inner triangle is shared by
exactly two tetrahedra). The signed volume of a Kuhn tetrahedron is ``sign(permutation) * h^3 / 6``;
odd permutations get two vertices swapped, so every tetrahedron is positively oriented
(``det(v1 - v0, v2 - v0, v3 - v0) > 0``).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from dreampropeller.scene.hashgrid import SceneError


def _permutation_sign(perm: tuple[int, ...]) -> int:
    sign = 1
    p = list(perm)
    for i in range(len(p)):
        while p[i] != i:
            j = p[i]
            p[i], p[j] = p[j], p[i]
            sign = -sign
    return sign


def kuhn_offsets() -> Tensor:
    """The 6 tetrahedra of the unit cell as corner offsets [6, 4, 3] (0/1), positively oriented."""
    tets = []
    for perm in itertools.permutations(range(3)):
        corner = [0, 0, 0]
        path = [tuple(corner)]
        for axis in perm:
            corner[axis] = 1
            path.append(tuple(corner))
        if _permutation_sign(perm) < 0:
            path[2], path[3] = path[3], path[2]
        tets.append(path)
    return torch.tensor(tets, dtype=torch.long)


def tet_grid(
    resolution: int, radius: float = 1.0, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """``(vertices [(N + 1)^3, 3], tets [6 N^3, 4])`` of the Kuhn grid of ``N = resolution`` cells per
    axis over ``[-radius, radius]^3``. Vertex ``(i, j, k)`` has index ``(i * (N + 1) + j) * (N + 1) + k``."""
    n = int(resolution)
    if n < 1:
        raise SceneError(f"tet grid resolution must be >= 1, got {resolution}")
    if not radius > 0:
        raise SceneError(f"tet grid radius must be > 0, got {radius}")
    side = n + 1
    axis = torch.linspace(-radius, radius, side, dtype=dtype)
    verts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    cells = torch.stack(torch.meshgrid(*[torch.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 1, 1, 3)
    corners = cells + kuhn_offsets()[None]  # [C, 6, 4, 3]
    idx = (corners[..., 0] * side + corners[..., 1]) * side + corners[..., 2]
    return verts, idx.reshape(-1, 4)


def cell_size(resolution: int, radius: float) -> float:
    """Edge length of a grid cell."""
    return 2.0 * float(radius) / int(resolution)


def tet_volumes(vertices: Tensor, tets: Tensor) -> Tensor:
    """Signed volumes [T] (positive for positively oriented tetrahedra)."""
    v = vertices[tets]
    return torch.linalg.det(v[:, 1:] - v[:, :1]) / 6.0
