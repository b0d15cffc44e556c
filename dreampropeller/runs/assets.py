"""A finished state as an asset, one class per representation: what it renders (the one
:data:`~dreampropeller.scene.views.RenderFn` contract), its mesh, and its native file, if any.

Exports (:mod:`dreampropeller.runs.outputs`) and evaluation read assets only, never a process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch

from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.evaluation.asset import evaluate_asset
from dreampropeller.export.errors import ExportError
from dreampropeller.export.fields import nerf_color_fn, nerf_density_fn, nerf_render_fn
from dreampropeller.export.gaussians import gaussian_mesh, gaussian_render_fn, write_gaussian_ply
from dreampropeller.export.mesh import Mesh, extract_mesh, piece_fractions, remove_small_pieces
from dreampropeller.picard.process import State
from dreampropeller.scene.cameras import Cameras
from dreampropeller.scene.dmtet import DMTet
from dreampropeller.scene.mesh_raster import mesh_topology
from dreampropeller.scene.nerf import stack_params
from dreampropeller.scene.sdf import (
    VARIANCE,
    render_sdf_cameras,
    sdf_albedo,
    sdf_keys,
    sdf_occupancy,
    sdf_value,
)
from dreampropeller.scene.shading import mode_code
from dreampropeller.scene.uv_mesh import TEXTURE, UVMesh, render_textured, sample_texture
from dreampropeller.scene.views import RenderFn
from dreampropeller.scene.volume import occupancy_grid
from dreampropeller.systems.nerf import levels_at, nerf_keys
from dreampropeller.systems.sdf import sdf_levels_at

OCCUPANCY_LEVEL = 0.05  # density below which a cell is skipped in exports (max pixel change ~0.04)
EVAL_RESOLUTION = 64  # the evaluation views' size
EVAL_SAMPLES = 64


class Asset(Protocol):
    """What a run made, independent of how it was trained."""

    def render_fn(self, resolution: int, samples: int = EVAL_SAMPLES, skip_empty: bool = False) -> RenderFn:
        """Renders at ``resolution`` px (``samples`` per ray and empty-space skipping: NeRF only)."""
        ...

    def albedo_fn(self, resolution: int) -> RenderFn:
        """Unlit renders (the surface colour alone) at ``resolution`` px."""
        ...

    def mesh(self, colour: bool = True) -> Mesh:
        """The asset's surface in the canonical z-up frame (vertex colours when ``colour``), without the
        small disconnected pieces ``export.min_piece_fraction`` removes."""
        ...

    def write_native(self, out: Path) -> None:
        """The representation's own file in ``out`` (``gaussians.ply``), if it has one."""
        ...


class NerfAsset:
    """A NeRF's parameters at its final hash-grid level count."""

    def __init__(self, cfg: TextTo3DConfig, state: State, step: int) -> None:
        self.cfg = cfg
        self.params = {k: state[k] for k in nerf_keys(cfg.nerf)}
        self.levels = levels_at(cfg, step)

    def render_fn(
        self, resolution: int, samples: int = EVAL_SAMPLES, skip_empty: bool = False, shading: str = "diffuse"
    ) -> RenderFn:
        nerf = self.cfg.nerf
        occupancy = None
        if skip_empty:  # an occupancy grid of the final density: exports cost a fraction
            density = nerf_density_fn(self.params, nerf, self.levels)
            occupancy = occupancy_grid(density, nerf.radius, 64, OCCUPANCY_LEVEL)
        return nerf_render_fn(
            self.params,
            nerf,
            resolution,
            resolution,
            samples,
            shading=shading,
            active_levels=self.levels,
            occupancy=occupancy,
            shading_cfg=self.cfg.shading,  # lit as in training, so the object reads as the prior saw it
        )

    def albedo_fn(self, resolution: int) -> RenderFn:
        return self.render_fn(resolution, shading="albedo")

    def mesh(self, colour: bool = True) -> Mesh:
        nerf, e = self.cfg.nerf, self.cfg.export
        color_fn = nerf_color_fn(self.params, nerf, self.levels) if colour else None
        with torch.no_grad():
            mesh = extract_mesh(
                nerf_density_fn(self.params, nerf, self.levels),
                color_fn,
                bound=nerf.radius,
                resolution=e.mesh_resolution,
                threshold=e.mesh_threshold,
            )
        return remove_small_pieces(mesh, e.min_piece_fraction)

    def write_native(self, out: Path) -> None:
        """A NeRF has no native file besides the checkpoint."""


class GaussianAsset:
    """A 3D Gaussian set."""

    def __init__(self, cfg: TextTo3DConfig, state: State) -> None:
        self.cfg = cfg
        self.state = {k: v.detach() for k, v in state.items() if k.startswith("gaussians.")}

    def render_fn(self, resolution: int, samples: int = EVAL_SAMPLES, skip_empty: bool = False) -> RenderFn:
        g = self.cfg.gaussians
        return gaussian_render_fn(self.state, resolution, resolution, g.color_mode, backend=g.backend)

    def albedo_fn(self, resolution: int) -> RenderFn:
        """Gaussians carry their colour unlit: the plain render."""
        return self.render_fn(resolution)

    def mesh(self, colour: bool = True) -> Mesh:
        g, e = self.cfg.gaussians, self.cfg.export
        mesh = gaussian_mesh(
            self.state, g.color_mode, g.export_bound, e.mesh_resolution, e.mesh_threshold, colour
        )
        return remove_small_pieces(mesh, e.min_piece_fraction)

    def write_native(self, out: Path) -> None:
        """``gaussians.ply`` for 3DGS viewers."""
        write_gaussian_ply(self.state, out / "gaussians.ply", self.cfg.gaussians.color_mode)


class DmtetAsset:
    """A DMTet: the mesh marching tetrahedra extracts from its SDF, coloured by its texture field."""

    def __init__(self, cfg: TextTo3DConfig, state: State) -> None:
        self.cfg = cfg
        device = state["dmtet.sdf"].device
        self.dmtet = DMTet(cfg.dmtet.shape, device)
        self.params = {k: state[k].detach() for k in self.dmtet.keys}

    def render_fn(
        self, resolution: int, samples: int = EVAL_SAMPLES, skip_empty: bool = False, shading: str = "diffuse"
    ) -> RenderFn:
        """Rasterized renders lit by a head light (``shading``: diffuse, albedo or textureless);
        ``samples`` and ``skip_empty`` are the NeRF's and change nothing here."""
        code = mode_code(shading)
        with torch.no_grad():
            vertices, faces = self.dmtet.mesh(self.params)
        background = torch.tensor(tuple(self.cfg.dmtet.background), dtype=torch.float32)

        def render(cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
            b = len(cameras)
            with torch.no_grad():
                out = self.dmtet.render(
                    self.params,
                    cameras,
                    resolution,
                    resolution,
                    torch.full((b,), code),
                    cameras.position,
                    background.expand(b, 3),
                    self.cfg.shading,
                    mesh=(vertices, faces),
                    normals=self.cfg.dmtet.normals,
                )
            return out["rgb"], out["alpha"]

        return render

    def albedo_fn(self, resolution: int) -> RenderFn:
        return self.render_fn(resolution, shading="albedo")

    def mesh(self, colour: bool = True) -> Mesh:
        with torch.no_grad():
            vertices, faces = self.dmtet.mesh(self.params)
            if faces.shape[0] == 0:
                raise ExportError("the DMTet's SDF has no zero crossing: there is no surface to export")
            colours = (
                self.dmtet.albedo_fn(self.params)(vertices) if colour else torch.full_like(vertices, 0.7)
            )
        mesh = Mesh(
            vertices.float().cpu().numpy(),
            faces.cpu().numpy().astype("int64"),
            colours.clamp(0, 1).float().cpu().numpy(),
        )
        return remove_small_pieces(mesh, self.cfg.export.min_piece_fraction)

    def write_native(self, out: Path) -> None:
        """A DMTet's native form is its mesh (``mesh.obj`` / ``mesh.glb``) and the checkpoint."""


class SdfAsset:
    """A NeuS SDF at its final hash-grid level count: rendered by NeuS volume rendering, meshed at its
    zero level set."""

    def __init__(self, cfg: TextTo3DConfig, state: State, step: int) -> None:
        self.cfg = cfg
        self.shape = cfg.sdf.shape
        self.params = stack_params([{k: state[k].detach() for k in sdf_keys(self.shape)}])
        self.levels = sdf_levels_at(cfg, step)

    def render_fn(
        self, resolution: int, samples: int = EVAL_SAMPLES, skip_empty: bool = False, shading: str = "diffuse"
    ) -> RenderFn:
        """Renders lit by a head light (``shading``: diffuse, albedo or textureless) at bin-centre
        samples; ``skip_empty``: only where the field's occupancy grid says a ray could see something
        (exports)."""
        background = torch.tensor(tuple(self.cfg.sdf.background), dtype=torch.float32)
        s = self.cfg.sdf
        occupancy = None
        if skip_empty:
            occupancy = sdf_occupancy(self.params, self.shape, 64, float(s.occupancy_alpha), self.levels)

        def render(cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.no_grad():
                out = render_sdf_cameras(
                    self.params,
                    cameras,
                    resolution,
                    resolution,
                    self.shape,
                    num_samples=samples,
                    shading=shading,
                    shading_cfg=self.cfg.shading,
                    background=background,
                    active_levels=self.levels,
                    ray_chunk=4096,
                    occupancy=occupancy,
                )
            return out["rgb"][0], out["opacity"][0]

        return render

    def albedo_fn(self, resolution: int) -> RenderFn:
        return self.render_fn(resolution, shading="albedo")

    def mesh(self, colour: bool = True) -> Mesh:
        """Marching cubes of the zero level set (``export.mesh_resolution``), small pieces removed."""
        e, device = self.cfg.export, self.params[VARIANCE].device
        inside = lambda pts: -sdf_value(self.params, pts.to(device)[None], self.shape, self.levels)[0]  # noqa: E731
        albedo = lambda pts: sdf_albedo(self.params, pts.to(device)[None], self.shape, self.levels)[0]  # noqa: E731
        with torch.no_grad():
            mesh = extract_mesh(
                inside,
                albedo if colour else None,
                bound=self.shape.radius,
                resolution=e.mesh_resolution,
                threshold=0.0,
            )
        return remove_small_pieces(mesh, e.min_piece_fraction)

    def write_native(self, out: Path) -> None:
        """An SDF has no native file besides the checkpoint (and its mesh)."""


class TexturedMeshAsset:
    """A fixed UV mesh and its texture (a texture run): rasterized with the texture, exported as a
    UV-textured glb (vertex colours sampled from the texture in the obj)."""

    def __init__(self, cfg: TextTo3DConfig, state: State) -> None:
        self.cfg = cfg
        self.uv_mesh = UVMesh.from_state(state)
        self.texture = torch.sigmoid(state[TEXTURE].detach().float())
        self.topology = mesh_topology(self.uv_mesh.faces)

    def render_fn(
        self, resolution: int, samples: int = EVAL_SAMPLES, skip_empty: bool = False, shading: str = "diffuse"
    ) -> RenderFn:
        """Rasterized renders lit by a head light (``shading``: diffuse, albedo or textureless);
        ``samples`` and ``skip_empty`` are the NeRF's and change nothing here."""
        background = torch.tensor(tuple(self.cfg.texture.background), dtype=torch.float32)

        def render(cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
            b = len(cameras)
            with torch.no_grad():
                out = render_textured(
                    self.uv_mesh,
                    self.texture,
                    cameras,
                    resolution,
                    resolution,
                    torch.full((b,), mode_code(shading)),
                    cameras.position,
                    background.expand(b, 3),
                    self.cfg.shading,
                    topology=self.topology,
                )
            return out["rgb"], out["alpha"]

        return render

    def albedo_fn(self, resolution: int) -> RenderFn:
        return self.render_fn(resolution, shading="albedo")

    def mesh(self, colour: bool = True) -> Mesh:
        m = self.uv_mesh
        with torch.no_grad():
            colours = sample_texture(self.texture, m.uvs) if colour else torch.full_like(m.vertices, 0.7)
        return Mesh(
            m.vertices.float().cpu().numpy(),
            m.faces.cpu().numpy().astype("int64"),
            colours.clamp(0, 1).float().cpu().numpy(),
            uvs=m.uvs.float().cpu().numpy() if colour else None,
            texture=self.texture.cpu().numpy() if colour else None,
        )

    def write_native(self, out: Path) -> None:
        """``texture.png``: the texture image as the glb holds it (v up)."""
        import imageio.v2 as imageio

        texels = (self.texture.clamp(0, 1).flip(0) * 255).round().to(torch.uint8).cpu().numpy()
        imageio.imwrite(out / "texture.png", texels)


def asset_of(cfg: TextTo3DConfig, state: State, step: int) -> Asset:
    """The asset of a state of a run with config ``cfg`` at ``step``."""
    if cfg.representation == "gaussians":
        return GaussianAsset(cfg, state)
    if cfg.representation == "dmtet":
        return DmtetAsset(cfg, state)
    if cfg.representation == "sdf":
        return SdfAsset(cfg, state, step)
    if cfg.representation == "texture":
        return TexturedMeshAsset(cfg, state)
    return NerfAsset(cfg, state, step)


def mesh_report(mesh: Mesh) -> dict[str, float | int]:
    """What ``metrics.json`` says about an exported mesh: its size, pieces and the floaters removed."""
    fractions = piece_fractions(mesh)
    return {
        "vertices": len(mesh.vertices),
        "faces": len(mesh.faces),
        "pieces": len(fractions),
        "largest_piece_fraction": round(float(fractions[0]), 4) if len(fractions) else 0.0,
        "pieces_removed": mesh.pieces_removed,
        "faces_removed": mesh.faces_removed,
    }


def score_asset(asset: Asset, prompt: str, mesh: Mesh | None = None) -> dict[str, Any]:
    """``evaluate_asset`` of an asset (lit renders, unlit ones for colour spread, its mesh) plus the
    mesh's :func:`mesh_report` under ``"mesh"``."""
    if mesh is None:
        mesh = asset.mesh(colour=isinstance(asset, GaussianAsset))
    scores = evaluate_asset(
        asset.render_fn(EVAL_RESOLUTION),
        prompt,
        (mesh.vertices, mesh.faces),
        albedo_fn=asset.albedo_fn(EVAL_RESOLUTION),
    )
    scores["mesh"] = mesh_report(mesh)
    return scores
