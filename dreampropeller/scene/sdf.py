"""A signed distance field rendered by NeuS volume rendering (threestudio's implicit-sdf geometry with its
NeuS renderer), functional over parameter dicts with a slot dimension like :mod:`.nerf`.

The field is ``sdf(x) = mlp(encoding(x)) + (|x| - init_radius)``: a hash grid and a small MLP (the
NeRF's building blocks) on top of an analytic sphere. The MLP's output layer starts at zero, so the
initial SDF is exactly the sphere. The albedo is an MLP on the coarsest ``albedo_levels`` levels of
the same encoding, as in the NeRF. Negative inside, positive outside; the outward normal is the
normalized SDF gradient (autograd, or central differences).

NeuS (Wang et al. 2021) turns the SDF into a discrete opacity per ray section: with
``Phi_s(f) = sigmoid(s f)`` and the SDF at the section's ends estimated from its centre value and the
angle between the ray and the normal, ``alpha = (Phi_s(f_prev) - Phi_s(f_next)) / Phi_s(f_prev)``,
clipped to [0, 1]. The inverse standard deviation ``s = exp(10 * variance)`` is learned
(``geometry.variance``). Along a ray through a plane the section products telescope, so the ray's
transmittance is ``Phi_s(f_far) / Phi_s(f_near)``: the weight peaks at the zero crossing, unbiased
(VolSDF's Laplace-CDF density puts its peak in front of the surface). Compositing reuses the volume
renderer's :func:`~dreampropeller.scene.volume.composite` on ``-log(1 - alpha)``.

Parameters (state layout, no slot dimension): ``geometry.encoding`` [L, T, F], ``geometry.sdf_net.*``,
``geometry.variance`` [1], ``material.albedo_net.*``. Slotted dicts (:func:`.nerf.stack_params`) put a
window of ``P`` parameter sets through one batched call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from dreampropeller.scene.cameras import Cameras
from dreampropeller.scene.hashgrid import HashGridConfig, SceneError, hashgrid_encode, init_hashgrid_tables
from dreampropeller.scene.nerf import batched_mlp, init_mlp, num_slots
from dreampropeller.scene.shading import ShadingConfig, shade, shading_codes
from dreampropeller.scene.volume import (
    Generators,
    composite,
    occupancy_grid,
    prepare_rays,
    ray_chunks,
    ray_sphere,
)

Params = dict[str, Tensor]
ENCODING = "geometry.encoding"
SDF_NET = "geometry.sdf_net"
VARIANCE = "geometry.variance"
ALBEDO_NET = "material.albedo_net"
NORMAL_MODES = ("analytic", "finite_difference")
_EPS = 1e-5  # NeuS's guard in alpha = (prev - next + eps) / (prev + eps)


@dataclass(frozen=True)
class SdfShape:
    """Sizes of the SDF and its albedo field, the starting sphere and the normal mode."""

    n_levels: int = 8
    n_features_per_level: int = 2
    log2_hashmap_size: int = 15
    base_resolution: int = 16
    finest_resolution: int = 128
    sdf_hidden: int = 64
    sdf_layers: int = 1
    albedo_hidden: int = 64
    albedo_layers: int = 1
    albedo_levels: int | None = 4  # coarsest levels the albedo reads (null: all)
    radius: float = 1.0  # rays are sampled inside the sphere of this radius; the grid spans its cube
    init_radius: float = 0.5  # the starting sphere
    init_variance: float = 0.3  # inverse standard deviation s = exp(10 * variance) (NeuS / threestudio)
    normal_mode: str = "analytic"
    normal_eps: float = 0.01

    def __post_init__(self) -> None:
        if not 0 < self.init_radius < self.radius:
            raise SceneError(f"sdf.init_radius must lie in (0, radius={self.radius}), got {self.init_radius}")
        if min(self.sdf_hidden, self.albedo_hidden) < 1 or min(self.sdf_layers, self.albedo_layers) < 0:
            raise SceneError("sdf MLP sizes must be positive (hidden >= 1, layers >= 0)")
        if self.finest_resolution < self.base_resolution:
            raise SceneError("sdf finest_resolution must be >= base_resolution")
        if self.albedo_levels is not None and not 1 <= self.albedo_levels <= self.n_levels:
            raise SceneError(f"sdf.albedo_levels must be in [1, n_levels={self.n_levels}] or null")
        if self.normal_mode not in NORMAL_MODES:
            raise SceneError(f"sdf.normal_mode must be one of {NORMAL_MODES}, got {self.normal_mode!r}")
        self.grid  # noqa: B018 - validates the grid sizes now

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


def init_sdf_params(shape: SdfShape, generator: torch.Generator) -> Params:
    """One parameter set (no slot dimension): the SDF starts as the sphere of ``init_radius`` exactly
    (the SDF MLP's output layer is zero), every draw from ``generator``."""
    enc = shape.grid.output_dim
    params: Params = {ENCODING: init_hashgrid_tables(shape.grid, generator)}
    net = init_mlp(SDF_NET, [enc] + [shape.sdf_hidden] * shape.sdf_layers + [1], generator)
    last = shape.sdf_layers
    net[f"{SDF_NET}.{last}.weight"].zero_()
    net[f"{SDF_NET}.{last}.bias"].zero_()
    params |= net
    params[VARIANCE] = torch.tensor([float(shape.init_variance)])
    albedo_dim = enc if shape.albedo_levels is None else shape.albedo_levels * shape.n_features_per_level
    params |= init_mlp(
        ALBEDO_NET, [albedo_dim] + [shape.albedo_hidden] * shape.albedo_layers + [3], generator
    )
    return params


def sdf_keys(shape: SdfShape) -> tuple[str, ...]:
    """The parameter names, in state order."""
    return tuple(init_sdf_params(shape, torch.Generator().manual_seed(0)))


def inv_std(params: Mapping[str, Tensor]) -> Tensor:
    """NeuS's inverse standard deviation per slot [P]: ``exp(10 * variance)`` within [1e-6, 1e6]."""
    return torch.exp(params[VARIANCE][:, 0] * 10.0).clamp(1e-6, 1e6)


# ---------------------------------------------------------------- field


def _check_points(params: Mapping[str, Tensor], points: Tensor) -> None:
    p = num_slots(params)
    if points.dim() != 3 or points.shape[0] != p or points.shape[-1] != 3:
        raise SceneError(f"points must be [P={p}, N, 3], got {list(points.shape)}")


def _sdf_and_feats(
    params: Mapping[str, Tensor], points: Tensor, shape: SdfShape, active_levels: int | None
) -> tuple[Tensor, Tensor]:
    unit = (points + shape.radius) / (2.0 * shape.radius)
    feats = hashgrid_encode(params[ENCODING], unit, shape.grid, active_levels)
    sphere = (points.square().sum(-1) + 1e-12).sqrt() - shape.init_radius
    return batched_mlp(params, SDF_NET, feats)[..., 0] + sphere, feats


def _albedo(params: Mapping[str, Tensor], feats: Tensor, shape: SdfShape) -> Tensor:
    if shape.albedo_levels is not None:
        feats = feats[..., : shape.albedo_levels * shape.n_features_per_level]
    return torch.sigmoid(batched_mlp(params, ALBEDO_NET, feats))


def sdf_value(
    params: Mapping[str, Tensor], points: Tensor, shape: SdfShape, active_levels: int | None = None
) -> Tensor:
    """Signed distance [P, N] at world points [P, N, 3] (negative inside)."""
    _check_points(params, points)
    return _sdf_and_feats(params, points, shape, active_levels)[0]


def sdf_albedo(
    params: Mapping[str, Tensor], points: Tensor, shape: SdfShape, active_levels: int | None = None
) -> Tensor:
    """Albedo [P, N, 3] in [0, 1] at world points [P, N, 3]."""
    _check_points(params, points)
    return _albedo(params, _sdf_and_feats(params, points, shape, active_levels)[1], shape)


def sdf_field(
    params: Mapping[str, Tensor], points: Tensor, shape: SdfShape, active_levels: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """SDF [P, N], albedo [P, N, 3] and the SDF's spatial gradient [P, N, 3] at points [P, N, 3].

    The gradient is differentiable w.r.t. the parameters when gradients are on (``create_graph``:
    the eikonal term and the normals train the field). Each slot's gradient depends on its own
    parameters and points only.
    """
    _check_points(params, points)
    create = torch.is_grad_enabled()
    if shape.normal_mode == "finite_difference":
        sdf, feats = _sdf_and_feats(params, points, shape, active_levels)
        p, n, _ = points.shape
        eye = torch.eye(3, dtype=points.dtype, device=points.device) * shape.normal_eps
        probes = (points.unsqueeze(2) + torch.cat([eye, -eye])).reshape(p, n * 6, 3)
        d = _sdf_and_feats(params, probes, shape, active_levels)[0].reshape(p, n, 6)
        grad = (d[..., :3] - d[..., 3:]) / (2.0 * shape.normal_eps)
        return sdf, _albedo(params, feats, shape), grad
    with torch.enable_grad():
        pts = points.detach().requires_grad_(True)
        sdf, feats = _sdf_and_feats(params, pts, shape, active_levels)
        (grad,) = torch.autograd.grad(sdf.sum(), pts, create_graph=create)
        albedo = _albedo(params, feats, shape)
    if not create:
        sdf, albedo = sdf.detach(), albedo.detach()
    return sdf, albedo, grad


def sdf_normals(grad: Tensor) -> Tensor:
    """Unit outward normals [..., 3]: the normalized SDF gradient."""
    return torch.nn.functional.normalize(grad, dim=-1, eps=1e-8)


def eikonal_loss(grad: Tensor, mask: Tensor | None = None) -> Tensor:
    """Eikonal term per slot [P]: the mean of ``(|grad f| - 1)^2`` over the points (where ``mask``
    [P, N] is true). ``grad`` [P, N, 3]."""
    err = (torch.linalg.vector_norm(grad, dim=-1) - 1.0).square()
    if mask is None:
        return err.mean(-1)
    m = mask.to(err.dtype)
    return (err * m).sum(-1) / m.sum(-1).clamp_min(1.0)


def neus_alpha(
    sdf: Tensor, cos: Tensor, dists: Tensor, inv_s: Tensor, cos_anneal_ratio: float = 1.0
) -> Tensor:
    """NeuS's discrete opacity of ray sections [...] (threestudio's NeuS renderer).

    ``sdf`` at the section centres, ``cos`` = ray direction . SDF gradient, ``dists`` the section
    lengths, ``inv_s`` broadcastable. The SDF at the section's ends is ``sdf -/+ c * dists / 2`` with
    ``c = (1 - r) * relu(-cos / 2 + 1 / 2) + r * relu(-cos)`` (``r = cos_anneal_ratio``: early in
    training NeuS lets sections facing away from the normal stay opaque a little).
    """
    r = float(cos_anneal_ratio)
    c = torch.relu(-cos * 0.5 + 0.5) * (1.0 - r) + torch.relu(-cos) * r
    prev = torch.sigmoid((sdf + c * dists * 0.5) * inv_s)
    nxt = torch.sigmoid((sdf - c * dists * 0.5) * inv_s)
    return ((prev - nxt + _EPS) / (prev + _EPS)).clamp(0.0, 1.0)


# ---------------------------------------------------------------- empty-space skipping


def sdf_occupancy(
    params: Mapping[str, Tensor],
    shape: SdfShape,
    resolution: int,
    alpha: float,
    active_levels: int | None = None,
) -> Tensor:
    """Bool grid [G, G, G] over ``[-radius, radius]^3`` of one slot's cells that a ray crossing them
    could see: NeuS's opacity of a cell-long section at the centre's SDF, facing the surface, above
    ``alpha`` (threestudio's NeuS occupancy rule), dilated by one cell
    (:func:`~.volume.occupancy_grid`). Its band around the surface narrows as ``inv_std`` grows."""
    if num_slots(params) != 1:
        raise SceneError("sdf_occupancy takes one parameter set (a slot dimension of 1)")
    cell = 2.0 * shape.radius / resolution
    s = inv_std(params)
    minus_one = torch.tensor(-1.0)

    def section_alpha(pts: Tensor) -> Tensor:
        f = sdf_value(params, pts.to(params[ENCODING].device)[None], shape, active_levels)[0]
        return neus_alpha(f, minus_one.to(f), torch.tensor(cell).to(f), s.to(f))

    return occupancy_grid(section_alpha, shape.radius, resolution, alpha)


def in_cells(occupancy: Tensor, points: Tensor, radius: float) -> Tensor:
    """Whether points [P, N, 3] lie in occupied cells of ``occupancy`` ([G, G, G] shared, or [P, G, G, G])."""
    occ = occupancy.to(points.device).bool()
    g = occ.shape[-1]
    idx = ((points.detach() + radius) / (2 * radius) * g).long().clamp(0, g - 1)
    if occ.dim() == 3:
        return occ[idx[..., 0], idx[..., 1], idx[..., 2]]
    p, n = points.shape[:2]
    slot = torch.arange(p, device=points.device)[:, None].expand(p, n)
    return occ[slot, idx[..., 0], idx[..., 1], idx[..., 2]]


def _sparse_sdf_field(
    params: Mapping[str, Tensor],
    flat: Tensor,
    keep: Tensor,
    shape: SdfShape,
    active_levels: int | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`sdf_field` at the kept samples of ``flat`` [P, N, 3] (``keep`` [P, N]), packed to the
    front of each slot in a stable order and padded to the largest count, so all slots still go
    through one batched call; elsewhere SDF 1, albedo and gradient 0 (the caller masks them out)."""
    p, n, _ = flat.shape
    m = max(int(keep.sum(1).max()), 1)
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :m]
    valid = torch.gather(keep, 1, order).to(flat.dtype)  # [P, M]
    idx3 = order.unsqueeze(-1).expand(p, m, 3)
    f, a, g = sdf_field(params, torch.gather(flat, 1, idx3), shape, active_levels)
    sdf = flat.new_ones(p, n).scatter(1, order, f * valid + (1.0 - valid))
    albedo = flat.new_zeros(p, n, 3).scatter(1, idx3, a * valid.unsqueeze(-1))
    grad = flat.new_zeros(p, n, 3).scatter(1, idx3, g * valid.unsqueeze(-1))
    return sdf, albedo, grad


# ---------------------------------------------------------------- rendering


def render_sdf_rays(
    params: Mapping[str, Tensor],
    rays_o: Tensor,
    rays_d: Tensor,
    shape: SdfShape,
    *,
    num_samples: int,
    generator: Generators = None,
    shading: str | Sequence | Tensor = "albedo",
    shading_cfg: ShadingConfig | None = None,
    light_positions: Tensor | None = None,
    background: Tensor | None = None,
    active_levels: int | None = None,
    cos_anneal_ratio: float = 1.0,
    ray_chunk: int | None = None,
    occupancy: Tensor | None = None,
) -> dict[str, Tensor]:
    """Render unit-direction rays [P, R, 3] of every slot by NeuS volume rendering.

    Samples are stratified over each ray's chord through the sphere of ``shape.radius`` (the volume
    renderer's sampling: :func:`~.volume.ray_sphere`, :func:`~.volume.draw_jitter`); ``shading`` and
    ``light_positions`` as in :func:`~.volume.render_rays`; ``background`` colours broadcastable to
    [P, R, 3] (white without). ``ray_chunk`` splits the rays (the jitter is drawn once first).
    ``occupancy`` (bool [G, G, G] or one per slot [P, G, G, G] over ``[-radius, radius]^3``, see
    :func:`sdf_occupancy`) evaluates the field only at samples in occupied cells: the others are
    transparent and outside the eikonal term.

    Returns rgb / albedo / normal [P, R, 3], opacity / depth [P, R, 1], weights and t [P, R, S],
    normals_samples [P, R, S, 3], rays_d, and ``eikonal`` [P] over the samples inside the sphere.
    """
    rays = prepare_rays(params, rays_o, rays_d, num_samples, generator, shading, light_positions)
    p, r = rays.codes.shape
    if background is None:
        background = torch.ones(3, dtype=rays_o.dtype, device=rays_o.device)
    bg = background.expand(p, r, 3)
    outs = [
        _render_chunk(
            params,
            rays_o[:, sl],
            rays_d[:, sl],
            shape,
            rays.jitter[:, sl],
            rays.codes[:, sl],
            shading_cfg or ShadingConfig(),
            rays.lights[:, sl],
            bg[:, sl],
            active_levels,
            cos_anneal_ratio,
            occupancy,
        )
        for sl in ray_chunks(r, ray_chunk)
    ]
    if len(outs) == 1:
        out = outs[0]
    else:
        out = {k: torch.cat([o[k] for o in outs], dim=1) for k in outs[0] if k not in ("eik_sum", "eik_n")}
        out["eik_sum"] = sum(o["eik_sum"] for o in outs)
        out["eik_n"] = sum(o["eik_n"] for o in outs)
    out["eikonal"] = out.pop("eik_sum") / out.pop("eik_n").clamp_min(1.0)
    return out


def _render_chunk(
    params: Mapping[str, Tensor],
    rays_o: Tensor,
    rays_d: Tensor,
    shape: SdfShape,
    jitter: Tensor,
    codes: Tensor,
    shading_cfg: ShadingConfig,
    lights: Tensor,
    bg: Tensor,
    active_levels: int | None,
    cos_anneal_ratio: float,
    occupancy: Tensor | None,
) -> dict[str, Tensor]:
    p, r, s = jitter.shape
    near, far = ray_sphere(rays_o, rays_d, shape.radius)
    width = ((far - near) / s).unsqueeze(-1)  # [P, R, 1]
    steps = torch.arange(s, device=rays_o.device, dtype=rays_o.dtype)
    t = near.unsqueeze(-1) + (steps + jitter) * width  # [P, R, S]
    points = rays_o.unsqueeze(2) + t.unsqueeze(-1) * rays_d.unsqueeze(2)
    hit = (width > 0).expand(p, r, s)  # samples of rays that miss the sphere are padding
    flat = points.reshape(p, r * s, 3)
    if occupancy is None:
        sdf, albedo, grad = sdf_field(params, flat, shape, active_levels)
    else:
        hit = hit & in_cells(occupancy, flat, shape.radius).reshape(p, r, s)
        sdf, albedo, grad = _sparse_sdf_field(params, flat, hit.reshape(p, r * s), shape, active_levels)
    sdf, albedo, grad = sdf.reshape(p, r, s), albedo.reshape(p, r, s, 3), grad.reshape(p, r, s, 3)
    normals = sdf_normals(grad)
    cos = (rays_d.unsqueeze(2) * grad).sum(-1)
    alpha = neus_alpha(sdf, cos, width, inv_std(params).view(p, 1, 1), cos_anneal_ratio) * hit
    # alpha as an optical thickness, so the volume renderer's compositing applies unchanged
    weights = composite(-torch.log1p(-alpha.clamp(max=1.0 - 1e-7)), torch.ones_like(alpha))
    colour = shade(albedo, normals, points, lights.unsqueeze(2), codes.unsqueeze(-1), shading_cfg)
    w = weights.unsqueeze(-1)
    opacity = w.sum(2)
    err = (torch.linalg.vector_norm(grad, dim=-1) - 1.0).square() * hit
    return {
        "rgb": (w * colour).sum(2) + (1.0 - opacity) * bg,
        "opacity": opacity,
        "depth": (weights * t).sum(-1, keepdim=True),
        "normal": (w * normals).sum(2),
        "albedo": (w * albedo).sum(2),
        "weights": weights,
        "t": t,
        "rays_d": rays_d,
        "normals_samples": normals,
        "eik_sum": err.reshape(p, -1).sum(-1),
        "eik_n": hit.reshape(p, -1).sum(-1).to(err.dtype),
    }


_IMAGE_KEYS = ("rgb", "opacity", "depth", "normal", "albedo")


def render_sdf_cameras(
    params: Mapping[str, Tensor],
    cameras: Cameras | Sequence[Cameras],
    height: int,
    width: int,
    shape: SdfShape,
    *,
    num_samples: int,
    generator: Generators = None,
    shading: str | Sequence = "albedo",
    shading_cfg: ShadingConfig | None = None,
    light_positions: Tensor | None = None,
    background: Tensor | None = None,
    active_levels: int | None = None,
    cos_anneal_ratio: float = 1.0,
    ray_chunk: int | None = None,
    occupancy: Tensor | None = None,
) -> dict[str, Tensor]:
    """Render ``B`` cameras per slot (one ``Cameras`` shared, or one per slot), like
    :func:`~.volume.render_cameras`: ``light_positions`` [P, B, 3] (default: at each camera),
    ``background`` colours broadcastable to [P, B, 3]. Image outputs are [P, B, H, W, C]; per-sample
    outputs stay flat over rays, ``eikonal`` is [P]."""
    p = num_slots(params)
    per_slot = [cameras] * p if isinstance(cameras, Cameras) else list(cameras)
    if len(per_slot) != p:
        raise SceneError(f"need one Cameras per slot ({p}) or a single shared one, got {len(per_slot)}")
    b = len(per_slot[0])
    if any(len(c) != b for c in per_slot):
        raise SceneError(f"every slot needs the same number of cameras, got {[len(c) for c in per_slot]}")
    device = params[ENCODING].device
    origins, dirs = zip(*(c.to(device).rays(height, width) for c in per_slot), strict=True)
    hw = height * width
    rays_o = torch.stack(origins).reshape(p, b * hw, 3)
    rays_d = torch.stack(dirs).reshape(p, b * hw, 3)
    if light_positions is None:
        light_positions = torch.stack([c.position.to(device) for c in per_slot])
    if light_positions.shape != (p, b, 3):
        raise SceneError(f"light_positions must be [P={p}, B={b}, 3], got {list(light_positions.shape)}")
    bg = None
    if background is not None:
        bg = background.to(device).expand(p, b, 3).repeat_interleave(hw, dim=1)
    out = render_sdf_rays(
        params,
        rays_o,
        rays_d,
        shape,
        num_samples=num_samples,
        generator=generator,
        shading=shading_codes(shading, p, b, hw, device),
        shading_cfg=shading_cfg,
        light_positions=light_positions.repeat_interleave(hw, dim=1),
        background=bg,
        active_levels=active_levels,
        cos_anneal_ratio=cos_anneal_ratio,
        ray_chunk=ray_chunk,
        occupancy=occupancy,
    )
    for k in _IMAGE_KEYS:
        out[k] = out[k].reshape(p, b, height, width, -1)
    return out
