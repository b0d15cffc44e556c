"""Text-to-3D with 3D Gaussians and SDS (DreamGaussian), exposed as a Picard :class:`Process`.

State: the Gaussian attributes (``gaussians.*``), the functional Adam's state (``optim/*``) and the
densification statistics (``densify.*``), all one row per Gaussian except Adam's scalar step counts.

``unit_batch`` renders every slot of a window (slots may hold different numbers of Gaussians: the
rasterizer takes a list of states and renders them one by one) and runs ONE prior forward for all
of them through :meth:`TextTo3D.guidance_gradient` (the shared SDS code). Besides the parameter
gradients the drift carries the view-space statistics of the step (gradient of the loss with respect
to the projected centres, visibility, screen radii), which ``update`` accumulates: the unit stays the
only place that differentiates, the update the only place that changes the state.

``update`` = Adam step (DreamGaussian's per-attribute learning rates, position lr decayed log-linearly),
statistics accumulation, then densify / prune and opacity reset on their schedule. A densification
returns ``Updated(state, IndexMap)`` whose maps cover parameters, moments and statistics exactly
(:func:`dreampropeller.scene.densify.densify_and_prune`), so the solver carries guesses through it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch

from dreampropeller.guidance.prior import DiffusionPrior
from dreampropeller.guidance.prompts import PromptProcessor
from dreampropeller.guidance.sds import draw_sds, scheduled_value, sds_surrogate
from dreampropeller.optim import make_optimizer
from dreampropeller.picard.process import Drift, State, Updated
from dreampropeller.picard.rng import StepRandom
from dreampropeller.scene.cameras import Cameras
from dreampropeller.scene.densify import (
    STAT_KEYS,
    accumulate_stats,
    densify_and_prune,
    densify_due,
    init_stats,
    opacity_reset_due,
    reset_opacity,
    stats_due,
    view_space_stats,
)
from dreampropeller.scene.gaussian_raster import BACKENDS, rasterize_gaussians
from dreampropeller.scene.gaussians import (
    COLOR_MODES,
    MEANS,
    GaussianError,
    check_count,
    gaussian_keys,
    init_gaussians,
)
from dreampropeller.systems.gaussian_config import BACKGROUNDS, GaussianConfig
from dreampropeller.systems.text_to_3d import TextTo3D, TextTo3DConfig

#: Bytes kept per (slot, view, Gaussian) instance by the projection and its autograd graph (measured
#: order of magnitude, rounded up).
BYTES_PER_INSTANCE = 512
#: Bytes kept per (Gaussian, pixel) pair by the torch compositor and its autograd graph (rounded up).
BYTES_PER_PAIR = 256
#: Floats of state per Gaussian and parameter float: value + two Adam moments.
STATE_COPIES = 3


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


# ------------------------------------------------------------------------------------------- checks


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


def peak_gaussians(cfg: TextTo3DConfig) -> int:
    """The most Gaussians the run may hold: the densification cap when it densifies within the run."""
    g = cfg.gaussians
    grows = any(densify_due(g.densify, t) for t in range(min(cfg.steps, g.densify.end)))
    return max(int(g.num_points), int(g.densify.max_count)) if grows else int(g.num_points)


def estimate_memory_bytes(cfg: TextTo3DConfig, window: int, extra_views: int = 0) -> int:
    """Rough peak memory of a Gaussian run: count x resolution x batch x window.

    Terms: the window's states (about ``2 window + 2`` of them live at once; parameters and two Adam
    moments each), the projection of every (slot, view, Gaussian) instance kept for the backward pass,
    and the (Gaussian, pixel) pairs of the compositor, with a screen footprint estimated from the
    point spacing at the peak count seen from the closest camera (twice that, for anisotropy).
    """
    g, r = cfg.gaussians, cfg.render
    n = peak_gaussians(cfg)
    floats = 14 + (9 if g.sh_degree == 1 else 0) + len(STAT_KEYS)
    states = (2 * window + 2) * n * floats * 4 * STATE_COPIES
    views = window * (r.batch_size + extra_views)
    fovy = min(cfg.camera.fovy_range)
    focal = 0.5 * r.height / math.tan(math.radians(fovy) / 2)
    spacing = g.radius * max(n, 1) ** (-1.0 / 3.0)  # Gaussian size ~ point spacing at that count
    sigma_px = spacing * focal / max(min(cfg.camera.distance_range), 0.1)
    side = 2 * math.ceil(3.0 * math.sqrt(sigma_px**2 + 0.3)) + 1
    footprint = min(2.0 * side * side, float(r.height * r.width))
    render = views * n * (BYTES_PER_INSTANCE + footprint * BYTES_PER_PAIR)
    return int(states + render)


def available_memory_bytes(device: torch.device) -> int:
    """Free memory of ``device``: CUDA's free bytes, or the host's MemAvailable."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def check_memory(cfg: TextTo3DConfig, window: int, device: torch.device, extra_views: int = 0) -> int:
    """Raise one clear line when the run's estimated peak memory exceeds what the device has."""
    need = estimate_memory_bytes(cfg, window, extra_views)
    limit = cfg.gaussians.memory_limit_gb
    have = int(float(limit) * 2**30) if limit is not None else available_memory_bytes(device)
    if need > have:
        r = cfg.render
        raise GaussianError(
            f"{peak_gaussians(cfg)} Gaussians x {r.height}x{r.width} px x batch {r.batch_size} x window "
            f"{window} need about {need / 2**30:.1f} GiB but {device} has {have / 2**30:.1f} GiB: lower "
            "gaussians.num_points / gaussians.densify.max_count, the resolution, the batch or the window"
        )
    return need


# ------------------------------------------------------------------------------------------ process


class GaussianTextTo3D(TextTo3D):
    """3D Gaussians + SDS as a Picard process (prompt processing and SDS shared with :class:`TextTo3D`)."""

    unit_keys: tuple[str, ...] = ()  # no occupancy grid: a unit reads only the Gaussians

    def __init__(
        self, cfg: TextTo3DConfig, prior: DiffusionPrior, device: torch.device | str = "cpu"
    ) -> None:
        validate_gaussian_config(cfg)
        self._setup_guidance(cfg, prior, device)
        g = cfg.gaussians
        self.gcfg: GaussianConfig = g
        self.optimizer = make_optimizer(g.optimizer or dreamgaussian_optimizer(cfg.steps))
        probe = init_gaussians(1, g.radius, torch.Generator(), sh_degree=g.sh_degree, color_mode=g.color_mode)
        self.param_keys = tuple(gaussian_keys(probe))

    def _setup_guidance(self, cfg: TextTo3DConfig, prior: DiffusionPrior, device: torch.device | str) -> None:
        """What :meth:`TextTo3D.guidance_gradient` reads: the frozen prior on the device and the prompts."""
        self.cfg = cfg
        self.device = torch.device(device)
        self.prior = prior.to(self.device).eval()
        for p in self.prior.parameters():
            p.requires_grad_(False)
        self.prompts = PromptProcessor(self.prior, cfg.prompt, cfg.prompt_processing)
        self.seed = int(cfg.seed)

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
        shape = self._model_shape(self.prior.image_size)
        ts, noise = draw_sds(cfg.sds, self.prior, b, shape, rnd.generator("sds"), t)
        return {"cameras": cams, "background": white.float()[:, None].expand(b, 3), "t": ts, "noise": noise}

    def _views(self, draws: dict[str, Any]) -> tuple[Cameras, torch.Tensor]:
        """Cameras and backgrounds [V, 3] a slot renders (the SDS views first; subclasses append)."""
        return draws["cameras"], draws["background"]

    def _extra_loss(self, out: dict[str, Any], ts: Sequence[int]) -> torch.Tensor:
        """Per-slot losses [P] besides SDS, from the renders ``out`` (none for text-to-3D)."""
        return torch.zeros(len(ts), device=self.device)

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
            latents = self.prior.encode_images(rgb)
            grad = self.guidance_gradient(latents, draws, ts)
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
        """Adam step, statistics, then densify / prune and opacity reset on their schedule."""
        dcfg = self.gcfg.densify
        new = self.optimizer.apply(x, {k: drift[k] for k in self.param_keys}, t)
        if not stats_due(dcfg, t):
            return new
        new = accumulate_stats(new, {k: drift[k] for k in STAT_KEYS})
        index_map = None
        if densify_due(dcfg, t):
            gen = StepRandom(self.seed, t).generator("densify")
            new, index_map = densify_and_prune(new, dcfg, gen, state_keys=self.optimizer.state_keys)
        if opacity_reset_due(dcfg, t):
            new = reset_opacity(new, dcfg.opacity_reset_value, state_keys=self.optimizer.state_keys)
        return Updated(new, index_map) if index_map else new
