"""Reading a run directory back: its config, exact state and step, and the asset they make; and the
starts of runs that refine a finished run: a DMTet from a NeRF (Magic3D's refine stage), a UV
texture on any run's mesh (DreamGaussian's second stage)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from dreampropeller.config.loading import ConfigError, build
from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.export.fields import nerf_density_fn
from dreampropeller.export.mesh import auto_threshold, fill_cavities, sample_grid
from dreampropeller.picard.process import State
from dreampropeller.runs.assets import Asset, NerfAsset, asset_of
from dreampropeller.runs.directory import CONFIG, load_run_checkpoint
from dreampropeller.scene.dmtet import DMTet, sdf_from_density
from dreampropeller.scene.uv_mesh import UVMesh, bake, unwrap


@dataclass
class Run:
    """A run directory's config, checkpointed state and step."""

    cfg: TextTo3DConfig
    state: State
    step: int

    @property
    def asset(self) -> Asset:
        """The asset of the checkpointed state (render, mesh)."""
        return asset_of(self.cfg, self.state, self.step)


def load_run(run_dir: str | Path, device: torch.device | str = "cpu") -> Run:
    """The :class:`Run` in ``run_dir`` (ConfigError when it is not a run directory)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise ConfigError(f"{str(run_dir)!r} is not a run directory (no config.yaml)")
    data = OmegaConf.to_container(OmegaConf.load(run_dir / CONFIG), resolve=True)
    cfg = build(TextTo3DConfig, data)  # type: ignore[arg-type]
    state, step, _ = load_run_checkpoint(run_dir, device)
    return Run(cfg, state, step)


def dmtet_init_sdf(cfg: TextTo3DConfig, device: torch.device | str = "cpu") -> torch.Tensor | None:
    """The starting SDF [V] of a DMTet run whose ``dmtet.init_from`` names a finished NeRF run (None
    otherwise), as Magic3D starts its refine stage: the NeRF's density at the grid vertices, level set
    at ``dmtet.init_level`` (``auto``: the level the NeRF's own mesh export picks, from its silhouettes
    on an ``export.mesh_resolution`` grid), closed hollows filled, and the grid's border kept outside
    so the surface closes. The texture field starts fresh."""
    d = cfg.dmtet
    if cfg.representation != "dmtet" or not d.init_from:
        return None
    run = load_run(d.init_from, "cpu")
    if run.cfg.representation != "nerf":
        raise ConfigError(
            f"dmtet.init_from needs a finished NeRF run; {d.init_from!r} is a {run.cfg.representation} run"
        )
    nerf = run.asset
    assert isinstance(nerf, NerfAsset)
    density = nerf_density_fn(nerf.params, run.cfg.nerf, nerf.levels)
    if d.init_level == "auto":
        res, bound = int(run.cfg.export.mesh_resolution), float(run.cfg.nerf.radius)
        level = auto_threshold(sample_grid(density, bound, res), 2 * bound / (res - 1))
    else:
        level = float(d.init_level)
    dmtet = DMTet(d.shape)
    n = d.resolution + 1
    with torch.no_grad():
        values = torch.cat([density(p) for p in dmtet.grid_vertices.split(65536)]).reshape(n, n, n)
    filled, _ = fill_cavities(values.double().numpy(), level)
    sdf = sdf_from_density(torch.from_numpy(filled).float(), level, d.shape.cell)
    border = torch.zeros(n, n, n, dtype=torch.bool)
    border[[0, -1]] = border[:, [0, -1]] = border[:, :, [0, -1]] = True
    sdf = torch.where(border, sdf.clamp_min(d.shape.cell), sdf).reshape(-1)
    if not bool((sdf < 0).any()):
        raise ConfigError(
            f"the NeRF of {d.init_from!r} has no density above level {level:.4g} inside the DMTet grid "
            f"(dmtet.radius={d.radius}): lower dmtet.init_level or widen the grid"
        )
    return sdf.to(device)


def texture_start(
    cfg: TextTo3DConfig, device: torch.device | str = "cpu"
) -> tuple[UVMesh, torch.Tensor] | None:
    """The UV mesh and first texture of a texture run (None for other runs), as DreamGaussian starts
    its second stage: the exported mesh of the finished run ``texture.init_from`` (small pieces
    removed), unwrapped by xatlas, its vertex colours baked into a ``texture.size`` texture."""
    t = cfg.texture
    if cfg.representation != "texture" or not t.init_from:
        return None
    try:
        source = load_run(t.init_from, "cpu")
    except FileNotFoundError as err:
        raise ConfigError(f"texture.init_from {t.init_from!r}: {err}") from None
    if source.cfg.representation == "texture":
        raise ConfigError(f"texture.init_from needs a run that makes a mesh; {t.init_from!r} is a texture")
    mesh = source.asset.mesh(colour=True)
    uv_mesh, copies = unwrap(mesh.vertices, mesh.faces)
    colours = torch.from_numpy(mesh.colors[copies]).float()
    texture = bake(uv_mesh, colours, int(t.size), int(t.gutter)).clamp(0, 1)
    return uv_mesh.to(device), texture.to(device)
