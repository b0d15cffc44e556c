"""NeRF implicit volume (hash grid + small MLPs), functional over parameter dicts with a slot dimension.

The state holds ONE parameter set (``init_nerf_params``: names like ``geometry.encoding``,
``geometry.density_net.0.weight``, ``material.albedo_net.1.bias``, ``background.net.0.weight``, no
slot dimension). Field functions take parameters with a leading slot dimension ``P``
(``stack_params``) so that a Picard window of ``P`` different parameter sets evaluates in one call;
MLPs are batched matmuls over ``P``. A single run is ``P = 1``.

Density follows DreamFusion / threestudio: ``activation(mlp(encoding(x)) + blob(x))`` where the blob
bias puts a soft ball of density at the origin at initialization.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from dreampropeller.scene.hashgrid import HashGridConfig, SceneError, hashgrid_encode, init_hashgrid_tables

Params = dict[str, torch.Tensor]

_ACTIVATIONS = ("softplus", "trunc_exp", "exp")
_BIASES = ("blob_magic3d", "blob_dreamfusion", "none")
_NORMAL_MODES = ("finite_difference", "forward_difference", "analytic")
_BACKGROUNDS = ("solid", "mlp")


@dataclass
class NeRFConfig:
    """Sizes and choices of the NeRF volume. CPU-friendly defaults (threestudio's are larger)."""

    # hash grid
    n_levels: int = 16
    n_features_per_level: int = 2
    log2_hashmap_size: int = 15
    base_resolution: int = 16
    finest_resolution: int = 256
    # MLPs (``*_layers`` hidden layers of ``*_hidden`` units)
    density_hidden: int = 64
    density_layers: int = 1
    albedo_hidden: int = 64
    albedo_layers: int = 1
    # the albedo reads the coarsest ``albedo_levels`` hash-grid levels only (null: all of them): fine
    # levels let score distillation paint per-texel colour noise onto surfaces meant to be uniform
    albedo_levels: int | None = None
    density_activation: str = "softplus"
    density_bias: str = "blob_magic3d"
    blob_density: float = 10.0
    blob_radius: float = 0.5
    # the object lives in [-radius, radius]^3; rays are sampled inside the sphere of this radius
    radius: float = 1.0
    # normals: autograd through the forward (measured fastest on the CPU), central differences (6
    # density probes) or forward differences (3)
    normal_mode: str = "analytic"
    normal_eps: float = 0.01
    # background
    background: str = "solid"
    background_color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    background_hidden: int = 32
    background_frequencies: int = 2
    random_background_prob: float = 0.0  # chance per camera of a random solid colour (augmentation)

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("density_activation", self.density_activation, _ACTIVATIONS),
            ("density_bias", self.density_bias, _BIASES),
            ("normal_mode", self.normal_mode, _NORMAL_MODES),
            ("background", self.background, _BACKGROUNDS),
        ):
            if value not in allowed:
                raise SceneError(f"nerf.{name} must be one of {allowed}, got {value!r}")
        if self.radius <= 0 or self.finest_resolution < self.base_resolution:
            raise SceneError(
                f"nerf.radius must be > 0 and finest_resolution >= base_resolution, got {self.radius}, "
                f"{self.finest_resolution} < {self.base_resolution}"
            )
        if (
            min(self.density_hidden, self.albedo_hidden, self.background_hidden) < 1
            or min(self.density_layers, self.albedo_layers) < 0
        ):
            raise SceneError("nerf MLP sizes must be positive (hidden >= 1, layers >= 0)")
        self.background_color = tuple(float(c) for c in self.background_color)
        if len(self.background_color) != 3:
            raise SceneError(f"nerf.background_color needs 3 values, got {self.background_color}")
        if self.albedo_levels is not None and not 1 <= self.albedo_levels <= self.n_levels:
            raise SceneError(f"nerf.albedo_levels must be in [1, n_levels={self.n_levels}] or null")
        self.grid  # noqa: B018 - validates the grid sizes now rather than at first use

    @property
    def grid(self) -> HashGridConfig:
        return HashGridConfig.spanning(
            self.n_levels,
            self.n_features_per_level,
            self.log2_hashmap_size,
            self.base_resolution,
            self.finest_resolution,
        )


# ---------------------------------------------------------------- parameters


def init_mlp(prefix: str, sizes: Sequence[int], generator: torch.Generator) -> Params:
    """Linear layers ``prefix.i.weight`` [out, in] / ``.bias`` [out], PyTorch's default uniform init."""
    out: Params = {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        bound = 1.0 / math.sqrt(fan_in)
        out[f"{prefix}.{i}.weight"] = (torch.rand(fan_out, fan_in, generator=generator) * 2 - 1) * bound
        out[f"{prefix}.{i}.bias"] = (torch.rand(fan_out, generator=generator) * 2 - 1) * bound
    return out


def init_nerf_params(cfg: NeRFConfig, generator: torch.Generator) -> Params:
    """One parameter set (no slot dimension), every draw from ``generator``."""
    enc_dim = cfg.grid.output_dim
    params: Params = {"geometry.encoding": init_hashgrid_tables(cfg.grid, generator)}
    params |= init_mlp(
        "geometry.density_net", [enc_dim] + [cfg.density_hidden] * cfg.density_layers + [1], generator
    )
    albedo_dim = enc_dim if cfg.albedo_levels is None else cfg.albedo_levels * cfg.n_features_per_level
    params |= init_mlp(
        "material.albedo_net", [albedo_dim] + [cfg.albedo_hidden] * cfg.albedo_layers + [3], generator
    )
    if cfg.background == "mlp":
        in_dim = 3 + 6 * cfg.background_frequencies
        params |= init_mlp("background.net", [in_dim, cfg.background_hidden, 3], generator)
    return params


def stack_params(slots: Sequence[Mapping[str, torch.Tensor]]) -> Params:
    """Stack parameter sets into one dict with a leading slot dimension ``P = len(slots)``."""
    if not slots:
        raise SceneError("stack_params needs at least one parameter set")
    keys = list(slots[0].keys())
    for i, s in enumerate(slots[1:], 1):
        if list(s.keys()) != keys:
            raise SceneError(f"parameter set {i} has keys {sorted(s)} but set 0 has {sorted(keys)}")
    return {k: torch.stack([s[k] for s in slots], dim=0) for k in keys}


def unstack_params(params: Mapping[str, torch.Tensor]) -> list[Params]:
    """Split a slotted parameter dict into ``P`` dicts (views, no copy)."""
    p = num_slots(params)
    return [{k: v[i] for k, v in params.items()} for i in range(p)]


def slot_params(params: Mapping[str, torch.Tensor], k: int) -> Params:
    """Slot ``k`` of a slotted dict, keeping a slot dimension of 1."""
    return {name: v[k : k + 1] for name, v in params.items()}


def num_slots(params: Mapping[str, torch.Tensor]) -> int:
    """The slot count ``P`` of a slotted parameter dict."""
    enc = params.get("geometry.encoding")
    if enc is None or enc.dim() != 4:
        raise SceneError(
            "slotted NeRF params need 'geometry.encoding' of shape [P, L, T, F]; use stack_params"
        )
    return enc.shape[0]


def batched_mlp(params: Mapping[str, torch.Tensor], prefix: str, x: torch.Tensor) -> torch.Tensor:
    """ReLU MLP ``prefix.i.{weight,bias}`` ([P, out, in], [P, out]) on ``x`` [P, N, in], linear output."""
    i = 0
    while f"{prefix}.{i}.weight" in params:
        if i > 0:
            x = torch.relu(x)
        w, b = params[f"{prefix}.{i}.weight"], params[f"{prefix}.{i}.bias"]
        x = torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))
        i += 1
    if i == 0:
        raise SceneError(f"no MLP layers named {prefix}.0.weight in the parameters")
    return x


# ---------------------------------------------------------------- field


class _TruncExp(torch.autograd.Function):
    """exp(x) with the gradient of exp(min(x, 15)) (threestudio's trunc_exp, keeps gradients finite)."""

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


def density_bias(points: torch.Tensor, cfg: NeRFConfig) -> torch.Tensor:
    """The blob bias [P, N] added before the density activation."""
    if cfg.density_bias == "none":
        return points.new_zeros(points.shape[:-1])
    if cfg.density_bias == "blob_dreamfusion":
        return cfg.blob_density * torch.exp(-0.5 * points.square().sum(-1) / cfg.blob_radius**2)
    # magic3d blob: linear fall-off, reaching zero at blob_radius (sqrt with a floor for a finite gradient)
    r = (points.square().sum(-1) + 1e-12).sqrt()
    return cfg.blob_density * (1.0 - r / cfg.blob_radius)


def _activate(raw: torch.Tensor, cfg: NeRFConfig) -> torch.Tensor:
    if cfg.density_activation == "softplus":
        return torch.nn.functional.softplus(raw)
    if cfg.density_activation == "trunc_exp":
        return _TruncExp.apply(raw)
    return torch.exp(raw)


def _check_points(params: Mapping[str, torch.Tensor], points: torch.Tensor) -> None:
    p = num_slots(params)
    if points.dim() != 3 or points.shape[0] != p or points.shape[-1] != 3:
        raise SceneError(f"points must be [P={p}, N, 3], got {list(points.shape)}")


def _encode(
    params: Mapping[str, torch.Tensor], points: torch.Tensor, cfg: NeRFConfig, active_levels: int | None
):
    unit = (points + cfg.radius) / (2.0 * cfg.radius)
    return hashgrid_encode(params["geometry.encoding"], unit, cfg.grid, active_levels)


def nerf_density(
    params: Mapping[str, torch.Tensor],
    points: torch.Tensor,
    cfg: NeRFConfig,
    active_levels: int | None = None,
) -> torch.Tensor:
    """Density [P, N] at world points [P, N, 3]."""
    _check_points(params, points)
    feats = _encode(params, points, cfg, active_levels)
    raw = batched_mlp(params, "geometry.density_net", feats)[..., 0]
    return _activate(raw + density_bias(points, cfg), cfg)


def nerf_field(
    params: Mapping[str, torch.Tensor],
    points: torch.Tensor,
    cfg: NeRFConfig,
    active_levels: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Density [P, N] and albedo [P, N, 3] in [0, 1] at world points [P, N, 3]."""
    _check_points(params, points)
    feats = _encode(params, points, cfg, active_levels)
    raw = batched_mlp(params, "geometry.density_net", feats)[..., 0]
    density = _activate(raw + density_bias(points, cfg), cfg)
    return density, _albedo(params, feats, cfg)


def _albedo(params: Mapping[str, torch.Tensor], feats: torch.Tensor, cfg: NeRFConfig) -> torch.Tensor:
    """Albedo [P, N, 3] in [0, 1] from the encoding (its coarsest ``cfg.albedo_levels`` levels)."""
    if cfg.albedo_levels is not None:
        feats = feats[..., : cfg.albedo_levels * cfg.n_features_per_level]
    return torch.sigmoid(batched_mlp(params, "material.albedo_net", feats))


def density_gradient(
    params: Mapping[str, torch.Tensor],
    points: torch.Tensor,
    cfg: NeRFConfig,
    active_levels: int | None = None,
    density: torch.Tensor | None = None,
) -> torch.Tensor:
    """Spatial gradient of the density [P, N, 3], differentiable w.r.t. the parameters.

    ``cfg.normal_mode``: "finite_difference" (central, 6 probes at ``normal_eps``),
    "forward_difference" (3 probes, reusing ``density`` at the points when given) or "analytic"
    (autograd with ``create_graph``).
    """
    _check_points(params, points)
    p, n, _ = points.shape
    if cfg.normal_mode == "analytic":
        with torch.enable_grad():
            pts = points.detach().requires_grad_(True)
            d = nerf_density(params, pts, cfg, active_levels)
            (grad,) = torch.autograd.grad(d.sum(), pts, create_graph=torch.is_grad_enabled())
        return grad
    eye = torch.eye(3, dtype=points.dtype, device=points.device) * cfg.normal_eps
    if cfg.normal_mode == "finite_difference":
        offsets = torch.cat([eye, -eye], dim=0)  # [6, 3]
        probes = (points.unsqueeze(2) + offsets).reshape(p, n * 6, 3)
        d = nerf_density(params, probes, cfg, active_levels).reshape(p, n, 6)
        return (d[..., :3] - d[..., 3:]) / (2.0 * cfg.normal_eps)
    probes = (points.unsqueeze(2) + eye).reshape(p, n * 3, 3)
    d = nerf_density(params, probes, cfg, active_levels).reshape(p, n, 3)
    centre = nerf_density(params, points, cfg, active_levels) if density is None else density
    return (d - centre.unsqueeze(-1)) / cfg.normal_eps


def nerf_normals(
    params: Mapping[str, torch.Tensor],
    points: torch.Tensor,
    cfg: NeRFConfig,
    active_levels: int | None = None,
    density: torch.Tensor | None = None,
) -> torch.Tensor:
    """Unit outward normals [P, N, 3] = -normalize(grad density) (differentiable)."""
    grad = density_gradient(params, points, cfg, active_levels, density)
    return -torch.nn.functional.normalize(grad, dim=-1, eps=1e-8)


def nerf_field_with_normals(
    params: Mapping[str, torch.Tensor],
    points: torch.Tensor,
    cfg: NeRFConfig,
    active_levels: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Density [P, N], albedo [P, N, 3] and unit outward normals [P, N, 3] in one pass.

    With ``normal_mode == "analytic"`` the normals come from autograd through the same forward
    (``create_graph`` when gradients are on, so they stay differentiable); otherwise from
    finite-difference probes of the density.
    """
    if cfg.normal_mode != "analytic":
        density, albedo = nerf_field(params, points, cfg, active_levels)
        return density, albedo, nerf_normals(params, points, cfg, active_levels, density)
    create = torch.is_grad_enabled()
    with torch.enable_grad():
        pts = points.detach().requires_grad_(True)
        density, albedo = nerf_field(params, pts, cfg, active_levels)
        (grad,) = torch.autograd.grad(density.sum(), pts, create_graph=create)
    if not create:
        density, albedo = density.detach(), albedo.detach()
    return density, albedo, -torch.nn.functional.normalize(grad, dim=-1, eps=1e-8)


# ---------------------------------------------------------------- background


def _direction_encoding(dirs: torch.Tensor, n_freq: int) -> torch.Tensor:
    parts = [dirs]
    for k in range(n_freq):
        parts += [torch.sin((2.0**k) * math.pi * dirs), torch.cos((2.0**k) * math.pi * dirs)]
    return torch.cat(parts, dim=-1)


def nerf_background(params: Mapping[str, torch.Tensor], dirs: torch.Tensor, cfg: NeRFConfig) -> torch.Tensor:
    """Background colour [P, R, 3] of unit ray directions [P, R, 3]: solid colour or MLP on direction."""
    if cfg.background == "solid":
        colour = torch.tensor(cfg.background_color, dtype=dirs.dtype, device=dirs.device)
        return colour.expand((*dirs.shape[:-1], 3))
    if "background.net.0.weight" not in params:
        raise SceneError(
            "nerf.background is 'mlp' but the parameters have no background.net; re-initialize them"
        )
    return torch.sigmoid(
        batched_mlp(params, "background.net", _direction_encoding(dirs, cfg.background_frequencies))
    )


def sample_background_colors(
    cfg: NeRFConfig, n: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random solid background colours for augmentation: ``(mask [n] bool, colours [n, 3])``.

    ``mask[i]`` says camera ``i`` gets ``colours[i]`` instead of its own background (chance
    ``cfg.random_background_prob``). Always draws ``n`` uniforms then ``n * 3`` colours from
    ``generator`` so the number of draws never depends on the outcome. Pass both to
    ``render_cameras(background=..., background_mask=...)`` (one row per slot).
    """
    mask = torch.rand(n, generator=generator) < cfg.random_background_prob
    colours = torch.rand(n, 3, generator=generator)
    return mask, colours
