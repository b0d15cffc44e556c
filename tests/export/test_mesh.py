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
