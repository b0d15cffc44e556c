"""`dreampropeller generate --representation sdf` end to end on a tiny field, and the starting sphere's
mesh: marching cubes of the zero level set at the configured radius."""

import json

import numpy as np
import pytest
import torch

from dreampropeller.cli import main
from dreampropeller.config.loading import build, merge_config
from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.runs.assets import SdfAsset, asset_of
from dreampropeller.runs.loading import load_run
from dreampropeller.scene.cameras import cameras_from_spherical
from dreampropeller.scene.sdf import init_sdf_params

from .conftest import TINY_OVERRIDES

SDF_TINY = [
    "sdf.n_levels=4",
    "sdf.log2_hashmap_size=10",
    "sdf.finest_resolution=64",
    "sdf.levels_start=2",
    "sdf.levels_every=2",
]


def sdf_config(*extra):
    data = merge_config(
        TextTo3DConfig(),
        overrides=["representation=sdf", "prompt=a red cube", *SDF_TINY, *extra],
        free=["optimizer"],
    )
    return build(TextTo3DConfig, data)


@pytest.mark.parametrize("radius", [0.5, 0.3])
def test_the_starting_sphere_meshes_at_its_radius(radius):
    torch.set_num_threads(1)
    cfg = sdf_config(f"sdf.init_radius={radius}", "export.mesh_resolution=48")
    state = init_sdf_params(cfg.sdf.shape, torch.Generator().manual_seed(0))
    asset = asset_of(cfg, state, 0)
    assert isinstance(asset, SdfAsset)
    mesh = asset.mesh()
    r = np.linalg.norm(mesh.vertices, axis=1)
    voxel = 2 * cfg.sdf.radius / 47
    assert abs(float(r.mean()) - radius) < 0.05 * voxel  # marching cubes of |x| - r: exact up to O(voxel^2)
    assert float(np.abs(r - radius).max()) < 0.1 * voxel
    # closed and outward: the enclosed volume is the ball's (4/3 pi r^3) within the tessellation error
    a, b, c = (mesh.vertices[mesh.faces[:, i]].astype(np.float64) for i in range(3))
    volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6
    assert volume == pytest.approx(4 / 3 * np.pi * radius**3, rel=0.03)


@pytest.mark.slow
def test_generate_sdf_writes_a_complete_run(tmp_path, random_prior_dir):
    out = tmp_path / "sdf"
    code = main(
        [
            "generate",
            "a red cube",
            "--out",
            str(out),
            "--representation",
            "sdf",
            "--steps",
            "3",
            "--window",
            "2",
            "--quiet",
            "--prior-path",
            str(random_prior_dir),
            *TINY_OVERRIDES,
            *SDF_TINY,
        ]
    )
    assert code == 0
    for name in ("turntable.mp4", "views.png", "mesh.obj", "mesh.glb", "metrics.json", "eval.json"):
        assert (out / name).is_file(), name
    run = load_run(out)
    assert run.cfg.representation == "sdf" and run.step == 3
    asset = run.asset
    assert isinstance(asset, SdfAsset)
    cams = cameras_from_spherical(torch.tensor([15.0]), torch.tensor([0.0]), 2.0, 50.0)
    rgb, alpha = asset.render_fn(24, 16)(cams)
    assert rgb.shape == (1, 24, 24, 3) and alpha.shape == (1, 24, 24, 1) and float(alpha.sum()) > 20
    mesh = asset.mesh()
    assert len(mesh.faces) > 0 and np.all((mesh.colors >= 0) & (mesh.colors <= 1))
    scores = json.loads((out / "eval.json").read_text())
    assert 0 <= scores["silhouette_iou"] <= 1 and "chamfer" in scores
    assert json.loads((out / "metrics.json").read_text())["mesh"]["faces"] == len(mesh.faces)
