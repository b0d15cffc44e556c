"""Text-to-3D with a NeuS-rendered signed distance field and SDS, exposed as a Picard :class:`Process`.

State: the SDF field's parameters (:mod:`dreampropeller.scene.sdf`: hash grid, SDF and albedo MLPs,
NeuS variance) and the functional Adam's state. ``unit(x, t)`` renders the cameras drawn from
``StepRandom(seed, t)`` with DreamFusion shading (:func:`~dreampropeller.systems.views.lit_views`),
asks the score-distillation object for the gradient at the renders and returns the gradients of SDS
plus the eikonal and surface regularizers. ``unit_batch`` renders every slot of a window in one call
over stacked parameters (grouped by active hash-grid levels) and runs ONE prior forward for all;
``unit`` is ``unit_batch`` with one slot. ``update`` is the optimizer step.
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
from dreampropeller.scene.hashgrid import SceneError, progressive_levels
from dreampropeller.scene.regularizers import normal_smoothness, opacity_entropy
from dreampropeller.scene.sdf import (
    SDF_NET,
    VARIANCE,
    init_sdf_params,
    render_sdf_cameras,
    sdf_keys,
    sdf_occupancy,
)
from dreampropeller.systems.views import lit_views

OCCUPANCY = "sdf.occupancy"


def sdf_optimizer(lr: float, network_lr: float, variance_lr: float) -> dict[str, Any]:
    """Adam (betas 0.9 / 0.99, eps 1e-15) at ``lr``, the SDF MLP at ``network_lr``, the NeuS variance
    at ``variance_lr`` (threestudio's NeuS groups)."""
    return {
        "name": "adam",
        "lr": float(lr),
        "betas": [0.9, 0.99],
        "eps": 1e-15,
        "groups": [
            {"names": [f"{SDF_NET}.*"], "lr": float(network_lr)},
            {"names": [VARIANCE], "lr": float(variance_lr)},
        ],
    }


def validate_sdf_config(cfg: TextTo3DConfig) -> None:
    """Cheap checks of an SDF run (one clear line per problem)."""
    try:
        cfg.sdf.shape  # noqa: B018 - validates the sizes
    except SceneError as err:
        raise ConfigError(str(err)) from None
    if cfg.guidance != "sds":
        raise ConfigError(f"SDF runs use SDS guidance; got guidance={cfg.guidance!r}: set guidance=sds")
    if len(tuple(cfg.sdf.background)) != 3:
        raise ConfigError(f"sdf.background needs 3 values, got {cfg.sdf.background}")
    if int(cfg.sdf.levels_start) < 1 or int(cfg.sdf.cos_anneal_steps) < 0:
        raise ConfigError("sdf.levels_start must be >= 1 and sdf.cos_anneal_steps >= 0")


def sdf_levels_at(cfg: TextTo3DConfig, step: int) -> int:
    """Hash-grid levels in use at ``step``: ``sdf.levels_start``, one more every ``sdf.levels_every``."""
    s = cfg.sdf
    return progressive_levels(step, int(s.levels_start), int(s.n_levels), int(s.levels_every))


class SdfTextTo3D(Process):
    """A NeuS SDF + SDS as a Picard process."""

    def __init__(self, cfg: TextTo3DConfig, guidance: ScoreDistillation) -> None:
        validate_sdf_config(cfg)
        self.cfg = cfg
        self.shape = cfg.sdf.shape
        self.guidance = guidance
        self.device = guidance.device
        self.seed = int(cfg.seed)
        s = cfg.sdf
        self.optimizer = make_optimizer(s.optimizer or sdf_optimizer(s.lr, s.network_lr, s.variance_lr))
        self.param_keys = sdf_keys(self.shape)

    @property
    def unit_keys(self) -> tuple[str, ...]:
        """Besides the parameters, what a unit reads (it travels to distributed workers)."""
        return (OCCUPANCY,) if self.cfg.sdf.occupancy else ()

    # -- state -------------------------------------------------------------------------------
    def initial_state(self) -> State:
        """The starting sphere (seeded field), fresh optimizer state, and with ``sdf.occupancy`` the
        occupancy grid (all cells until its first refresh)."""
        params = init_sdf_params(self.shape, torch.Generator().manual_seed(self.seed))
        x = self.optimizer.init_state({k: v.to(self.device) for k, v in params.items()})
        if self.cfg.sdf.occupancy:
            g = int(self.cfg.sdf.occupancy_resolution)
            x[OCCUPANCY] = torch.ones(g, g, g, dtype=torch.uint8, device=self.device)
        return x

    def refresh_occupancy(self, x: State, t: int) -> State:
        """Recompute the occupancy grid from the field after step ``t`` when it is due."""
        s = self.cfg.sdf
        every = int(s.occupancy_every)
        if OCCUPANCY not in x or every <= 0 or (t + 1) % every != 0:
            return x
        slotted = {k: x[k].detach()[None] for k in self.param_keys}
        with torch.no_grad():
            grid = sdf_occupancy(
                slotted,
                self.shape,
                int(s.occupancy_resolution),
                float(s.occupancy_alpha),
                sdf_levels_at(self.cfg, t + 1),
            )
        return {**x, OCCUPANCY: grid.to(device=x[OCCUPANCY].device, dtype=torch.uint8)}

    # -- the unit ------------------------------------------------------------------------------
    def _draws(self, t: int) -> dict[str, Any]:
        """Every random draw of step ``t``: cameras, lights, shading modes, jitter, SDS timesteps, noise."""
        cfg = self.cfg
        rnd = StepRandom(self.seed, t)
        cams, lights, modes = lit_views(cfg, rnd, t)
        ts, noise = self.guidance.draw(
            cfg.render.batch_size, cfg.render.height, cfg.render.width, rnd.generator("sds"), t
        )
        return {
            "cameras": cams,
            "lights": lights,
            "modes": modes,
            "jitter": rnd.generator("jitter"),
            "t": ts,
            "noise": noise,
        }

    def cos_anneal_ratio(self, t: int) -> float:
        """NeuS's cosine annealing at step ``t`` (1 = plain NeuS)."""
        n = int(self.cfg.sdf.cos_anneal_steps)
        return 1.0 if n <= 0 else min(1.0, t / n)

    def unit(self, x: State, t: int) -> Drift:
        return self.unit_batch([x], [t])[0]

    def unit_batch(self, xs: Sequence[State], ts: Sequence[int]) -> list[Drift]:
        cfg, s = self.cfg, self.cfg.sdf
        p, b = len(xs), cfg.render.batch_size
        h, w = cfg.render.height, cfg.render.width
        dev = self.device
        keys = self.param_keys
        leaves = {k: torch.stack([x[k].detach() for x in xs]).requires_grad_(True) for k in keys}
        draws = [self._draws(t) for t in ts]
        background = torch.tensor(tuple(s.background), dtype=torch.float32, device=dev)
        with torch.enable_grad():
            # slots that differ in active levels or cosine annealing render in separate groups
            groups: dict[tuple[int, float], list[int]] = {}
            for i, t in enumerate(ts):
                groups.setdefault((sdf_levels_at(cfg, t), self.cos_anneal_ratio(t)), []).append(i)
            images, regs = [None] * p, [None] * p
            for (levels, ratio), idx in groups.items():
                sub = {k: v[idx] for k, v in leaves.items()} if len(groups) > 1 else leaves
                out = render_sdf_cameras(
                    sub,
                    [draws[i]["cameras"] for i in idx],
                    h,
                    w,
                    self.shape,
                    num_samples=cfg.render.num_samples,
                    generator=[draws[i]["jitter"] for i in idx],
                    shading=[draws[i]["modes"] for i in idx],
                    shading_cfg=cfg.shading,
                    light_positions=torch.stack([draws[i]["lights"] for i in idx]).to(dev),
                    background=background,
                    active_levels=levels,
                    cos_anneal_ratio=ratio,
                    occupancy=torch.stack([xs[i][OCCUPANCY] for i in idx]) if OCCUPANCY in xs[0] else None,
                )
                reg = self._regularizers(out, [ts[i] for i in idx])
                for j, i in enumerate(idx):
                    images[i] = out["rgb"][j]
                    regs[i] = reg[j]
            rgb = torch.stack(images).reshape(p * b, h, w, 3).permute(0, 3, 1, 2)
            latents = self.guidance.encode(rgb)
            grad, _ = self.guidance.gradient(latents, draws, ts, xs)
            sds = sds_surrogate(latents, grad).reshape(p, b).mean(1)
            lam = torch.tensor([scheduled_value(cfg.loss.lambda_sds, t) for t in ts], device=dev)
            total = (lam * sds).sum() + torch.stack(regs).sum()
            grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
        return [
            {
                k: torch.zeros_like(leaves[k][i]) if g is None else g[i].detach()
                for k, g in zip(keys, grads, strict=True)
            }
            for i in range(p)
        ]

    def _regularizers(self, out: dict[str, torch.Tensor], ts: Sequence[int]) -> torch.Tensor:
        """Weighted eikonal, normal-smoothness and opacity-entropy terms per slot [P]."""
        s = self.cfg.sdf
        dev = out["opacity"].device
        lam = lambda v: torch.tensor([scheduled_value(v, t) for t in ts], device=dev)  # noqa: E731
        total = lam(s.lambda_eikonal) * out["eikonal"]
        if any(scheduled_value(s.lambda_normal_smooth, t) > 0 for t in ts):
            total = total + lam(s.lambda_normal_smooth) * normal_smoothness(out["normal"], out["opacity"])
        if any(scheduled_value(s.lambda_opaque, t) > 0 for t in ts):
            total = total + lam(s.lambda_opaque) * opacity_entropy(out["opacity"])
        return total

    # -- the update ---------------------------------------------------------------------------
    def update(self, x: State, drift: Drift, t: int) -> State:
        """The optimizer step, then the occupancy grid's refresh when it is due."""
        return self.refresh_occupancy(self.optimizer.apply(x, {k: drift[k] for k in self.param_keys}, t), t)

    def replicate(self, device: torch.device) -> SdfTextTo3D:
        clone = copy.copy(self)
        clone.device = torch.device(device)
        clone.guidance = self.guidance.replicate(device)
        return clone
