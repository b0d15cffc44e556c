"""`dreampropeller generate --representation dmtet` end to end on a tiny grid, and `--init-from`: a DMTet
that starts from a finished NeRF run's isosurface (Magic3D's refine stage)."""

import json

import numpy as np
import pytest
import torch

from dreampropeller.cli import main
from dreampropeller.config.loading import ConfigError, build, merge_config
from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.export.fields import nerf_density_fn
from dreampropeller.runs.assets import DmtetAsset, NerfAsset
from dreampropeller.runs.driver import run_text_to_3d
from dreampropeller.runs.loading import dmtet_init_sdf, load_run
from dreampropeller.scene.cameras import cameras_from_spherical
from dreampropeller.scene.tetgrid import tet_grid

from .conftest import TINY_OVERRIDES

DMTET_TINY = [
    "dmtet.resolution=10",
    "dmtet.log2_hashmap_size=10",
    "dmtet.n_levels=2",
    "dmtet.finest_resolution=32",
    "dmtet.lambda_normal_consistency=10",
]


@pytest.fixture(scope="module")
def nerf_run(tmp_path_factory, random_prior_dir):
    """A finished (2-step, export-free) NeRF run: its density is still the starting blob."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("nerf") / "run"
    data = merge_config(
        TextTo3DConfig(),
        overrides=[*TINY_OVERRIDES, "prompt=a red cube", "steps=2", f"prior_path={random_prior_dir}"],
        free=["optimizer"],
    )
    run_text_to_3d(build(TextTo3DConfig, data), out, progress=False, exports=False)
    return out


def dmtet_config(*extra):
    data = merge_config(
        TextTo3DConfig(), overrides=["representation=dmtet", *DMTET_TINY, *extra], free=["optimizer"]
    )
    return build(TextTo3DConfig, data)


def test_init_from_a_nerf_run_follows_its_density(nerf_run):
    cfg = dmtet_config(f"dmtet.init_from={nerf_run}", "dmtet.init_level=5.0")
    sdf = dmtet_init_sdf(cfg)
    verts, _ = tet_grid(cfg.dmtet.resolution, cfg.dmtet.radius)
    nerf = load_run(nerf_run).asset
    assert isinstance(nerf, NerfAsset)
    density = nerf_density_fn(nerf.params, load_run(nerf_run).cfg.nerf, nerf.levels)(verts)
    n = cfg.dmtet.resolution + 1
    border = torch.zeros(n, n, n, dtype=torch.bool)
    border[[0, -1]] = border[:, [0, -1]] = border[:, :, [0, -1]] = True
    inner = ~border.reshape(-1)
    assert torch.equal((sdf < 0)[inner], (density > 5.0)[inner])
    assert bool((sdf[~inner] > 0).all())  # the border stays outside: the surface closes
    assert 0 < int((sdf < 0).sum()) < len(sdf)
    auto = dmtet_init_sdf(dmtet_config(f"dmtet.init_from={nerf_run}"))  # the export's own level
    assert 0 < int((auto < 0).sum()) < len(auto)
    assert dmtet_init_sdf(dmtet_config()) is None
    with pytest.raises(ConfigError, match="no density above"):
        dmtet_init_sdf(dmtet_config(f"dmtet.init_from={nerf_run}", "dmtet.init_level=1e9"))


@pytest.mark.slow
def test_generate_dmtet_from_a_nerf_run_writes_a_complete_run(tmp_path, nerf_run, random_prior_dir):
    out = tmp_path / "mesh"
    code = main(
        [
            "generate",
            "a red cube",
            "--out",
            str(out),
            "--init-from",
            str(nerf_run),
            "--steps",
            "3",
            "--window",
            "2",
            "--quiet",
            "--prior-path",
            str(random_prior_dir),
            *TINY_OVERRIDES,
            *DMTET_TINY,
        ]
    )
    assert code == 0
    for name in ("turntable.mp4", "views.png", "mesh.obj", "mesh.glb", "metrics.json", "eval.json"):
        assert (out / name).is_file(), name
    run = load_run(out)
    assert run.cfg.representation == "dmtet" and run.cfg.dmtet.init_from == str(nerf_run.resolve())
    assert run.step == 3
    asset = run.asset
    assert isinstance(asset, DmtetAsset)
    cams = cameras_from_spherical(torch.tensor([15.0]), torch.tensor([0.0]), 2.0, 50.0)
    rgb, alpha = asset.render_fn(24)(cams)
    assert rgb.shape == (1, 24, 24, 3) and alpha.shape == (1, 24, 24, 1) and float(alpha.sum()) > 20
    mesh = asset.mesh()
    assert len(mesh.faces) > 0 and mesh.colors.shape == mesh.vertices.shape
    assert np.all((mesh.colors >= 0) & (mesh.colors <= 1))
    # the obj carries the vertex colours
    line = next(x for x in (out / "mesh.obj").read_text().splitlines() if x.startswith("v "))
    assert len(line.split()) == 7
    scores = json.loads((out / "eval.json").read_text())
    assert 0 <= scores["silhouette_iou"] <= 1 and "chamfer" in scores
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mesh"]["faces"] == len(mesh.faces)


def test_init_from_refuses_a_gaussian_run(tmp_path, random_prior_dir):
    out = tmp_path / "g"
    data = merge_config(
        TextTo3DConfig(),
        overrides=[
            *TINY_OVERRIDES,
            "representation=gaussians",
            "gaussians.num_points=50",
            "prompt=a red cube",
            "steps=1",
            f"prior_path={random_prior_dir}",
        ],
        free=["optimizer"],
    )
    run_text_to_3d(build(TextTo3DConfig, data), out, progress=False, exports=False)
    with pytest.raises(ConfigError, match="NeRF"):
        dmtet_init_sdf(dmtet_config(f"dmtet.init_from={out}"))
