"""``write_outputs(asset, out, cfg)``: every file a finished run writes, the same for every
representation: its native file (``gaussians.ply``), ``turntable.mp4``, ``views.png``, ``mesh.obj``
and ``mesh.glb``."""

from __future__ import annotations

from pathlib import Path

import torch

from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.export.mesh import Mesh, write_glb, write_obj
from dreampropeller.export.video import write_turntable, write_views_png
from dreampropeller.runs.assets import Asset


def write_outputs(asset: Asset, out: Path, cfg: TextTo3DConfig) -> Mesh:
    """Write the exports of ``asset`` into the run directory ``out`` (settings: ``cfg.export``);
    returns the exported mesh (for its report and scores, so nothing extracts it again)."""
    e = cfg.export
    asset.write_native(out)
    render = asset.render_fn(e.video_size, e.video_samples, skip_empty=True)
    view = {"elevation": e.elevation, "distance": e.distance, "fovy": e.fovy}
    with torch.no_grad():
        write_turntable(
            render, out / "turntable.mp4", n_views=e.turntable_views, fps=e.fps, progress=False, **view
        )
        write_views_png(render, out / "views.png", n=4, **view)
        mesh = asset.mesh()
    write_obj(mesh, out / "mesh.obj")
    write_glb(mesh, out / "mesh.glb")
    return mesh
