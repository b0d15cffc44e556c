"""Text-to-3D with a NeRF and SDS, exposed as a Picard :class:`Process`.

``unit(x, t)`` renders a batch of random cameras drawn from ``StepRandom(seed, t)``, runs the prior
once (conditional and unconditional halves together), and returns the gradients of SDS plus the
regularizers; ``update`` is the functional optimizer step. ``unit_batch`` renders every slot of a
window in one call over stacked parameters and runs ONE prior forward for all of them, so the batched
executor gets a whole window for about the cost of one large batch. ``unit`` is ``unit_batch`` with
one slot, so both paths are the same code.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from dreampropeller.guidance.prior import DiffusionPrior, cat_conditions
from dreampropeller.guidance.prompts import PromptConfig, PromptProcessor
from dreampropeller.guidance.sds import SDSConfig, draw_sds, scheduled_value, sds_gradient, sds_surrogate
from dreampropeller.guidance.vsd import VSDConfig
from dreampropeller.optim import make_optimizer
from dreampropeller.picard.process import Drift, Process, State
from dreampropeller.picard.rng import StepRandom
from dreampropeller.scene.cameras import CameraSampler
from dreampropeller.scene.nerf import NeRFConfig, init_nerf_params, nerf_density, sample_background_colors
from dreampropeller.scene.regularizers import opacity_sparsity, orientation_loss, z_variance
from dreampropeller.scene.shading import ShadingConfig, choose_shading, sample_light_positions
from dreampropeller.scene.volume import occupancy_grid, render_cameras
from dreampropeller.systems.gaussian_config import GaussianConfig, ImageConfig


@dataclass
class RenderConfig:
    """Training renders: resolution, cameras per step, samples per ray."""

    height: int = 32
    width: int = 32
    batch_size: int = 2
    num_samples: int = 32


@dataclass
class LevelsConfig:
    """Progressive hash-grid levels: ``start`` levels at first, one more every ``every`` steps."""

    start: int = 4
    every: int = 60


@dataclass
class OccupancyConfig:
    """Empty-space skipping (as nerfacc's occupancy grid): samples in empty cells are not evaluated.

    The grid is a buffer of the Picard state, recomputed from the density in ``update`` every
    ``every`` steps from ``start`` on (deterministic, so rollouts replay it exactly).
    """

    enabled: bool = True
    resolution: int = 32
    every: int = 16
    start: int = 32
    level: float = 0.05


@dataclass
class LossConfig:
    """Loss weights (numbers or ``[start_step, start, end, end_step]`` schedules)."""

    lambda_sds: Any = 1.0
    lambda_orient: Any = 0.0
    lambda_sparsity: Any = 0.0
    lambda_z_variance: Any = 0.0


@dataclass
class PicardConfig:
    """How the run is propelled (window 1 = the sequential loop)."""

    window: Any = "auto"
    threshold: float | None = None
    adaptive: bool = True
    ema: float = 0.9
    aggregate: str = "middle"
    init: str = "copy"
    scale: str = "step"
    executor: str = "auto"
    devices: list = field(default_factory=list)
    max_batch: int | None = None


@dataclass
class ExportConfig:
    """What a finished run writes."""

    turntable_views: int = 120
    fps: int = 30
    video_size: int = 128
    video_samples: int = 64
    mesh_resolution: int = 96
    mesh_threshold: Any = "auto"
    elevation: float = 15.0
    distance: float = 2.0
    fovy: float = 50.0


def default_optimizer() -> dict[str, Any]:
    """DreamFusion's Adam: lr 0.01 (background 0.001), betas (0.9, 0.99), eps 1e-15."""
    return {
        "name": "adam",
        "lr": 0.01,
        "betas": [0.9, 0.99],
        "eps": 1e-15,
        "groups": [{"names": ["background.*"], "lr": 0.001}],
    }


@dataclass
class TextTo3DConfig:
    """Everything a text-to-3D run needs (defaults: the embedded tiny prior on a CPU)."""

    prompt: str = ""
    seed: int = 0
    steps: int = 600
    representation: str = "nerf"
    prior: str = "tiny"
    prior_path: str | None = None
    guidance: str = "sds"  # sds, or vsd (ProlificDreamer: dreampropeller.systems.vsd)
    device: str = "auto"
    render: RenderConfig = field(default_factory=RenderConfig)
    camera: CameraSampler = field(
        default_factory=lambda: CameraSampler(
            elevation_range=(-10.0, 60.0), distance_range=(1.5, 2.0), fovy_range=(40.0, 60.0)
        )
    )
    nerf: NeRFConfig = field(default_factory=lambda: NeRFConfig(n_levels=8, finest_resolution=128))
    shading: ShadingConfig = field(default_factory=lambda: ShadingConfig(ambient_only_steps=0))
    prompt_processing: PromptConfig = field(default_factory=PromptConfig)
    sds: SDSConfig = field(
        default_factory=lambda: SDSConfig(guidance_scale=20.0, min_step_percent=0.02, max_step_percent=0.98)
    )
    optimizer: dict = field(default_factory=default_optimizer)
    levels: LevelsConfig = field(default_factory=LevelsConfig)
    occupancy: OccupancyConfig = field(default_factory=OccupancyConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    picard: PicardConfig = field(default_factory=PicardConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    vsd: VSDConfig = field(default_factory=VSDConfig)
    gaussians: GaussianConfig = field(default_factory=GaussianConfig)
    image: ImageConfig = field(default_factory=ImageConfig)


OCCUPANCY = "occupancy.grid"


def levels_at(cfg: TextTo3DConfig, step: int) -> int:
    """Hash-grid levels in use at ``step``: ``levels.start``, one more every ``levels.every`` steps."""
    n = cfg.nerf.n_levels
    return n if cfg.levels.every <= 0 else min(n, cfg.levels.start + step // cfg.levels.every)


class TextTo3D(Process):
    """NeRF + SDS as a Picard process."""

    @property
    def unit_keys(self) -> tuple[str, ...]:
        """Besides the parameters, what a unit reads (it travels to distributed workers)."""
        return (OCCUPANCY,) if self.cfg.occupancy.enabled else ()

    def __init__(
        self, cfg: TextTo3DConfig, prior: DiffusionPrior, device: torch.device | str = "cpu"
    ) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.prior = prior.to(self.device).eval()
        for p in self.prior.parameters():
            p.requires_grad_(False)
        self.prompts = PromptProcessor(self.prior, cfg.prompt, cfg.prompt_processing)
        self.optimizer = make_optimizer(cfg.optimizer)
        self.seed = int(cfg.seed)
        self.param_keys = tuple(init_nerf_params(cfg.nerf, torch.Generator().manual_seed(0)))

    # -- state -------------------------------------------------------------------------------
    def initial_state(self) -> State:
        """Fresh NeRF parameters (seeded) and optimizer state on the run's device."""
        params = init_nerf_params(self.cfg.nerf, torch.Generator().manual_seed(self.seed))
        x = self.optimizer.init_state({k: v.to(self.device) for k, v in params.items()})
        if self.cfg.occupancy.enabled:
            g = self.cfg.occupancy.resolution
            x[OCCUPANCY] = torch.ones(g, g, g, dtype=torch.uint8, device=self.device)
        return x

    def refresh_occupancy(self, x: State, t: int) -> State:
        """Recompute the occupancy grid from the density after step ``t`` when it is due."""
        oc = self.cfg.occupancy
        if OCCUPANCY not in x or (t + 1) < oc.start or (t + 1) % oc.every != 0:
            return x
        slotted = {k: x[k].detach()[None] for k in self.param_keys}
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
        cams = cfg.camera.sample(b, rnd.generator("camera"))
        lights = sample_light_positions(cams.position, rnd.generator("light"), cfg.shading)
        modes = choose_shading(t, b, rnd.generator("shading"), cfg.shading)
        bg_mask, bg_colors = sample_background_colors(cfg.nerf, b, rnd.generator("background"))
        res = self.prior.image_size
        shape = self._model_shape(res)
        ts, noise = draw_sds(cfg.sds, self.prior, b, shape, rnd.generator("sds"), t)
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

    def _model_shape(self, res: int) -> tuple[int, ...]:
        shape = getattr(self, "_shape_cache", None)
        if shape is None:
            with torch.no_grad():
                probe = torch.zeros(1, 3, self.cfg.render.height, self.cfg.render.width, device=self.device)
                shape = tuple(self.prior.encode_images(probe).shape[1:])
            self._shape_cache = shape
        return shape

    def unit(self, x: State, t: int) -> Drift:
        return self.unit_batch([x], [t])[0]

    def unit_batch(self, xs: Sequence[State], ts: Sequence[int]) -> list[Drift]:
        cfg = self.cfg
        p, b = len(xs), cfg.render.batch_size
        h, w = cfg.render.height, cfg.render.width
        dev = self.device
        leaves = {k: torch.stack([x[k].detach() for x in xs]).requires_grad_(True) for k in self.param_keys}
        draws = [self._draws(t) for t in ts]
        lam_orient = [scheduled_value(cfg.loss.lambda_orient, t) for t in ts]
        need_normals = any(v > 0 for v in lam_orient)
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
                reg = self._regularizers(out, [ts[i] for i in idx], need_normals)
                for j, i in enumerate(idx):
                    images[i] = out["rgb"][j]
                    regs[i] = reg[j]
            rgb = torch.stack(images).reshape(p * b, h, w, 3).permute(0, 3, 1, 2)
            latents = self.prior.encode_images(rgb)
            grad = self.guidance_gradient(latents, draws, ts)
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
        return out_drifts

    def guidance_gradient(
        self, latents: torch.Tensor, draws: Sequence[dict[str, Any]], ts: Sequence[int]
    ) -> torch.Tensor:
        """The score-distillation gradient w.r.t. ``latents`` [P*B, C, h, w] (SDS; VSD overrides this)."""
        dev = self.device
        cond, uncond = zip(
            *(self.prompts.condition(d["cameras"].elevation, d["cameras"].azimuth) for d in draws)
        )
        camera = torch.cat(
            [
                torch.stack([d["cameras"].elevation, d["cameras"].azimuth, d["cameras"].distance], -1)
                for d in draws
            ]
        ).to(dev)
        t_all = torch.cat([d["t"] for d in draws]).to(dev)
        noise = torch.cat([d["noise"] for d in draws]).to(dev, latents.dtype)
        return sds_gradient(
            self.prior,
            latents,
            t_all,
            noise,
            cat_conditions(cond),
            cat_conditions(uncond),
            camera if self.prior.uses_camera else None,
            self.cfg.sds,
            step=ts[0],
        )

    def _regularizers(self, out: dict[str, torch.Tensor], ts: Sequence[int], normals: bool) -> torch.Tensor:
        """Weighted regularizers per slot [P]."""
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
        return total

    # -- the update ---------------------------------------------------------------------------
    def update(self, x: State, drift: Drift, t: int) -> State:
        return self.refresh_occupancy(self.optimizer.apply(x, drift, t), t)

    def replicate(self, device: torch.device) -> TextTo3D:
        clone = copy.copy(self)
        clone.device = torch.device(device)
        clone.prior = copy.deepcopy(self.prior).to(device)
        clone.prompts = PromptProcessor(clone.prior, self.cfg.prompt, self.cfg.prompt_processing)
        clone._shape_cache = None
        return clone
