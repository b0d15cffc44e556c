"""Differentiable marching tetrahedra (DMTet, Shen et al. 2021): the zero level set of per-vertex SDF
values on a tetrahedral grid as a triangle mesh, differentiable in the SDF values and vertex positions.

Convention: the SDF is negative inside. A tetrahedron whose four vertices are not all on one side is
cut by the plane of its linearly interpolated SDF: one triangle when one vertex is alone on its side,
a quad (two triangles) when two and two. The mesh vertices lie on the crossed grid edges at the SDF's
zero crossing, ``p = p_a + s_a / (s_a - s_b) (p_b - p_a)``, one per crossed edge (edges shared by
several tetrahedra make one vertex, so the mesh is closed wherever the surface does not leave the
grid). The choice of case and the topology are discrete (no gradient); the positions are smooth.

Winding. The 16-case table is built here from a reference tetrahedron: each case's triangles are
wound so that their normal points from the inside vertices to the outside ones. An orientation-
preserving affine map keeps that relation, so on a grid of positively oriented tetrahedra
(:mod:`.tetgrid`) every face faces outward and neighbouring faces agree (each edge is used once in
each direction). Deforming vertices can invert a tetrahedron; the winding stays combinatorially
consistent (it is the boundary of the inside region), only the surface folds there.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dreampropeller.scene.hashgrid import SceneError

#: The 6 edges of a tetrahedron as pairs of its local vertices.
TET_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


def _edge(a: int, b: int) -> int:
    return TET_EDGES.index((min(a, b), max(a, b)))


def _build_table() -> tuple[Tensor, Tensor]:
    """(triangles [16, 2, 3] as local edge indices (-1 = none), triangle counts [16])."""
    ref = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
    table = torch.full((16, 2, 3), -1, dtype=torch.long)
    counts = torch.zeros(16, dtype=torch.long)
    for code in range(16):
        inside = [k for k in range(4) if code >> k & 1]
        outside = [k for k in range(4) if not code >> k & 1]
        if len(inside) in (1, 3):
            lone = inside[0] if len(inside) == 1 else outside[0]
            tris = [[_edge(lone, o) for o in range(4) if o != lone]]
        elif len(inside) == 2:
            (a, b), (c, d) = inside, outside
            quad = [_edge(a, c), _edge(a, d), _edge(b, d), _edge(b, c)]
            tris = [[quad[0], quad[1], quad[2]], [quad[0], quad[2], quad[3]]]
        else:
            continue
        out_dir = ref[outside].mean(0) - ref[inside].mean(0)
        for i, tri in enumerate(tris):
            p = torch.stack([ref[list(TET_EDGES[e])].mean(0) for e in tri])
            normal = torch.linalg.cross(p[1] - p[0], p[2] - p[0])
            if float(normal @ out_dir) < 0:
                tri = [tri[0], tri[2], tri[1]]
            table[code, i] = torch.tensor(tri)
        counts[code] = len(tris)
    return table, counts


TRIANGLE_TABLE, TRIANGLE_COUNT = _build_table()


def marching_tets(vertices: Tensor, sdf: Tensor, tets: Tensor) -> tuple[Tensor, Tensor]:
    """``(mesh vertices [M, 3], faces [F, 3] long)`` of the zero level set of ``sdf`` [V] on the
    tetrahedra ``tets`` [T, 4] with corners ``vertices`` [V, 3] (positively oriented tetrahedra give
    outward faces). Differentiable in ``vertices`` and ``sdf``; empty tensors when nothing crosses."""
    if vertices.dim() != 2 or vertices.shape[1] != 3:
        raise SceneError(f"vertices must be [V, 3], got {tuple(vertices.shape)}")
    if sdf.shape != vertices.shape[:1]:
        raise SceneError(f"sdf must be [V={vertices.shape[0]}], got {tuple(sdf.shape)}")
    if tets.dim() != 2 or tets.shape[1] != 4 or tets.is_floating_point():
        raise SceneError(f"tets must be an integer tensor [T, 4], got {tuple(tets.shape)}")
    dev = vertices.device
    nv = vertices.shape[0]
    with torch.no_grad():
        inside = sdf.detach() < 0
        occ = inside[tets]  # [T, 4]
        n_in = occ.sum(1)
        cut = (n_in > 0) & (n_in < 4)
        tc = tets[cut]
    if tc.shape[0] == 0:  # still connected to the inputs, so a loss of it has a (zero) gradient
        return vertices.new_zeros(0, 3) + 0 * sdf.sum(), torch.zeros(0, 3, dtype=torch.long, device=dev)
    with torch.no_grad():
        code = (occ[cut].long() << torch.arange(4, device=dev)).sum(1)
        pairs = tc[:, torch.tensor(TET_EDGES, device=dev)]  # [Tc, 6, 2]
        lo, hi = pairs.amin(-1), pairs.amax(-1)
        crossed = inside[lo] != inside[hi]
        keys = lo * nv + hi
        uniq, inverse = torch.unique(keys[crossed], return_inverse=True)
        local = torch.full(crossed.shape, -1, dtype=torch.long, device=dev)
        local[crossed] = inverse
        ea, eb = torch.div(uniq, nv, rounding_mode="floor"), uniq % nv
        table = TRIANGLE_TABLE.to(dev)[code]  # [Tc, 2, 3]
        used = TRIANGLE_COUNT.to(dev)[code]
        keep = torch.arange(2, device=dev)[None] < used[:, None]  # [Tc, 2]
        rows = torch.arange(tc.shape[0], device=dev)[:, None, None].expand_as(table)
        faces = local[rows, table.clamp_min(0)][keep]  # [F, 3]
    sa, sb = sdf[ea], sdf[eb]
    w = (sa / (sa - sb))[:, None]
    pa, pb = vertices[ea], vertices[eb]
    return pa + w * (pb - pa), faces


def signed_volume(vertices: Tensor, faces: Tensor) -> Tensor:
    """Volume enclosed by a closed mesh (positive when its faces face outward)."""
    v = vertices[faces]
    return (v[:, 0] * torch.linalg.cross(v[:, 1], v[:, 2])).sum() / 6.0


def face_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Unnormalized face normals [F, 3] (length = twice the area)."""
    v = vertices[faces]
    return torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Unit vertex normals [M, 3]: the area-weighted mean of the adjacent faces' normals."""
    fn = face_normals(vertices, faces)
    acc = vertices.new_zeros(vertices.shape).index_add(0, faces.reshape(-1), fn.repeat_interleave(3, 0))
    return torch.nn.functional.normalize(acc, dim=-1, eps=1e-12)


def edge_face_pairs(faces: Tensor) -> tuple[Tensor, Tensor]:
    """``(edges [E, 2], adjacent faces [E', 2])``: the mesh's unique edges and, for every edge with
    exactly two faces, those two faces."""
    if faces.shape[0] == 0:
        empty = faces.new_zeros(0, 2)
        return empty, empty
    nf = faces.shape[0]
    e = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    e = torch.stack([e.amin(1), e.amax(1)], 1)
    n = int(faces.max()) + 1
    key = e[:, 0] * n + e[:, 1]
    order = torch.argsort(key, stable=True)
    uniq, counts = torch.unique_consecutive(key[order], return_counts=True)
    edges = torch.stack([torch.div(uniq, n, rounding_mode="floor"), uniq % n], 1)
    first = torch.cumsum(counts, 0) - counts
    two = first[counts == 2]
    face_of = torch.arange(nf, device=faces.device).repeat_interleave(3)
    return edges, torch.stack([face_of[order[two]], face_of[order[two + 1]]], 1)
