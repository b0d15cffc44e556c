"""Regularizers of a rendered volume, one loss per slot ([P]).

Inputs are the renderer's outputs; every dimension between the slot dimension and the sample /
channel dimension is reduced, so image-shaped [P, B, H, W, 1] and flat [P, R, 1] tensors both work.
"""

from __future__ import annotations

import torch


def _per_slot_mean(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).mean(-1)


def orientation_loss(
    weights: torch.Tensor, normals: torch.Tensor, rays_d: torch.Tensor, detach_weights: bool = True
) -> torch.Tensor:
    """DreamFusion's orientation loss [P]: mean over rays of ``sum_i w_i * max(0, n_i . d)^2``.

    Penalizes visible normals that face away from the camera (``n . d > 0`` with ``d`` the ray
    direction). ``weights`` [P, R, S], ``normals`` [P, R, S, 3], ``rays_d`` [P, R, 3]. Weights are
    detached by default (threestudio), so the loss only turns the normals.
    """
    w = weights.detach() if detach_weights else weights
    facing_away = (normals * rays_d.unsqueeze(-2)).sum(-1).clamp_min(0.0)
    return _per_slot_mean((w * facing_away.square()).sum(-1))


def opacity_sparsity(opacity: torch.Tensor, eps: float = 0.01) -> torch.Tensor:
    """Sparsity [P]: mean of ``sqrt(opacity^2 + eps)`` (threestudio's smooth L1 of the opacity)."""
    return _per_slot_mean((opacity.square() + eps).sqrt())


def opacity_entropy(opacity: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Binary entropy of the opacity [P], pushing every pixel towards fully empty or fully opaque."""
    o = opacity.clamp(eps, 1.0 - eps)
    return _per_slot_mean(-(o * torch.log(o) + (1.0 - o) * torch.log(1.0 - o)))


def z_variance(weights: torch.Tensor, t: torch.Tensor, opacity_floor: float = 1e-4) -> torch.Tensor:
    """Depth variance along each ray [P] (mean over rays with opacity above the floor), making
    surfaces thin: ``sum_i w_i (t_i - mean_t)^2 / sum_i w_i``. ``weights``, ``t``: [P, R, S]."""
    total = weights.sum(-1)
    mean_t = (weights * t).sum(-1) / total.clamp_min(opacity_floor)
    var = (weights * (t - mean_t.unsqueeze(-1)).square()).sum(-1) / total.clamp_min(opacity_floor)
    mask = (total > opacity_floor).to(var.dtype)
    p = weights.shape[0]
    return (var * mask).reshape(p, -1).sum(-1) / mask.reshape(p, -1).sum(-1).clamp_min(1.0)


def normal_smoothness(normal: torch.Tensor, opacity: torch.Tensor) -> torch.Tensor:
    """Smoothness of rendered normal maps [P]: mean squared difference of neighbouring pixels' normals.

    ``normal`` [P, B, H, W, 3] (opacity-weighted sums of unit normals, as the renderer returns them),
    ``opacity`` [P, B, H, W, 1]. Each pair is weighted by the (detached) product of the two pixels'
    opacities, so only pairs inside the silhouette count and the silhouette itself is not smoothed.
    Flat faces get one normal, hence one shade, instead of bumps that light into speckle.
    """
    o = opacity.detach()
    n = normal / o.clamp_min(1e-3)  # unit-length where opaque
    dx = (n[:, :, :, 1:] - n[:, :, :, :-1]).square().sum(-1, keepdim=True) * o[:, :, :, 1:] * o[:, :, :, :-1]
    dy = (n[:, :, 1:] - n[:, :, :-1]).square().sum(-1, keepdim=True) * o[:, :, 1:] * o[:, :, :-1]
    return 0.5 * (_per_slot_mean(dx) + _per_slot_mean(dy))
