"""The Kuhn tetrahedral grid: positive volumes that fill the cube, conforming shared faces."""

import pytest
import torch

from dreampropeller.scene.hashgrid import SceneError
from dreampropeller.scene.tetgrid import cell_size, kuhn_offsets, tet_grid, tet_volumes


def oriented_faces(tets):
    """The 4 faces of each tetrahedron, wound outward for a positively oriented one: [4T, 3]."""
    a, b, c, d = tets.unbind(1)
    return torch.cat([torch.stack(f, 1) for f in ((b, c, d), (a, d, c), (a, b, d), (a, c, b))])


def test_kuhn_cell_is_six_positive_tets_filling_the_unit_cube():
    offsets = kuhn_offsets().double()
    vol = torch.linalg.det(offsets[:, 1:] - offsets[:, :1]) / 6
    assert torch.allclose(vol, torch.full((6,), 1 / 6, dtype=torch.float64))


@pytest.mark.parametrize("n", [1, 3, 4])
def test_volumes_are_positive_and_sum_to_the_cube(n):
    radius = 0.7
    verts, tets = tet_grid(n, radius, dtype=torch.float64)
    assert verts.shape == ((n + 1) ** 3, 3) and tets.shape == (6 * n**3, 4)
    vol = tet_volumes(verts, tets)
    assert float(vol.min()) > 0
    assert torch.allclose(vol, torch.full_like(vol, cell_size(n, radius) ** 3 / 6))
    assert abs(float(vol.sum()) - (2 * radius) ** 3) < 1e-12
    assert float(verts.min()) == -radius and float(verts.max()) == radius


@pytest.mark.parametrize("n", [2, 3])
def test_shared_faces_are_consistent(n):
    """Every inner triangle belongs to exactly two tetrahedra, wound oppositely; the rest tile the
    cube's boundary (2 triangles per boundary square)."""
    _, tets = tet_grid(n)
    faces = oriented_faces(tets)
    key = faces.sort(1).values
    _, inverse, counts = torch.unique(key, dim=0, return_inverse=True, return_counts=True)
    assert set(counts.tolist()) <= {1, 2}
    assert int((counts == 1).sum()) == 6 * 2 * n * n

    # the two copies of an inner face: same cyclic order reversed
    def cyclic(f):
        r = int(torch.argmin(f))
        return tuple(f.roll(-r).tolist())

    for u in (counts == 2).nonzero().squeeze(1).tolist()[:200]:
        f1, f2 = faces[inverse == u]
        assert cyclic(f1) == cyclic(f2.flip(0))


def test_bad_input():
    with pytest.raises(SceneError):
        tet_grid(0)
    with pytest.raises(SceneError):
        tet_grid(4, radius=0.0)
