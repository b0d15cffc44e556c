"""Variational score distillation (ProlificDreamer): a camera-conditioned LoRA of the prior's UNet.

``grad = w(t) (eps_pretrained - eps_lora)``. ``eps_pretrained`` is the prior with classifier-free
guidance (the ``sds`` section's scale and convention; ProlificDreamer uses diffusers' convention with
s = 7.5). ``eps_lora`` is the same UNet with a LoRA (peft, on the attention projections) and a camera
embedding added to the timestep embedding; with ``guidance_scale_lora`` s_l != 1 it is
``eps(no camera) + s_l (eps(camera) - eps(no camera))`` (threestudio's rule; s_l = 1: camera only).

The LoRA learns the distribution of the current renders: plain diffusion loss ``||eps_lora - noise||^2``
on DETACHED model-space renders, timesteps uniform over the whole schedule, 10% camera dropout. Every
draw of that loss comes from ``StepRandom(seed, t).generator("lora")``.

The LoRA lives inside the prior's UNet, switched off by default, so the prior keeps answering as the
pretrained model; :func:`lora_active` switches it on (with camera features) inside a block.

A camera-conditioned prior (``uses_camera``: the embedded tiny prior, whose class embedding reads the
camera) gets the camera in every forward, pretrained and LoRA alike, as its SDS does; camera dropout
and the LoRA's camera guidance act on the LoRA's own camera embedding only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from dreampropeller.guidance.prior import DiffusionPrior, TextCondition, cat_conditions
from dreampropeller.guidance.sds import SDSConfig, clip_gradient, guided_noise, sds_weight

CAMERA_FEATURES = 5
MODES = ("worker", "synchronized", "accepted")


@dataclass
class VSDConfig:
    """Knobs of VSD and its LoRA (defaults: ProlificDreamer / threestudio, rank 4, AdamW 1e-4; the LoRA
    in the Picard state, ``mode="synchronized"``, measured best under Picard)."""

    # synchronized (default): the LoRA in the Picard state, stepped in the rollout on accepted iterates
    # (closest to sequential at equal rounds, docs/priors.md); worker: each worker's own LoRA, a step per
    # evaluated batch (the authors'); accepted: one LoRA, a step per iteration on accepted renders
    mode: str = "synchronized"
    lora_rank: int = 4
    lora_alpha: float | None = None  # None: equal to the rank (scale 1)
    lora_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    lora_lr: float = 1e-4
    lora_betas: tuple[float, float] = (0.9, 0.999)
    lora_weight_decay: float = 0.0
    camera_hidden: int = 64
    camera_dropout: float = 0.1
    guidance_scale_lora: float = 1.0
    lora_seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"vsd.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if int(self.lora_rank) < 1:
            raise ValueError(f"vsd.lora_rank must be >= 1, got {self.lora_rank}")
        if not 0.0 <= float(self.camera_dropout) <= 1.0:
            raise ValueError(f"vsd.camera_dropout must be in [0, 1], got {self.camera_dropout}")


def prior_camera(prior: DiffusionPrior, camera: torch.Tensor | None, copies: int = 1) -> torch.Tensor | None:
    """The camera a prior's own forward reads: ``camera`` repeated ``copies`` times, or None when the
    prior ignores cameras."""
    if camera is None or not prior.uses_camera:
        return None
    return torch.cat([camera] * copies) if copies > 1 else camera


def camera_features(camera: torch.Tensor) -> torch.Tensor:
    """[B, 5] = (sin az, cos az, elevation rad, distance, 1) of camera [B, 3] = (elev deg, az deg, dist)."""
    cam = camera.float().reshape(-1, 3)
    el, az = torch.deg2rad(cam[:, 0]), torch.deg2rad(cam[:, 1])
    return torch.stack([az.sin(), az.cos(), el, cam[:, 2], torch.ones_like(el)], dim=-1)


class CameraTimeEmbedding(torch.nn.Module):
    """The UNet's timestep embedding plus an MLP of camera features (zero-initialized output).

    ``features`` is set only inside :func:`lora_active`; elsewhere the module is the original one.
    """

    def __init__(self, base: torch.nn.Module, out_dim: int, hidden: int) -> None:
        super().__init__()
        self.base = base
        self.camera = torch.nn.Sequential(
            torch.nn.Linear(CAMERA_FEATURES, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, out_dim)
        )
        torch.nn.init.zeros_(self.camera[2].weight)
        torch.nn.init.zeros_(self.camera[2].bias)
        self.features: torch.Tensor | None = None

    def forward(self, sample: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        out = self.base(sample, condition)
        if self.features is None:
            return out
        return out + self.camera(self.features.to(self.camera[0].weight)).to(out.dtype)


def add_lora(prior: DiffusionPrior, cfg: VSDConfig) -> None:
    """Inject the LoRA (peft) and the camera embedding into ``prior.unet`` (seeded; starts as a no-op)."""
    from peft import LoraConfig

    unet = prior.unet
    if isinstance(unet.time_embedding, CameraTimeEmbedding):
        return
    rank = int(cfg.lora_rank)
    config = LoraConfig(
        r=rank,
        lora_alpha=float(cfg.lora_alpha if cfg.lora_alpha is not None else rank),
        target_modules=list(cfg.lora_targets),
        init_lora_weights=True,  # A random, B zero: the LoRA starts as the pretrained model
    )
    device = next(unet.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(int(cfg.lora_seed))
        unet.add_adapter(config)
        out_dim = unet.time_embedding.linear_2.out_features
        camera = CameraTimeEmbedding(unet.time_embedding, out_dim, int(cfg.camera_hidden)).to(device)
    unet.time_embedding = camera
    for p in lora_parameters(prior).values():  # trained in fp32 even when the UNet is fp16
        p.data = p.data.float()
    set_lora_enabled(prior, False)


def _tuner_layers(prior: DiffusionPrior) -> list[Any]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    cache = getattr(prior, "_lora_layers", None)
    if cache is None or cache[0] is not prior.unet:
        layers = [m for m in prior.unet.modules() if isinstance(m, BaseTunerLayer)]
        cache = (prior.unet, layers)
        prior._lora_layers = cache
    return cache[1]


def set_lora_enabled(prior: DiffusionPrior, enabled: bool) -> None:
    """Switch the LoRA layers on or off (off: the UNet is the pretrained one)."""
    for layer in _tuner_layers(prior):
        layer.enable_adapters(enabled)


def lora_parameters(prior: DiffusionPrior) -> dict[str, torch.nn.Parameter]:
    """The trainable VSD parameters (LoRA matrices and the camera MLP) by name, in a fixed order."""
    return {
        name: p
        for name, p in prior.unet.named_parameters()
        if "lora_" in name or name.startswith("time_embedding.camera.")
    }


def load_lora(prior: DiffusionPrior, tensors: Mapping[str, torch.Tensor]) -> None:
    """Copy ``tensors`` (named as :func:`lora_parameters`) into the LoRA parameters."""
    params = lora_parameters(prior)
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)


@contextlib.contextmanager
def lora_active(prior: DiffusionPrior, features: torch.Tensor) -> Iterator[None]:
    """Inside the block the UNet is the LoRA model conditioned on camera ``features`` [B, 5]."""
    emb = prior.unet.time_embedding
    if not isinstance(emb, CameraTimeEmbedding):
        raise ValueError("the prior has no VSD LoRA: call add_lora(prior, cfg) first")
    set_lora_enabled(prior, True)
    emb.features = features
    try:
        yield
    finally:
        emb.features = None
        set_lora_enabled(prior, False)


def lora_noise(
    prior: DiffusionPrior,
    noisy: torch.Tensor,
    t: torch.Tensor,
    cond: TextCondition,
    camera: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """``eps_lora`` (see the module docstring); differentiable w.r.t. the LoRA parameters."""
    feats = camera_features(camera).to(noisy.device)
    if scale == 1.0:
        with lora_active(prior, feats):
            return prior.predict_noise(noisy, t, cond, prior_camera(prior, camera))
    with lora_active(prior, torch.cat([feats, torch.zeros_like(feats)])):
        eps = prior.predict_noise(
            torch.cat([noisy, noisy]),
            torch.cat([t, t]),
            cat_conditions([cond, cond]),
            prior_camera(prior, camera, 2),
        )
    eps_cam, eps_free = eps.chunk(2)
    return guided_noise(eps_cam, eps_free, scale, "diffusers")


def pretrained_noise(
    prior: DiffusionPrior,
    noisy: torch.Tensor,
    t: torch.Tensor,
    cond: TextCondition,
    uncond: TextCondition,
    cfg: SDSConfig,
    scales: torch.Tensor | float | None = None,
    camera: torch.Tensor | None = None,
) -> torch.Tensor:
    """Classifier-free-guided ``eps_pretrained`` (one forward of ``2n`` samples, LoRA off)."""
    eps = prior.predict_noise(
        torch.cat([noisy, noisy]),
        torch.cat([t, t]),
        cat_conditions([cond, uncond]),
        prior_camera(prior, camera, 2),
    )
    eps_c, eps_u = eps.float().chunk(2)
    s = cfg.guidance_scale if scales is None else scales
    if isinstance(s, torch.Tensor):
        s = s.view(-1, *([1] * (noisy.dim() - 1))).to(eps_c)
    return guided_noise(eps_c, eps_u, s, cfg.cfg_convention)


def vsd_from_noise(
    eps_pretrained: torch.Tensor,
    eps_lora: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    t: torch.Tensor,
    cfg: SDSConfig,
    step: int | Sequence[int] = 0,
) -> torch.Tensor:
    """``w(t) (eps_pretrained - eps_lora)`` with the ``sds`` weighting and optional clamp (the math);
    ``step`` is the optimization step of every sample or one per sample."""
    w = sds_weight(cfg, alphas_cumprod.to(eps_pretrained.device, torch.float32), t.to(eps_pretrained.device))
    grad = w.view(-1, *([1] * (eps_pretrained.dim() - 1))) * (eps_pretrained - eps_lora.float())
    return clip_gradient(torch.nan_to_num(grad), cfg.grad_clip, step)


def vsd_gradient(
    prior: DiffusionPrior,
    latents: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    cond: TextCondition,
    uncond: TextCondition,
    camera: torch.Tensor,
    cfg: SDSConfig,
    vsd: VSDConfig,
    scales: torch.Tensor | float | None = None,
    step: int | Sequence[int] = 0,
) -> torch.Tensor:
    """The VSD gradient w.r.t. ``latents`` [n, C, h, w] (no graph), with the prior's current LoRA."""
    with torch.no_grad():
        x = latents.detach()
        noisy = prior.add_noise(x, noise.to(x), t)
        eps_pre = pretrained_noise(prior, noisy, t, cond, uncond, cfg, scales, camera)
        eps_lora = lora_noise(prior, noisy, t, cond, camera, float(vsd.guidance_scale_lora))
        grad = vsd_from_noise(eps_pre, eps_lora, prior.alphas_cumprod, t, cfg, step)
    return grad.to(latents.dtype)


def draw_lora(
    prior: DiffusionPrior, n: int, shape: tuple[int, ...], generator: torch.Generator, dropout: float
) -> dict[str, torch.Tensor]:
    """Random inputs of the LoRA loss: timesteps [n] over the schedule, noise, camera-keep mask [n]."""
    t = torch.randint(0, prior.num_train_timesteps, (n,), generator=generator)
    noise = torch.randn(n, *shape, generator=generator)
    keep = (torch.rand(n, generator=generator) >= dropout).float()
    return {"t": t, "noise": noise, "keep": keep}


def _lora_inputs(
    prior: DiffusionPrior, latents: torch.Tensor, camera: torch.Tensor, draws: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(noisy, t, noise, camera features with dropout)`` of the LoRA loss on detached ``latents``."""
    dev = latents.device
    x = latents.detach()
    t, noise = draws["t"].to(dev), draws["noise"].to(x)
    feats = camera_features(camera).to(dev) * draws["keep"].to(dev)[:, None]
    return prior.add_noise(x, noise, t), t, noise, feats


def lora_loss(
    prior: DiffusionPrior,
    latents: torch.Tensor,
    cond: TextCondition,
    camera: torch.Tensor,
    draws: Mapping[str, torch.Tensor],
) -> torch.Tensor:
    """Mean diffusion loss ``||eps_lora(x_t, t, camera) - noise||^2`` on detached ``latents``."""
    noisy, t, noise, feats = _lora_inputs(prior, latents, camera, draws)
    with lora_active(prior, feats):
        eps = prior.predict_noise(noisy, t, cond, prior_camera(prior, camera))
    return (eps.float() - noise.float()).square().mean()


def lora_grads(
    prior: DiffusionPrior,
    latents: torch.Tensor,
    cond: TextCondition,
    camera: torch.Tensor,
    draws: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Gradients of :func:`lora_loss` w.r.t. the LoRA parameters (by name)."""
    noisy, t, noise, feats = _lora_inputs(prior, latents, camera, draws)
    with torch.enable_grad(), lora_active(prior, feats):
        params = lora_parameters(prior)
        eps = prior.predict_noise(noisy, t, cond, prior_camera(prior, camera))
        loss = (eps.float() - noise.float()).square().mean()
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {
        k: (torch.zeros_like(p) if g is None else g.detach())
        for (k, p), g in zip(params.items(), grads, strict=True)
    }
