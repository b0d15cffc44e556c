"""Differentiable marching tetrahedra: closed, outward meshes of an SDF, gradients that match finite
differences, and every one of the 16 cases wound outward."""

import math

import pytest
import torch

from dreampropeller.scene.hashgrid import SceneError
from dreampropeller.scene.marching_tets import (
    TRIANGLE_COUNT,
    edge_face_pairs,
    face_normals,
    marching_tets,
    signed_volume,
    vertex_normals,
)
from dreampropeller.scene.tetgrid import tet_grid

F64 = torch.float64


def directed_edges(faces):
    return faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)


def assert_closed_and_consistent(faces):
    """Every edge has exactly two faces, which use it in opposite directions."""
    edges, pairs = edge_face_pairs(faces)
    assert edges.shape[0] == pairs.shape[0] == faces.shape[0] * 3 // 2
    d = directed_edges(faces)
    key = d[:, 0] * (int(faces.max()) + 1) + d[:, 1]
    assert torch.unique(key).numel() == key.numel()  # no directed edge twice: consistent winding


@pytest.mark.parametrize("radius", [0.43, 0.61])
def test_sphere_mesh_is_watertight_outward_and_has_the_spheres_volume(radius):
    verts, tets = tet_grid(20, 0.8, dtype=F64)
    mv, mf = marching_tets(verts, verts.norm(dim=-1) - radius, tets)
    assert mf.shape[0] > 1000
    assert_closed_and_consistent(mf)
    vol = float(signed_volume(mv, mf))
    exact = 4 / 3 * math.pi * radius**3
    assert vol > 0 and abs(vol - exact) / exact < 0.02
    # every face normal points away from the centre (outward)
    centres = mv[mf].mean(1)
    assert float(((face_normals(mv, mf) * centres).sum(-1) > 0).float().mean()) == 1.0
    n = vertex_normals(mv, mf)
    assert float(torch.nn.functional.cosine_similarity(n, mv).min()) > 0.95


def test_two_pieces_and_a_box_are_closed():
    verts, tets = tet_grid(12, 1.0, dtype=F64)
    a = (verts - verts.new_tensor([0.45, 0, 0])).norm(dim=-1) - 0.3
    b = (verts + verts.new_tensor([0.45, 0, 0])).norm(dim=-1) - 0.3
    mv, mf = marching_tets(verts, torch.minimum(a, b), tets)
    assert_closed_and_consistent(mf)
    q = verts.abs() - 0.5
    box = q.clamp_min(0).norm(dim=-1) + q.amax(-1).clamp_max(0)
    mv, mf = marching_tets(verts, box + 1e-3, tets)  # off the grid planes: no degenerate faces
    assert_closed_and_consistent(mf)
    assert abs(float(signed_volume(mv, mf)) - 1.0) < 0.1  # edges chamfered by one cell


def test_every_case_of_one_tet_is_wound_outward():
    verts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=F64) * 2 - 0.3
    tets = torch.tensor([[0, 1, 2, 3]])
    g = torch.Generator().manual_seed(0)
    for code in range(16):
        inside = torch.tensor([code >> k & 1 for k in range(4)], dtype=torch.bool)
        mag = 0.2 + torch.rand(4, generator=g, dtype=F64)
        sdf = torch.where(inside, -mag, mag)
        mv, mf = marching_tets(verts, sdf, tets)
        assert mf.shape[0] == int(TRIANGLE_COUNT[code])
        if mf.shape[0] == 0:
            continue
        out_dir = verts[~inside].mean(0) - verts[inside].mean(0)
        assert float((face_normals(mv, mf) @ out_dir).min()) > 0, code
        # vertices on the zero crossing of the linear SDF
        system = torch.cat([verts.T, torch.ones(1, 4, dtype=F64)])
        bary = torch.linalg.solve(system, torch.cat([mv.T, torch.ones(1, len(mv), dtype=F64)]))
        assert float((sdf @ bary).abs().max()) < 1e-12


def test_vertex_positions_match_finite_differences():
    verts, tets = tet_grid(3, 1.0, dtype=F64)
    g = torch.Generator().manual_seed(1)
    base = verts.norm(dim=-1) - 0.8
    sdf = torch.where(base.abs() < 0.05, base.sign() * 0.05, base) + 0.01 * torch.randn(
        len(verts), generator=g, dtype=F64
    )
    deform = 0.05 * torch.randn(verts.shape, generator=g, dtype=F64)
    faces = marching_tets(verts, sdf, tets)[1]
    assert faces.shape[0] > 10

    def positions(s, d):
        mv, mf = marching_tets(verts + d, s, tets)
        assert torch.equal(mf, faces)  # the topology stays put under the probes
        return mv

    s = sdf.clone().requires_grad_(True)
    d = deform.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(positions, (s, d), eps=1e-6, atol=1e-6)


def test_empty_and_bad_input():
    verts, tets = tet_grid(2)
    sdf = torch.ones(len(verts), requires_grad=True)
    mv, mf = marching_tets(verts, sdf, tets)
    assert mv.shape == (0, 3) and mf.shape == (0, 3)
    mv.sum().backward()  # an empty mesh still has a (zero) gradient path
    assert sdf.grad is not None and float(sdf.grad.abs().sum()) == 0
    with pytest.raises(SceneError):
        marching_tets(verts, sdf[:-1], tets)
    with pytest.raises(SceneError):
        marching_tets(verts, sdf, tets.float())
