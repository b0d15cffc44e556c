"""Text- and image-to-3D with 3D Gaussians and SDS (DreamGaussian), exposed as a Picard :class:`Process`.

State: the Gaussian attributes (``gaussians.*``), the functional Adam's state (``optim/*``) and the
densification statistics (``densify.*``), all one row per Gaussian except Adam's scalar step counts.

``unit_batch`` renders every slot of a window (slots may hold different numbers of Gaussians: the
rasterizer takes a list of states and renders them one by one) and runs ONE prior forward for all of
them through the process's score-distillation object (:mod:`dreampropeller.guidance.distillation`).
Besides the parameter gradients the drift carries the view-space statistics of the step (gradient of
the loss with respect to the projected centres, visibility, screen radii), which ``update``
accumulates: the unit stays the only place that differentiates, the update the only place that changes
the state.

``update`` = Adam step (DreamGaussian's per-attribute learning rates, position lr decayed log-
linearly), then the densification strategy (:class:`~dreampropeller.scene.densify.DensifyStrategy`:
statistics, densify / prune and opacity reset on their schedule). A densification returns
``Updated(state, IndexMap)`` whose maps cover parameters, moments and statistics exactly
(:func:`dreampropeller.scene.densify.densify_and_prune`), so the solver carries guesses through it."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

from dreampropeller.config.schema import BACKGROUNDS, GaussianConfig, TextTo3DConfig
from dreampropeller.guidance.distillation import ScoreDistillation
from dreampropeller.guidance.sds import scheduled_value, sds_surrogate
from dreampropeller.optim import make_optimizer
from dreampropeller.picard.process import Drift, Process, State, Updated
from dreampropeller.picard.rng import StepRandom
from dreampropeller.scene.cameras import Cameras
from dreampropeller.scene.densify import STAT_KEYS, DensifyStrategy, init_stats, view_space_stats
from dreampropeller.scene.gaussian_raster import BACKENDS, rasterize_gaussians
from dreampropeller.scene.gaussians import (
    COLOR_MODES,
    MEANS,
    GaussianError,
    check_count,
    gaussian_keys,
    init_gaussians,
)
from dreampropeller.scene.regularizers import opacity_entropy
from dreampropeller.systems.image_to_3d import ReferenceView


def dreamgaussian_optimizer(steps: int) -> dict[str, Any]:
    """DreamGaussian's Adam (3DGS's eps 1e-15): positions 1e-3 -> 2e-5 log-linearly over ``steps``,
    colours 0.01 (higher SH bands / 20), opacities 0.05, scales and rotations 0.005."""
    return {
        "name": "adam",
        "lr": 0.0,
        "eps": 1e-15,
        "groups": [
            {
                "names": ["gaussians.means"],
                "lr": 1e-3,
                "schedule": {
                    "name": "exp_interp",
                    "lr_init": 1e-3,
                    "lr_final": 2e-5,
                    "max_steps": max(steps, 1),
                },
            },
            {"names": ["gaussians.colors"], "lr": 0.01},
            {"names": ["gaussians.sh_rest"], "lr": 0.01 / 20},
            {"names": ["gaussians.opacities"], "lr": 0.05},
            {"names": ["gaussians.scales"], "lr": 0.005},
            {"names": ["gaussians.quats"], "lr": 0.005},
        ],
    }


def validate_gaussian_config(cfg: TextTo3DConfig) -> None:
    """Cheap checks of the ``gaussians`` section (one clear line per problem)."""
    g = cfg.gaussians
    check_count(int(g.num_points), g.densify.max_count)
    if g.background not in BACKGROUNDS:
        raise GaussianError(f"gaussians.background must be one of {BACKGROUNDS}, got {g.background!r}")
    if g.backend not in BACKENDS:
        raise GaussianError(f"gaussians.backend must be one of {BACKENDS}, got {g.backend!r}")
    if g.color_mode not in COLOR_MODES:
        raise GaussianError(f"gaussians.color_mode must be one of {COLOR_MODES}, got {g.color_mode!r}")
    if g.memory_limit_gb is not None and not float(g.memory_limit_gb) > 0:
        raise GaussianError(f"gaussians.memory_limit_gb must be > 0 or null, got {g.memory_limit_gb!r}")


class GaussianTextTo3D(Process):
    """3D Gaussians + score distillation as a Picard process: text-to-3D, or, given a
    :class:`ReferenceView`, DreamGaussian's image-to-3D (the reference losses join the distillation)."""

    unit_keys: tuple[str, ...] = ()  # no occupancy grid: a unit reads only the Gaussians

    def __init__(
        self, cfg: TextTo3DConfig, guidance: ScoreDistillation, reference: ReferenceView | None = None
    ) -> None:
        validate_gaussian_config(cfg)
        self.cfg = cfg
        self.guidance = guidance
        self.reference = reference
        self.device = guidance.device
        self.seed = int(cfg.seed)
        g = cfg.gaussians
        self.gcfg: GaussianConfig = g
        self.optimizer = make_optimizer(g.optimizer or dreamgaussian_optimizer(cfg.steps))
        self.densify = DensifyStrategy(g.densify, self.optimizer.state_keys)
        probe = init_gaussians(1, g.radius, torch.Generator(), sh_degree=g.sh_degree, color_mode=g.color_mode)
        self.param_keys = tuple(gaussian_keys(probe))

    # -- state -------------------------------------------------------------------------------
    def initial_state(self) -> State:
        """Gaussians in a ball (seeded), fresh Adam state and zero densification statistics."""
        g = self.gcfg
        params = init_gaussians(
            int(g.num_points),
            g.radius,
            torch.Generator().manual_seed(self.seed),
            opacity=g.init_opacity,
            color_mode=g.color_mode,
            color_spread=g.color_spread,
            sh_degree=g.sh_degree,
            max_count=g.densify.max_count,
            device=self.device,
        )
        state = self.optimizer.init_state(params)
        state.update(init_stats(int(g.num_points), params[MEANS]))
        return state

    # -- the unit ------------------------------------------------------------------------------
    def _draws(self, t: int) -> dict[str, Any]:
        """Every random draw of step ``t``: cameras, backgrounds, SDS timesteps and noise."""
        cfg = self.cfg
        rnd = StepRandom(self.seed, t)
        b = cfg.render.batch_size
        cams = cfg.camera.sample(b, rnd.generator("camera"))
        mode = self.gcfg.background
        if mode == "random":
            white = torch.rand(b, generator=rnd.generator("background")) < 0.5
        else:
            white = torch.full((b,), mode == "white")
        ts, noise = self.guidance.draw(b, cfg.render.height, cfg.render.width, rnd.generator("sds"), t)
        return {"cameras": cams, "background": white.float()[:, None].expand(b, 3), "t": ts, "noise": noise}

    def _views(self, draws: dict[str, Any]) -> tuple[Cameras, torch.Tensor]:
        """Cameras and backgrounds [V, 3] a slot renders: the SDS views, then the reference view."""
        if self.reference is None:
            return draws["cameras"], draws["background"]
        return self.reference.append_to(draws["cameras"], draws["background"])

    def _extra_loss(self, out: dict[str, Any], ts: Sequence[int]) -> torch.Tensor:
        """Per-slot losses [P] besides the distillation: the rendered opacity's binary entropy
        (``gaussians.lambda_opaque``: solid silhouettes, no haze) and the reference view's, if any."""
        b = self.cfg.render.batch_size
        total = torch.zeros(len(ts), device=self.device)
        weights = [float(scheduled_value(self.gcfg.lambda_opaque, t)) for t in ts]
        if any(w > 0 for w in weights):
            alpha = out["alpha"][:, :b].reshape(len(ts), -1)
            total = total + torch.tensor(weights, device=self.device) * opacity_entropy(alpha)
        if self.reference is not None:
            total = total + self.reference.loss(out, b, ts)
        return total

    def unit(self, x: State, t: int) -> Drift:
        return self.unit_batch([x], [t])[0]

    def unit_batch(self, xs: Sequence[State], ts: Sequence[int]) -> list[Drift]:
        cfg, g = self.cfg, self.gcfg
        p, b = len(xs), cfg.render.batch_size
        h, w = cfg.render.height, cfg.render.width
        keys = self.param_keys
        leaves = [{k: x[k].detach().requires_grad_(True) for k in keys} for x in xs]
        draws = [self._draws(t) for t in ts]
        views = [self._views(d) for d in draws]
        with torch.enable_grad():
            out = rasterize_gaussians(
                leaves,
                [c.to(self.device) for c, _ in views],
                h,
                w,
                [bg.to(self.device) for _, bg in views],
                backend=g.backend,
                color_mode=g.color_mode,
            )
            rgb = out["rgb"][:, :b].reshape(p * b, h, w, 3).permute(0, 3, 1, 2)
            latents = self.guidance.encode(rgb)
            grad, _ = self.guidance.gradient(latents, draws, ts, xs)
            sds = sds_surrogate(latents, grad).reshape(p, b).mean(1)
            lam = torch.tensor([scheduled_value(cfg.loss.lambda_sds, t) for t in ts], device=self.device)
            total = (lam * sds).sum() + self._extra_loss(out, ts).sum()
            flat = [leaf[k] for leaf in leaves for k in keys]
            grads = torch.autograd.grad(total, flat + list(out["means2d"]), allow_unused=True)
        drifts: list[Drift] = []
        for i in range(p):
            drift: Drift = {}
            for j, k in enumerate(keys):
                gr = grads[i * len(keys) + j]
                drift[k] = torch.zeros_like(leaves[i][k]) if gr is None else gr.detach()
            g2d = grads[len(flat) + i]
            g2d = torch.zeros_like(out["means2d"][i]) if g2d is None else g2d
            drift.update(view_space_stats(g2d, out["radii"][i], h, w))
            drifts.append(drift)
        return drifts

    # -- the update ---------------------------------------------------------------------------
    def update(self, x: State, drift: Drift, t: int) -> State | Updated:
        """Adam step, then the densification strategy (statistics, densify / prune, opacity reset)."""
        new = self.optimizer.apply(x, {k: drift[k] for k in self.param_keys}, t)
        gen = StepRandom(self.seed, t).generator("densify")
        new, index_map = self.densify.step(new, {k: drift[k] for k in STAT_KEYS}, t, gen)
        return Updated(new, index_map) if index_map else new

    def replicate(self, device: torch.device) -> GaussianTextTo3D:
        clone = copy.copy(self)
        clone.device = torch.device(device)
        clone.guidance = self.guidance.replicate(device)
        clone.reference = self.reference.to(device) if self.reference is not None else None
        return clone
