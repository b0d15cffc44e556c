"""The Gaussian representation's hooks for the run driver (:mod:`dreampropeller.systems.run`):
validation, the process (text or image), the memory check, exports and evaluation assets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dreampropeller.export.errors import ExportError
from dreampropeller.export.gaussians import gaussian_fields, gaussian_render_fn, write_gaussian_ply
from dreampropeller.export.mesh import extract_mesh, sample_grid, write_glb, write_obj
from dreampropeller.export.video import write_turntable, write_views_png
from dreampropeller.guidance.prior import DiffusionPrior
from dreampropeller.picard.process import State
from dreampropeller.scene.cameras import Cameras
from dreampropeller.systems.config import ConfigError
from dreampropeller.systems.gaussians import GaussianTextTo3D, check_memory, validate_gaussian_config
from dreampropeller.systems.image_to_3d import GaussianImageTo3D, load_reference_image
from dreampropeller.systems.text_to_3d import TextTo3DConfig


def validate_gaussian_run(cfg: TextTo3DConfig) -> None:
    """Checks before anything is loaded or written: the ``gaussians`` section and the reference image."""
    validate_gaussian_config(cfg)
    if getattr(cfg, "guidance", "sds") != "sds":
        raise ConfigError(f"Gaussian runs use SDS guidance; got guidance={cfg.guidance!r}: set guidance=sds")
    if cfg.image.path:
        load_reference_image(cfg.image.path, cfg.render.height, cfg.render.width)


def make_gaussian_process(
    cfg: TextTo3DConfig, prior: DiffusionPrior, device: torch.device | str = "cpu"
) -> GaussianTextTo3D:
    """Image-to-3D when ``cfg.image.path`` is set, else text-to-3D."""
    if cfg.image.path:
        return GaussianImageTo3D(cfg, prior, device)
    return GaussianTextTo3D(cfg, prior, device)


def check_gaussian_memory(cfg: TextTo3DConfig, window: int, device: torch.device) -> int:
    """:func:`check_memory` with the reference view counted for image runs."""
    return check_memory(cfg, window, device, extra_views=1 if cfg.image.path else 0)


def gaussian_mesh(cfg: TextTo3DConfig, state: State):
    """Marching cubes of the Gaussians' density field, with vertex colours."""
    density, color = gaussian_fields(state, cfg.gaussians.color_mode)
    bound, res, level = cfg.gaussians.export_bound, cfg.export.mesh_resolution, cfg.export.mesh_threshold
    with torch.no_grad():
        try:
            return extract_mesh(density, color, bound=bound, resolution=res, threshold=level, chunk=16384)
        except ExportError:
            if level != "auto":
                raise
        # a faint set never reaches 50% opacity: fall back to half its peak density
        peak = float(sample_grid(density, bound, min(res, 32), chunk=16384).max())
        if not peak > 0:
            raise ExportError("the Gaussians have no density inside the export bound; nothing to mesh")
        return extract_mesh(density, color, bound=bound, resolution=res, threshold=0.5 * peak, chunk=16384)


def export_gaussian_run(state: State, out: Path, cfg: TextTo3DConfig) -> None:
    """``gaussians.ply`` (3DGS viewers), turntable video, 4-view PNG and a vertex-coloured mesh."""
    e, g = cfg.export, cfg.gaussians
    write_gaussian_ply(state, out / "gaussians.ply", g.color_mode)
    render = gaussian_render_fn(state, e.video_size, e.video_size, g.color_mode, backend=g.backend)
    view = {"elevation": e.elevation, "distance": e.distance, "fovy": e.fovy}
    write_turntable(
        render, out / "turntable.mp4", n_views=e.turntable_views, fps=e.fps, progress=False, **view
    )
    write_views_png(render, out / "views.png", n=4, **view)
    mesh = gaussian_mesh(cfg, state)
    write_obj(mesh, out / "mesh.obj")
    write_glb(mesh, out / "mesh.glb")


def gaussian_assets(
    cfg: TextTo3DConfig, state: State
) -> tuple[Callable[[Cameras], tuple[torch.Tensor, torch.Tensor]], tuple[Any, Any]]:
    """``(render_fn, (vertices, faces))`` for evaluation: render_fn(cameras, resolution=64) ->
    (rgb [B, 3, H, W] on white, alpha [B, 1, H, W]); the mesh in the canonical z-up frame."""
    params = {k: v.detach() for k, v in state.items() if k.startswith("gaussians.")}
    g = cfg.gaussians

    def render_fn(cameras: Cameras, resolution: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        from dreampropeller.scene.gaussian_raster import rasterize_gaussians

        with torch.no_grad():
            out = rasterize_gaussians(
                params, cameras.to(params["gaussians.means"].device), resolution, resolution, 1.0,
                backend=g.backend, color_mode=g.color_mode,
            )  # fmt: skip
        return out["rgb"].permute(0, 3, 1, 2), out["alpha"].permute(0, 3, 1, 2)

    mesh = gaussian_mesh(cfg, state)
    return render_fn, (mesh.vertices, mesh.faces)
