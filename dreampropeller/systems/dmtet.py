"""Text-to-3D with a DMTet mesh and SDS (Magic3D's refine stage), exposed as a Picard :class:`Process`.

State: the DMTet parameters (per-vertex ``dmtet.sdf`` and ``dmtet.deformation``, the texture field
``texture.*``; :mod:`dreampropeller.scene.dmtet`) and the functional Adam's state. ``unit(x, t)``
extracts the mesh by marching tetrahedra, rasterizes it from the cameras drawn from
``StepRandom(seed, t)`` with DreamFusion shading (albedo / diffuse / textureless per camera, point
lights near the camera; the outline gets its gradient by edge sampling jittered from the step's
``edges`` stream, or by antialiasing: ``dmtet.silhouette``), asks the score-distillation object for
the gradient at the renders and returns the gradients of SDS plus the mesh regularizers.
``unit_batch`` meshes and renders every slot of a window (each slot has its own mesh) and runs ONE
prior forward for all of them; ``unit`` is ``unit_batch`` with one slot, so both are the same code.
``update`` is the optimizer step.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

from dreampropeller.config.loading import ConfigError
from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.guidance.distillation import ScoreDistillation
from dreampropeller.guidance.sds import scheduled_value, sds_surrogate
from dreampropeller.optim import make_optimizer
from dreampropeller.picard.process import Drift, Process, State
from dreampropeller.picard.rng import StepRandom
from dreampropeller.scene.dmtet import (
    NORMALS,
    SILHOUETTES,
    DMTet,
    laplacian_smoothness,
    normal_consistency,
    sphere_sdf,
)
from dreampropeller.scene.hashgrid import SceneError
from dreampropeller.systems.views import raster_draws


def dmtet_optimizer(geometry_lr: float, texture_lr: float) -> dict[str, Any]:
    """Adam (betas 0.9 / 0.99, eps 1e-15): ``geometry_lr`` for the SDF and deformation (world units per
    step at most), ``texture_lr`` for the texture field."""
    return {
        "name": "adam",
        "lr": float(texture_lr),
        "betas": [0.9, 0.99],
        "eps": 1e-15,
        "groups": [{"names": ["dmtet.sdf", "dmtet.deformation"], "lr": float(geometry_lr)}],
    }


def validate_dmtet_config(cfg: TextTo3DConfig) -> None:
    """Cheap checks of a DMTet run (one clear line per problem)."""
    try:
        cfg.dmtet.shape  # noqa: B018 - validates the sizes
    except SceneError as err:
        raise ConfigError(str(err)) from None
    if cfg.guidance != "sds":
        raise ConfigError(f"DMTet runs use SDS guidance; got guidance={cfg.guidance!r}: set guidance=sds")
    if not 0 < float(cfg.dmtet.init_radius) < float(cfg.dmtet.radius):
        raise ConfigError(
            f"dmtet.init_radius must lie in (0, dmtet.radius={cfg.dmtet.radius}), got {cfg.dmtet.init_radius}"
        )
    if cfg.dmtet.normals not in NORMALS:
        raise ConfigError(f"dmtet.normals must be one of {NORMALS}, got {cfg.dmtet.normals!r}")
    if cfg.dmtet.silhouette not in SILHOUETTES:
        raise ConfigError(f"dmtet.silhouette must be one of {SILHOUETTES}, got {cfg.dmtet.silhouette!r}")
    if int(cfg.dmtet.supersample) < 1:
        raise ConfigError(f"dmtet.supersample must be >= 1, got {cfg.dmtet.supersample}")
    if len(tuple(cfg.dmtet.background)) != 3:
        raise ConfigError(f"dmtet.background needs 3 values, got {cfg.dmtet.background}")


class DmtetTextTo3D(Process):
    """DMTet + SDS as a Picard process. ``init_sdf`` [V] replaces the starting ball (a NeRF's field)."""

    unit_keys: tuple[str, ...] = ()  # a unit reads only the parameters

    def __init__(
        self, cfg: TextTo3DConfig, guidance: ScoreDistillation, init_sdf: torch.Tensor | None = None
    ) -> None:
        validate_dmtet_config(cfg)
        self.cfg = cfg
        self.guidance = guidance
        self.device = guidance.device
        self.seed = int(cfg.seed)
        self.dmtet = DMTet(cfg.dmtet.shape, self.device)
        d = cfg.dmtet
        self.optimizer = make_optimizer(d.optimizer or dmtet_optimizer(d.geometry_lr, d.texture_lr))
        self.init_sdf = init_sdf
        self.param_keys = self.dmtet.keys

    # -- state -------------------------------------------------------------------------------
    def initial_state(self) -> State:
        """The starting SDF (a ball, or ``init_sdf``), no deformation, a fresh texture field (seeded)
        and fresh optimizer state."""
        sdf = self.init_sdf
        if sdf is None:
            sdf = sphere_sdf(self.dmtet.grid_vertices, float(self.cfg.dmtet.init_radius))
        params = self.dmtet.init_params(sdf.to(self.device), torch.Generator().manual_seed(self.seed))
        return self.optimizer.init_state(params)

    # -- the unit ------------------------------------------------------------------------------
    def _draws(self, t: int) -> dict[str, Any]:
        """Every random draw of step ``t``: cameras, lights, shading modes, SDS timesteps and noise, and
        the seed of the silhouette sampler's jitter."""
        draws = raster_draws(self.cfg, self.guidance, self.seed, t, self.cfg.dmtet.background)
        edges = StepRandom(self.seed, t).generator("edges")
        return {**draws, "edges": int(torch.randint(1 << 62, (1,), generator=edges))}

    def _regularizers(self, vertices: torch.Tensor, faces: torch.Tensor, t: int) -> torch.Tensor:
        d = self.cfg.dmtet
        total = vertices.new_zeros(())
        lam = scheduled_value(d.lambda_normal_consistency, t)
        if lam > 0:
            total = total + lam * normal_consistency(vertices, faces)
        lam = scheduled_value(d.lambda_laplacian, t)
        if lam > 0:
            total = total + lam * laplacian_smoothness(vertices, faces)
        return total

    def unit(self, x: State, t: int) -> Drift:
        return self.unit_batch([x], [t])[0]

    def unit_batch(self, xs: Sequence[State], ts: Sequence[int]) -> list[Drift]:
        cfg = self.cfg
        p, b = len(xs), cfg.render.batch_size
        h, w = cfg.render.height, cfg.render.width
        keys = self.param_keys
        leaves = {k: torch.stack([x[k].detach() for x in xs]).requires_grad_(True) for k in keys}
        draws = [self._draws(t) for t in ts]
        with torch.enable_grad():
            images, regs = [], []
            ss = int(cfg.dmtet.supersample)
            for i, (d, t) in enumerate(zip(draws, ts, strict=True)):
                out = self.dmtet.render(
                    {k: v[i] for k, v in leaves.items()},
                    d["cameras"],
                    h * ss,
                    w * ss,
                    d["codes"],
                    d["lights"],
                    d["background"],
                    cfg.shading,
                    normals=cfg.dmtet.normals,
                    silhouette=cfg.dmtet.silhouette,
                    generator=torch.Generator().manual_seed(d["edges"]),
                )
                rgb = out["rgb"]
                if ss > 1:  # box-filtered down: coverage within a pixel, and more silhouette pairs
                    rgb = torch.nn.functional.avg_pool2d(rgb.permute(0, 3, 1, 2), ss).permute(0, 2, 3, 1)
                images.append(rgb)
                regs.append(self._regularizers(out["vertices"], out["faces"], t))
            rgb = torch.stack(images).reshape(p * b, h, w, 3).permute(0, 3, 1, 2)
            latents = self.guidance.encode(rgb)
            grad, _ = self.guidance.gradient(latents, draws, ts, xs)
            sds = sds_surrogate(latents, grad).reshape(p, b).mean(1)
            lam = torch.tensor([scheduled_value(cfg.loss.lambda_sds, t) for t in ts], device=self.device)
            total = (lam * sds).sum() + torch.stack(regs).sum()
            grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
        return [
            {
                k: torch.zeros_like(leaves[k][i]) if g is None else g[i].detach()
                for k, g in zip(keys, grads, strict=True)
            }
            for i in range(p)
        ]

    # -- the update ---------------------------------------------------------------------------
    def update(self, x: State, drift: Drift, t: int) -> State:
        """The optimizer step."""
        return self.optimizer.apply(x, {k: drift[k] for k in self.param_keys}, t)

    def replicate(self, device: torch.device) -> DmtetTextTo3D:
        clone = copy.copy(self)
        clone.device = torch.device(device)
        clone.guidance = self.guidance.replicate(device)
        clone.dmtet = self.dmtet.to(device)
        return clone
