"""Marching cubes on a known sphere field, auto threshold, writers."""

import numpy as np
import pytest
import torch
import trimesh

from dreampropeller.export.errors import ExportError
from dreampropeller.export.mesh import extract_mesh, save_mesh

RADIUS = 0.6


def sphere_density(points: torch.Tensor) -> torch.Tensor:
    """A soft ball: density 50 inside ``RADIUS``, falling off smoothly over ~0.03 outside it."""
    return 50.0 * torch.sigmoid((RADIUS - points.norm(dim=-1)) / 0.01)


def red_above(points: torch.Tensor) -> torch.Tensor:
    return torch.stack([(points[:, 2] > 0).float(), torch.zeros(len(points)), torch.zeros(len(points))], -1)


@pytest.fixture(scope="module")
def sphere_mesh():
    return extract_mesh(sphere_density, red_above, bound=1.0, resolution=48)


def test_auto_threshold_sphere_is_one_watertight_component_of_the_right_radius(sphere_mesh):
    tm = trimesh.Trimesh(sphere_mesh.vertices, sphere_mesh.faces, process=True)
    assert tm.is_watertight
    assert len(tm.split(only_watertight=False)) == 1
    r = np.linalg.norm(sphere_mesh.vertices, axis=1)
    voxel = 2.0 / 47
    assert abs(r.mean() - RADIUS) < voxel and r.std() < 0.5 * voxel
    assert tm.volume > 0  # outward winding
    assert 0.0 < sphere_mesh.threshold < 50.0


def test_vertex_colours_follow_the_colour_function(sphere_mesh):
    up = sphere_mesh.vertices[:, 2] > 0.05
    down = sphere_mesh.vertices[:, 2] < -0.05
    assert np.all(sphere_mesh.colors[up, 0] == 1.0) and np.all(sphere_mesh.colors[down, 0] == 0.0)


def test_writers_round_trip(sphere_mesh, tmp_path):
    for suffix in (".obj", ".glb", ".ply"):
        path = save_mesh(sphere_mesh, tmp_path / f"m{suffix}")
        loaded = trimesh.load(path, force="mesh")
        assert len(loaded.faces) == len(sphere_mesh.faces), suffix
        # y-up: the red top half (+z in the world) is at +y in the file
        top = loaded.vertices[:, 1] > 0.05
        assert np.all(np.asarray(loaded.visual.vertex_colors)[top, 0] == 255), suffix
    first = (tmp_path / "m.obj").read_text().splitlines()[1]
    assert first.startswith("v ") and len(first.split()) == 7
    with pytest.raises(ExportError, match="format"):
        save_mesh(sphere_mesh, tmp_path / "m.stl")


def test_bad_thresholds_raise():
    with pytest.raises(ExportError, match="no surface"):
        extract_mesh(sphere_density, resolution=16, threshold=1000.0)
    with pytest.raises(ExportError, match="transparent"):
        extract_mesh(lambda p: torch.zeros(len(p)), resolution=16)
    with pytest.raises(ExportError, match="threshold"):
        extract_mesh(sphere_density, resolution=16, threshold="median")


def _components_by_search(faces: np.ndarray, n_vertices: int) -> list[set[int]]:
    """Face sets of the connected pieces, by breadth-first search over shared vertices (brute force)."""
    by_vertex: dict[int, list[int]] = {v: [] for v in range(n_vertices)}
    for f, tri in enumerate(faces):
        for v in tri:
            by_vertex[int(v)].append(f)
    seen, pieces = set(), []
    for start in range(len(faces)):
        if start in seen:
            continue
        piece, todo = set(), [start]
        while todo:
            f = todo.pop()
            if f in piece:
                continue
            piece.add(f)
            todo += [g for v in faces[f] for g in by_vertex[int(v)] if g not in piece]
        seen |= piece
        pieces.append(piece)
    return pieces


def test_connected_components_match_a_breadth_first_search():
    from dreampropeller.export.mesh import connected_components

    rng = np.random.default_rng(0)
    for _ in range(5):
        n = 60
        faces = rng.integers(0, n, size=(25, 3))  # random sparse triangles: many small pieces
        label = connected_components(faces, n)
        got = sorted(sorted(np.flatnonzero(label == k).tolist()) for k in range(label.max() + 1))
        want = sorted(sorted(p) for p in _components_by_search(faces, n))
        assert got == want


def _two_balls(small_radius: float):
    def density(points: torch.Tensor) -> torch.Tensor:
        big = 50.0 * torch.sigmoid((0.5 - points.norm(dim=-1)) / 0.01)
        floater = 50.0 * torch.sigmoid(
            (small_radius - (points - torch.tensor([0.8, 0.8, 0.8])).norm(dim=-1)) / 0.01
        )
        return big + floater

    return extract_mesh(density, red_above, bound=1.0, resolution=48, threshold=25.0)


def test_small_pieces_are_removed_and_counted():
    from dreampropeller.export.mesh import piece_fractions, remove_small_pieces

    mesh = _two_balls(0.08)
    fractions = piece_fractions(mesh)
    assert len(fractions) == 2 and fractions[1] < 0.05
    clean = remove_small_pieces(mesh, 0.05)
    assert clean.pieces_removed == 1
    assert clean.faces_removed == len(mesh.faces) - len(clean.faces) == round(fractions[1] * len(mesh.faces))
    assert np.linalg.norm(clean.vertices, axis=1).max() < 0.6  # only the big ball is left
    assert clean.faces.max() == len(clean.vertices) - 1 and len(clean.colors) == len(clean.vertices)
    tm = trimesh.Trimesh(clean.vertices, clean.faces, process=True)
    assert tm.is_watertight and len(tm.split(only_watertight=False)) == 1
    # a threshold below the floater's share keeps it; 0 keeps everything
    assert remove_small_pieces(mesh, 0.5 * fractions[1]).pieces_removed == 0
    assert remove_small_pieces(mesh, 0.0) is mesh
    with pytest.raises(ExportError, match="min_piece_fraction"):
        remove_small_pieces(mesh, 1.0)


def test_the_largest_piece_always_stays():
    from dreampropeller.export.mesh import remove_small_pieces

    mesh = _two_balls(0.3)  # two pieces of comparable size: neither reaches 90% of the faces
    clean = remove_small_pieces(mesh, 0.9)
    assert clean.pieces_removed == 1 and len(clean.faces) > 0.5 * len(mesh.faces)


def test_a_hollow_inside_is_filled_so_no_inner_surface_is_exported():
    from dreampropeller.export.mesh import fill_cavities, piece_fractions

    def shell(points: torch.Tensor) -> torch.Tensor:  # a ball of radius 0.6 with a closed hollow of 0.3
        r = points.norm(dim=-1)
        return 50.0 * torch.sigmoid((RADIUS - r) / 0.01) * torch.sigmoid((r - 0.3) / 0.01)

    hollow = extract_mesh(shell, bound=1.0, resolution=48, threshold=25.0, cavities=True)
    assert len(piece_fractions(hollow)) == 2  # the outer skin and the hollow's inner surface
    solid = extract_mesh(shell, bound=1.0, resolution=48, threshold=25.0)
    assert len(piece_fractions(solid)) == 1
    r = np.linalg.norm(solid.vertices, axis=1)
    assert r.min() > RADIUS - 2.0 / 47  # only the outer skin is left
    # an open dent (reachable from outside) is not a cavity: a 4^3 grid with one enclosed empty cell
    grid = np.ones((5, 5, 5))
    grid[0], grid[-1], grid[:, 0], grid[:, -1], grid[:, :, 0], grid[:, :, -1] = 0, 0, 0, 0, 0, 0
    grid[2, 2, 2] = 0.0
    filled, count = fill_cavities(grid, 0.5)
    assert count == 1 and filled[2, 2, 2] > 0.5
    grid[2, 2, 1] = 0.0  # open a tunnel from the cell to the border layer
    assert fill_cavities(grid, 0.5)[1] == 0
