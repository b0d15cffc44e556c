"""A set of 3D Gaussians as a flat dict of tensors (a Picard state fragment, no ``nn.Module``).

Raw (optimized) entries, one row per Gaussian:

* ``gaussians.means``      [N, 3] world positions
* ``gaussians.scales``     [N, 3] log standard deviations along the local axes (``exp`` activates)
* ``gaussians.quats``      [N, 4] rotations, (w, x, y, z), unnormalized (``normalize`` activates)
* ``gaussians.opacities``  [N]    logits (``sigmoid`` activates)
* ``gaussians.colors``     [N, 3] SH degree-0 (DC) coefficients, or RGB logits (see ``color_mode``)
* ``gaussians.sh_rest``    [N, 3, 3] optional degree-1 SH coefficients [coefficient, channel]

Colour modes: ``"sh"`` (3DGS / gsplat convention: ``rgb = max(0, 0.5 + C0 dc + C1 (-y s0 + z s1 - x s2))``
with ``(x, y, z)`` the unit direction from the camera centre to the Gaussian) and ``"rgb"``
(``sigmoid(logits)``, view independent).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

MEANS = "gaussians.means"
SCALES = "gaussians.scales"
QUATS = "gaussians.quats"
OPACITIES = "gaussians.opacities"
COLORS = "gaussians.colors"
SH_REST = "gaussians.sh_rest"
PARAM_KEYS: tuple[str, ...] = (MEANS, SCALES, QUATS, OPACITIES, COLORS, SH_REST)
REQUIRED_KEYS: tuple[str, ...] = (MEANS, SCALES, QUATS, OPACITIES, COLORS)
COLOR_MODES = ("sh", "rgb")

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
#: Default ceiling on the number of Gaussians (about 60 bytes of parameters each, x3 with Adam).
DEFAULT_MAX_COUNT = 2_000_000


class GaussianError(ValueError):
    """Bad Gaussian-set input (the message says what was wrong and what to do)."""


class Activated(NamedTuple):
    """Activated attributes of a Gaussian set (differentiable functions of the raw entries)."""

    means: Tensor  # [N, 3]
    scales: Tensor  # [N, 3] standard deviations
    quats: Tensor  # [N, 4] unit quaternions (w, x, y, z)
    opacities: Tensor  # [N] in (0, 1)


def gaussian_keys(state: dict[str, Tensor]) -> list[str]:
    """The Gaussian parameter keys present in ``state`` (``sh_rest`` only when there)."""
    return [k for k in PARAM_KEYS if k in state]


def num_gaussians(state: dict[str, Tensor]) -> int:
    """Number of Gaussians (rows) in ``state``."""
    if MEANS not in state:
        raise GaussianError(f"state has no {MEANS!r}; build it with init_gaussians()")
    return int(state[MEANS].shape[-2])


def check_gaussians(state: dict[str, Tensor], *, slots: bool = False) -> int:
    """Validate shapes of a Gaussian set; returns N. ``slots``: allow one leading slot dimension."""
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise GaussianError(f"Gaussian state lacks {missing}; build it with init_gaussians()")
    lead = state[MEANS].shape[:-2]
    if len(lead) > (1 if slots else 0):
        raise GaussianError(f"{MEANS} has shape {tuple(state[MEANS].shape)}; expected [N, 3] or [P, N, 3]")
    n = state[MEANS].shape[-2]
    expected = {
        MEANS: (n, 3),
        SCALES: (n, 3),
        QUATS: (n, 4),
        OPACITIES: (n,),
        COLORS: (n, 3),
        SH_REST: (n, 3, 3),
    }
    for key, shape in expected.items():
        if key in state and tuple(state[key].shape) != tuple(lead) + shape:
            raise GaussianError(
                f"{key} has shape {tuple(state[key].shape)}, expected {tuple(lead) + shape} "
                f"(N={n} from {MEANS})"
            )
    return int(n)


def check_count(n: int, max_count: int = DEFAULT_MAX_COUNT) -> None:
    """Raise if ``n`` Gaussians is not a usable count."""
    if n < 1:
        raise GaussianError(f"number of Gaussians must be >= 1, got {n}")
    if n > max_count:
        raise GaussianError(
            f"{n} Gaussians exceeds the limit of {max_count} (memory); lower the count or raise max_count"
        )


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] from quaternions (w, x, y, z) [..., 4] (normalized here)."""
    q = torch.nn.functional.normalize(quats, dim=-1)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)


def covariance_3d(scales: Tensor, quats: Tensor) -> Tensor:
    """World covariances ``R S S^T R^T`` [..., 3, 3] from standard deviations [..., 3] and quaternions."""
    m = quat_to_rotmat(quats) * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def activate(state: dict[str, Tensor]) -> Activated:
    """Means, scales (``exp``), unit quaternions and opacities (``sigmoid``) of a Gaussian set."""
    return Activated(
        state[MEANS],
        torch.exp(state[SCALES]),
        torch.nn.functional.normalize(state[QUATS], dim=-1),
        torch.sigmoid(state[OPACITIES]),
    )


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    """The DC SH coefficient whose colour is ``rgb``."""
    return (rgb - 0.5) / SH_C0


def rgb_to_logit(rgb: Tensor, eps: float = 1e-4) -> Tensor:
    """RGB logits whose sigmoid is ``rgb``."""
    return torch.logit(rgb.clamp(eps, 1 - eps))


def gaussian_colors(state: dict[str, Tensor], camera_positions: Tensor, color_mode: str = "sh") -> Tensor:
    """Per-camera RGB of every Gaussian, [B, N, 3], from its colour entries and the camera centres [B, 3]."""
    if color_mode not in COLOR_MODES:
        raise GaussianError(f"color_mode must be one of {COLOR_MODES}, got {color_mode!r}")
    colors = state[COLORS]
    b = camera_positions.shape[0]
    if color_mode == "rgb":
        if SH_REST in state:
            raise GaussianError(f"{SH_REST} needs color_mode='sh'; drop it or switch the colour mode")
        return torch.sigmoid(colors)[None].expand(b, -1, -1)
    rgb = SH_C0 * colors[None] + 0.5  # [1, N, 3]
    if SH_REST in state:
        dirs = torch.nn.functional.normalize(
            state[MEANS][None] - camera_positions[:, None], dim=-1
        )  # [B, N, 3]
        x, y, z = dirs[..., 0:1], dirs[..., 1:2], dirs[..., 2:3]
        sh = state[SH_REST]  # [N, 3 coefficients, 3 channels]
        rgb = rgb + SH_C1 * (-y * sh[None, :, 0] + z * sh[None, :, 1] - x * sh[None, :, 2])
    return rgb.expand(b, -1, -1).clamp_min(0.0)


def _nearest_neighbour_sq_dist(points: Tensor, k: int = 3, chunk: int = 1024) -> Tensor:
    """Mean squared distance of every point to its ``k`` nearest other points, [N] (chunked)."""
    n = points.shape[0]
    k = min(k, n - 1)
    if k < 1:
        return torch.ones(n, dtype=points.dtype, device=points.device)
    out = []
    for start in range(0, n, chunk):
        d2 = torch.cdist(points[start : start + chunk], points).square()
        near = torch.topk(d2, k + 1, dim=1, largest=False).values[:, 1:]  # drop the point itself
        out.append(near.mean(dim=1))
    return torch.cat(out)


def init_gaussians(
    n: int,
    radius: float,
    generator: torch.Generator,
    *,
    opacity: float = 0.1,
    color_mode: str = "sh",
    color_spread: float = 1.0,
    sh_degree: int = 0,
    max_count: int = DEFAULT_MAX_COUNT,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> dict[str, Tensor]:
    """``n`` Gaussians uniform in a ball of ``radius`` (DreamGaussian: 5000 points, radius 0.5, opacity 0.1).

    Scales are isotropic, the root mean squared distance to the 3 nearest neighbours (3DGS's rule),
    rotations the identity, colours ``0.5 + color_spread * (u - 0.5)`` with ``u`` uniform per channel
    (DreamGaussian's near-gray start is ``color_spread = 1 / 255``). All draws come from ``generator``
    (on the CPU; the result is moved to ``device``).
    """
    check_count(n, max_count)
    if radius <= 0 or not 0 < opacity < 1:
        raise GaussianError(f"need radius > 0 and 0 < opacity < 1, got radius={radius}, opacity={opacity}")
    if sh_degree not in (0, 1):
        raise GaussianError(f"sh_degree must be 0 or 1, got {sh_degree}")
    if color_mode not in COLOR_MODES or (sh_degree == 1 and color_mode != "sh"):
        raise GaussianError(f"color_mode must be 'sh' (or 'rgb' with sh_degree 0), got {color_mode!r}")
    u = torch.rand(n, 6, generator=generator, dtype=torch.float64)
    # uniform in the ball: direction from (cos theta, phi), radius from the cube root
    cos_t, phi, r = 2 * u[:, 0] - 1, 2 * math.pi * u[:, 1], radius * u[:, 2].pow(1 / 3)
    sin_t = (1 - cos_t.square()).clamp_min(0).sqrt()
    means = torch.stack([r * sin_t * torch.cos(phi), r * sin_t * torch.sin(phi), r * cos_t], dim=-1)
    dist2 = _nearest_neighbour_sq_dist(means).clamp_min(1e-7)
    rgb = 0.5 + color_spread * (u[:, 3:6] - 0.5)
    state = {
        MEANS: means,
        SCALES: (0.5 * torch.log(dist2))[:, None].repeat(1, 3),
        QUATS: torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64).repeat(n, 1),
        OPACITIES: torch.full((n,), math.log(opacity / (1 - opacity)), dtype=torch.float64),
        COLORS: rgb_to_sh0(rgb) if color_mode == "sh" else rgb_to_logit(rgb),
    }
    if sh_degree == 1:
        state[SH_REST] = torch.zeros(n, 3, 3, dtype=torch.float64)
    return {k: v.to(device=device, dtype=dtype).contiguous() for k, v in state.items()}
