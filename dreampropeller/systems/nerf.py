"""Text-to-3D with a NeRF and score distillation (SDS or VSD), exposed as a Picard :class:`Process`.

``unit(x, t)`` renders a batch of random cameras drawn from ``StepRandom(seed, t)``, asks the
process's guidance (:mod:`dreampropeller.guidance.distillation`) for the gradient at the renders (one
prior forward, conditional and unconditional halves together), and returns the gradients of the
distillation loss plus the regularizers; ``update`` is the functional optimizer step. ``unit_batch``
renders every slot of a window in one call over stacked parameters and runs ONE prior forward for all
of them, so the batched executor gets a whole window for about the cost of one large batch. ``unit``
is ``unit_batch`` with one slot, so both paths are the same code."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.guidance.distillation import ScoreDistillation
from dreampropeller.guidance.sds import scheduled_value, sds_surrogate
from dreampropeller.optim import make_optimizer
from dreampropeller.picard.process import Drift, Process, State
from dreampropeller.picard.rng import StepRandom
from dreampropeller.scene.nerf import NeRFConfig, init_nerf_params, nerf_density, sample_background_colors
from dreampropeller.scene.regularizers import (
    normal_smoothness,
    opacity_entropy,
    opacity_sparsity,
    orientation_loss,
    z_variance,
)
from dreampropeller.scene.volume import occupancy_grid, render_cameras
from dreampropeller.systems.views import lit_views

OCCUPANCY = "occupancy.grid"


def nerf_keys(cfg: NeRFConfig) -> tuple[str, ...]:
    """The names of a NeRF's parameters (what its state holds besides optimizer and buffers)."""
    return tuple(init_nerf_params(cfg, torch.Generator().manual_seed(0)))


def levels_at(cfg: TextTo3DConfig, step: int) -> int:
    """Hash-grid levels in use at ``step``: ``levels.start``, one more every ``levels.every`` steps."""
    n = cfg.nerf.n_levels
    return n if cfg.levels.every <= 0 else min(n, cfg.levels.start + step // cfg.levels.every)


class NerfTextTo3D(Process):
    """NeRF + score distillation (SDS or VSD: whatever ``guidance`` is) as a Picard process."""

    def __init__(self, cfg: TextTo3DConfig, guidance: ScoreDistillation) -> None:
        self.cfg = cfg
        self.guidance = guidance
        self.device = guidance.device
        self.optimizer = make_optimizer(cfg.optimizer)
        self.seed = int(cfg.seed)
        self.nerf_keys = nerf_keys(cfg.nerf)
        self.param_keys = self.nerf_keys + guidance.param_keys

    @property
    def unit_keys(self) -> tuple[str, ...]:
        """Besides the parameters, what a unit reads (it travels to distributed workers)."""
        return (OCCUPANCY,) if self.cfg.occupancy.enabled else ()

    # -- state -------------------------------------------------------------------------------
    def initial_state(self) -> State:
        """Fresh NeRF parameters (seeded), optimizer state and the guidance's own entries, if any."""
        params = init_nerf_params(self.cfg.nerf, torch.Generator().manual_seed(self.seed))
        x = self.optimizer.init_state({k: v.to(self.device) for k, v in params.items()})
        if self.cfg.occupancy.enabled:
            g = self.cfg.occupancy.resolution
            x[OCCUPANCY] = torch.ones(g, g, g, dtype=torch.uint8, device=self.device)
        x.update(self.guidance.initial_state())
        return x

    def refresh_occupancy(self, x: State, t: int) -> State:
        """Recompute the occupancy grid from the density after step ``t`` when it is due."""
        oc = self.cfg.occupancy
        if OCCUPANCY not in x or (t + 1) < oc.start or (t + 1) % oc.every != 0:
            return x
        slotted = {k: x[k].detach()[None] for k in self.nerf_keys}
        levels = self.active_levels(t + 1)
        with torch.no_grad():
            grid = occupancy_grid(
                lambda pts: nerf_density(slotted, pts.to(self.device)[None], self.cfg.nerf, levels)[0],
                self.cfg.nerf.radius,
                oc.resolution,
                oc.level,
            )
        return {**x, OCCUPANCY: grid.to(device=x[OCCUPANCY].device, dtype=torch.uint8)}

    def active_levels(self, t: int) -> int:
        """Hash-grid levels in use at step ``t`` (progressive coarse-to-fine)."""
        return levels_at(self.cfg, t)

    # -- the unit ------------------------------------------------------------------------------
    def _draws(self, t: int) -> dict[str, Any]:
        """Every random draw of step ``t`` (cameras, lights, shading, background, jitter, SDS)."""
        cfg = self.cfg
        rnd = StepRandom(self.seed, t)
        b = cfg.render.batch_size
        cams, lights, modes = lit_views(cfg, rnd, t)
        bg_mask, bg_colors = sample_background_colors(cfg.nerf, b, rnd.generator("background"))
        h, w = cfg.render.height, cfg.render.width
        ts, noise = self.guidance.draw(b, h, w, rnd.generator("sds"), t)
        return {
            "cameras": cams,
            "lights": lights,
            "modes": modes,
            "bg_mask": bg_mask,
            "bg_colors": bg_colors,
            "jitter": rnd.generator("jitter"),
            "t": ts,
            "noise": noise,
        }

    def unit(self, x: State, t: int) -> Drift:
        return self.unit_batch([x], [t])[0]

    def unit_batch(self, xs: Sequence[State], ts: Sequence[int]) -> list[Drift]:
        cfg = self.cfg
        p, b = len(xs), cfg.render.batch_size
        h, w = cfg.render.height, cfg.render.width
        dev = self.device
        leaves = {k: torch.stack([x[k].detach() for x in xs]).requires_grad_(True) for k in self.nerf_keys}
        draws = [self._draws(t) for t in ts]
        lam_orient = [scheduled_value(cfg.loss.lambda_orient, t) for t in ts]
        lam_smooth = [scheduled_value(cfg.loss.lambda_normal_smooth, t) for t in ts]
        # normals for every ray whenever a normal loss is on, so no slot's loss depends on its batch
        need_normals = any(v > 0 for v in lam_orient + lam_smooth)
        with torch.enable_grad():
            # slots at different steps may use different hash-grid levels: render each level group
            images, regs = [None] * p, [torch.zeros((), device=dev)] * p
            groups: dict[int, list[int]] = {}
            for i, t in enumerate(ts):
                groups.setdefault(self.active_levels(t), []).append(i)
            for levels, idx in groups.items():
                sub = {k: v[idx] for k, v in leaves.items()} if len(groups) > 1 else leaves
                out = render_cameras(
                    sub,
                    [draws[i]["cameras"] for i in idx],
                    h,
                    w,
                    cfg.nerf,
                    num_samples=cfg.render.num_samples,
                    generator=[draws[i]["jitter"] for i in idx],
                    shading=[draws[i]["modes"] for i in idx],
                    shading_cfg=cfg.shading,
                    light_positions=torch.stack([draws[i]["lights"] for i in idx]).to(dev),
                    background=torch.stack([draws[i]["bg_colors"] for i in idx]).to(dev),
                    background_mask=torch.stack([draws[i]["bg_mask"] for i in idx]).to(dev),
                    active_levels=levels,
                    need_normals=need_normals,
                    occupancy=torch.stack([xs[i][OCCUPANCY] for i in idx]) if OCCUPANCY in xs[0] else None,
                )
                reg = self._regularizers(out, [ts[i] for i in idx], need_normals, (b, h, w))
                for j, i in enumerate(idx):
                    images[i] = out["rgb"][j]
                    regs[i] = reg[j]
            rgb = torch.stack(images).reshape(p * b, h, w, 3).permute(0, 3, 1, 2)
            latents = self.guidance.encode(rgb)
            grad, guidance_drifts = self.guidance.gradient(latents, draws, ts, xs)
            sds = sds_surrogate(latents, grad).reshape(p, b).mean(1)
            lam_sds = torch.tensor([scheduled_value(cfg.loss.lambda_sds, t) for t in ts], device=dev)
            total = (lam_sds * sds).sum() + torch.stack(regs).sum()
            grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
        out_drifts: list[Drift] = []
        for i in range(p):
            drift = {}
            for k, g in zip(leaves, grads, strict=True):
                drift[k] = torch.zeros_like(leaves[k][i]) if g is None else g[i].detach()
            out_drifts.append(drift)
        for drift, extra in zip(out_drifts, guidance_drifts, strict=False):
            drift.update(extra)
        return out_drifts

    def _regularizers(
        self, out: dict[str, torch.Tensor], ts: Sequence[int], normals: bool, image: tuple[int, int, int]
    ) -> torch.Tensor:
        """Weighted regularizers per slot [P] (``image``: the renders' batch, height and width)."""
        cfg = self.cfg.loss
        dev = out["opacity"].device
        lam = lambda v: torch.tensor([scheduled_value(v, t) for t in ts], device=dev)  # noqa: E731
        total = torch.zeros(len(ts), device=dev)
        if normals and "normals_samples" in out:
            total = total + lam(cfg.lambda_orient) * orientation_loss(
                out["weights"], out["normals_samples"], out["rays_d"]
            )
        if any(scheduled_value(cfg.lambda_sparsity, t) > 0 for t in ts):
            total = total + lam(cfg.lambda_sparsity) * opacity_sparsity(out["opacity"])
        if any(scheduled_value(cfg.lambda_z_variance, t) > 0 for t in ts):
            total = total + lam(cfg.lambda_z_variance) * z_variance(out["weights"], out["t"])
        if any(scheduled_value(cfg.lambda_opaque, t) > 0 for t in ts):
            total = total + lam(cfg.lambda_opaque) * opacity_entropy(out["opacity"])
        if normals and "normals_samples" in out:
            shape = (len(ts), *image, -1)
            total = total + lam(cfg.lambda_normal_smooth) * normal_smoothness(
                out["normal"].reshape(shape), out["opacity"].reshape(shape)
            )
        return total

    # -- the update ---------------------------------------------------------------------------
    def update(self, x: State, drift: Drift, t: int) -> State:
        g = self.guidance
        own = {k: v for k, v in x.items() if not g.owns(k)}
        out = self.optimizer.apply(own, {k: v for k, v in drift.items() if not g.owns(k)}, t)
        out.update(
            g.update(
                {k: v for k, v in x.items() if g.owns(k)}, {k: v for k, v in drift.items() if g.owns(k)}, t
            )
        )
        return self.refresh_occupancy(out, t)

    # -- state outside the fixed point (the worker / accepted VSD LoRA) ----------------------------
    def worker_state(self) -> State:
        """What this worker keeps outside the Picard state (a checkpoint saves it)."""
        return self.guidance.worker_state()

    def load_worker_state(self, state: State) -> None:
        """Restore :meth:`worker_state` (resume)."""
        self.guidance.load_worker_state(state)

    def accept(self, first: int, count: int) -> None:
        """The solver accepted steps ``[first, first + count)``."""
        self.guidance.accept(first, count)

    def replicate(self, device: torch.device) -> NerfTextTo3D:
        clone = copy.copy(self)
        clone.device = torch.device(device)
        clone.guidance = self.guidance.replicate(device)
        return clone
