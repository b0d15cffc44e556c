"""Score distillation sampling (DreamFusion), generic over :class:`DiffusionPrior`.

``grad = w(t) (eps_guided - eps)``, applied to the model-space inputs through the surrogate loss
``0.5 * ||x - sg(x - grad)||^2`` (summed per sample), so ``d loss / d x = grad``.

Classifier-free guidance conventions (``cfg_convention``):

* ``diffusers``: ``eps_u + s (eps_c - eps_u)`` (also threestudio's VSD); s = 7.5 is Stable Diffusion's
  default for sampling.
* ``threestudio``: ``eps_c + s (eps_c - eps_u)`` (threestudio's SDS), so its s = 100 equals
  diffusers' s = 101.

Timesteps are drawn per camera, uniformly in ``[min_step, max_step]`` of the schedule; both bounds may
be annealed linearly over steps (``[start_step, start_value, end_value, end_step]``), evaluated at the
step ``t`` given to the unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dreampropeller.guidance.prior import DiffusionPrior, TextCondition, cat_conditions

Scheduled = float | Sequence[float]


def scheduled_value(value: Scheduled, step: int) -> float:
    """A constant, or ``[start_step, start_value, end_value, end_step]`` linearly interpolated at ``step``."""
    if isinstance(value, int | float):
        return float(value)
    if len(value) != 4:
        raise ValueError(
            f"a scheduled value is a number or [start_step, start, end, end_step], got {value!r}"
        )
    s0, v0, v1, s1 = (float(v) for v in value)
    if step <= s0:
        return v0
    if step >= s1:
        return v1
    return v0 + (v1 - v0) * (step - s0) / (s1 - s0)


def row_steps(ts: Sequence[int], rows: int) -> list[int]:
    """The step of each of ``rows`` sample rows, split evenly over the slots of steps ``ts``."""
    per = rows // max(len(ts), 1)
    if per * len(ts) != rows:
        raise ValueError(f"{rows} rows do not split evenly over {len(ts)} slots")
    return [int(t) for t in ts for _ in range(per)]


def clip_gradient(grad: torch.Tensor, clip: Scheduled | None, step: int | Sequence[int]) -> torch.Tensor:
    """Clamp ``|grad|`` elementwise by ``clip`` scheduled at each row's own step (or one step for all).

    A window's slots sit at different steps, so a scheduled clip must be evaluated per row.
    """
    if clip is None:
        return grad
    if isinstance(step, int):
        c = scheduled_value(clip, step)
        return grad.clamp(-c, c)
    c = torch.tensor([scheduled_value(clip, s) for s in step], dtype=grad.dtype, device=grad.device)
    c = c.view(-1, *([1] * (grad.dim() - 1)))
    return torch.maximum(torch.minimum(grad, c), -c)


@dataclass
class SDSConfig:
    """Knobs of SDS."""

    guidance_scale: float = 100.0
    cfg_convention: str = "threestudio"
    min_step_percent: Scheduled = 0.02
    max_step_percent: Scheduled = 0.98
    weighting: str = "sds"  # sds: 1 - alpha_bar; uniform: 1; fantasia: sqrt(alpha_bar) (1 - alpha_bar)
    grad_clip: Scheduled | None = None  # clamp |grad| elementwise

    def __post_init__(self) -> None:
        if self.cfg_convention not in ("diffusers", "threestudio"):
            raise ValueError(
                f"cfg_convention must be 'diffusers' or 'threestudio', got {self.cfg_convention!r}"
            )
        if self.weighting not in ("sds", "uniform", "fantasia"):
            raise ValueError(f"weighting must be sds, uniform or fantasia, got {self.weighting!r}")


def guided_noise(
    eps_cond: torch.Tensor, eps_uncond: torch.Tensor, scale: float, convention: str
) -> torch.Tensor:
    """Classifier-free guidance by ``convention`` (see the module docstring)."""
    if convention == "diffusers":
        return eps_uncond + scale * (eps_cond - eps_uncond)
    return eps_cond + scale * (eps_cond - eps_uncond)


def timestep_bounds(cfg: SDSConfig, num_train_timesteps: int, step: int) -> tuple[int, int]:
    """Integer timestep range ``[lo, hi]`` at optimization step ``step``."""
    lo = int(scheduled_value(cfg.min_step_percent, step) * num_train_timesteps)
    hi = int(scheduled_value(cfg.max_step_percent, step) * num_train_timesteps)
    lo = max(0, min(lo, num_train_timesteps - 1))
    return lo, max(lo, min(hi, num_train_timesteps - 1))


def draw_sds(
    cfg: SDSConfig, prior: DiffusionPrior, n: int, shape: Sequence[int], generator: torch.Generator, step: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Timesteps [n] and noise [n, *shape] of one step, from that step's generator (CPU)."""
    lo, hi = timestep_bounds(cfg, prior.num_train_timesteps, step)
    t = torch.randint(lo, hi + 1, (n,), generator=generator)
    noise = torch.randn(n, *shape, generator=generator)
    return t, noise


def sds_weight(cfg: SDSConfig, alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``w(t)`` per sample."""
    a = alphas_cumprod[t]
    if cfg.weighting == "sds":
        return 1.0 - a
    if cfg.weighting == "uniform":
        return torch.ones_like(a)
    return a.sqrt() * (1.0 - a)


def sds_gradient(
    prior: DiffusionPrior,
    latents: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    cond: TextCondition,
    uncond: TextCondition,
    camera: torch.Tensor | None,
    cfg: SDSConfig,
    scales: torch.Tensor | float | None = None,
    step: int | Sequence[int] = 0,
) -> torch.Tensor:
    """The SDS gradient w.r.t. ``latents`` [n, C, h, w] (no graph); one prior forward of ``2n`` samples.

    ``scales`` [n] gives a guidance scale per sample (slots of a window may differ), else ``cfg``'s;
    ``step`` is the optimization step of every sample, or one per sample (:func:`row_steps`).
    """
    with torch.no_grad():
        x = latents.detach()
        noisy = prior.add_noise(x, noise, t)
        cams = None if camera is None else torch.cat([camera, camera])
        eps = prior.predict_noise(
            torch.cat([noisy, noisy]), torch.cat([t, t]), cat_conditions([cond, uncond]), cams
        )
        eps_c, eps_u = eps.float().chunk(2)
        s = cfg.guidance_scale if scales is None else scales
        if isinstance(s, torch.Tensor):
            s = s.view(-1, *([1] * (x.dim() - 1))).to(x)
        guided = guided_noise(eps_c, eps_u, s, cfg.cfg_convention)
        w = sds_weight(cfg, prior.alphas_cumprod.to(x.device, torch.float32), t.to(x.device))
        grad = w.view(-1, *([1] * (x.dim() - 1))) * (guided - noise.to(guided))
        grad = clip_gradient(torch.nan_to_num(grad), cfg.grad_clip, step)
    return grad.to(latents.dtype)


def sds_surrogate(latents: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Per-sample loss [n] whose gradient w.r.t. ``latents`` is ``grad``: ``0.5 ||x - sg(x - g)||^2``."""
    target = (latents - grad).detach()
    return 0.5 * (latents - target).square().flatten(1).sum(1)
