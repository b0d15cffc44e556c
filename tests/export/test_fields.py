"""NeRF adapters feed the generic exporters: the initial blob meshes as one ball and renders."""

import numpy as np
import torch

from dreampropeller.export.fields import nerf_color_fn, nerf_density_fn, nerf_render_fn
from dreampropeller.export.mesh import extract_mesh
from dreampropeller.export.video import write_views_png
from dreampropeller.scene.cameras import turntable
from dreampropeller.scene.nerf import NeRFConfig, init_nerf_params

SMALL = dict(n_levels=4, log2_hashmap_size=10, base_resolution=4, finest_resolution=32, density_hidden=16)


def test_blob_mesh_and_views(tmp_path):
    cfg = NeRFConfig(**SMALL)
    params = init_nerf_params(cfg, torch.Generator().manual_seed(0))
    mesh = extract_mesh(nerf_density_fn(params, cfg), nerf_color_fn(params, cfg), bound=1.0, resolution=32)
    r = np.linalg.norm(mesh.vertices, axis=1)
    # the magic3d blob: density softplus(10 (1 - r / 0.5) + mlp) is opaque up to about r = 0.5
    assert 0.3 < r.mean() < 0.6 and r.std() < 0.05
    assert mesh.colors.shape == (len(mesh.vertices), 3)
    render = nerf_render_fn(params, cfg, 8, 8, num_samples=16)
    path = write_views_png(render, tmp_path / "v.png", n=4)
    assert path.exists()
    rgb, alpha = render(turntable(2))
    assert alpha.shape == (2, 8, 8, 1)
    assert rgb.shape == (2, 8, 8, 3) and rgb[:, 4, 4].mean() < rgb[:, 0, 0].mean()  # object darker than white
