"""DDIM sampling with classifier-free guidance, for previews and for scoring the prior's own samples."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dreampropeller.guidance.prior import DiffusionPrior, cat_conditions


def ddim_timesteps(num_train_timesteps: int, steps: int) -> torch.Tensor:
    """``steps`` descending integer timesteps from ``T - 1`` to 0."""
    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"steps must be in [1, {num_train_timesteps}], got {steps}")
    return torch.linspace(num_train_timesteps - 1, 0, steps).round().long()


@torch.no_grad()
def ddim_sample(
    prior: DiffusionPrior,
    prompts: Sequence[str],
    camera: torch.Tensor | None = None,
    *,
    steps: int = 50,
    guidance_scale: float = 5.0,
    generator: torch.Generator | None = None,
    clip_x0: bool = True,
) -> torch.Tensor:
    """Images [B, 3, H, W] in [0, 1] for ``prompts`` (one per image) at ``camera`` [B, 3], by DDIM.

    The initial noise comes from ``generator`` (on the prior's device); guidance mixes the conditional
    and the unconditional (``""``) prediction, evaluated in one batched call.
    """
    device = prior.alphas_cumprod.device
    b = len(prompts)
    cond = cat_conditions([prior.encode_text(list(prompts)), prior.encode_text([""] * b)])
    cam2 = None if camera is None else torch.cat([camera, camera]).to(device)
    size = prior.image_size
    x = torch.randn(b, 3, size, size, generator=generator, device=device)
    alphas = prior.alphas_cumprod.to(device)
    ts = ddim_timesteps(prior.num_train_timesteps, steps).tolist()
    for i, t in enumerate(ts):
        tt = torch.full((2 * b,), t, device=device, dtype=torch.long)
        eps_c, eps_u = prior.predict_noise(torch.cat([x, x]), tt, cond, cam2).float().chunk(2)
        eps = eps_u + guidance_scale * (eps_c - eps_u)
        a = alphas[t]
        a_prev = alphas[ts[i + 1]] if i + 1 < len(ts) else torch.ones((), device=device)
        x0 = (x - (1.0 - a).sqrt() * eps) / a.sqrt()
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
            eps = (x - a.sqrt() * x0) / (1.0 - a).sqrt()
        x = a_prev.sqrt() * x0 + (1.0 - a_prev).sqrt() * eps
    return prior.decode(x)
