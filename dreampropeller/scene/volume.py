"""Volume renderer for the NeRF field: stratified samples inside the bounding sphere, alpha compositing.

Everything carries the slot dimension ``P`` of the parameters (one Picard slot per parameter set).
Every ray gets the same number of samples ``S`` spread over its chord through the sphere of radius
``cfg.radius``; a ray that misses has a zero-length chord, so its samples are padding with zero
weight and it shows the background. Each sample stands for a bin of width ``chord / S``, so a
constant density ``sigma`` gives an opacity of exactly ``1 - exp(-sigma * chord)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch

from dreampropeller.scene.cameras import Cameras
from dreampropeller.scene.hashgrid import SceneError
from dreampropeller.scene.nerf import (
    NeRFConfig,
    nerf_background,
    nerf_field,
    nerf_field_with_normals,
    num_slots,
)
from dreampropeller.scene.shading import ShadingConfig, needs_normals, shade, shading_codes

Generators = torch.Generator | Sequence[torch.Generator] | None


def ray_sphere(
    rays_o: torch.Tensor, rays_d: torch.Tensor, radius: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances [...] of unit-direction rays through a sphere at the origin.

    Rays that miss (or whose sphere lies behind them) get ``near == far == 0``; a ray starting inside
    enters at 0.
    """
    b = (rays_o * rays_d).sum(-1)
    c = rays_o.square().sum(-1) - radius * radius
    disc = b * b - c
    hit = (disc > 0) & (-b + disc.clamp_min(0).sqrt() > 0)
    root = disc.clamp_min(0).sqrt()
    near = (-b - root).clamp_min(0.0)
    far = -b + root
    zero = torch.zeros_like(near)
    return torch.where(hit, near, zero), torch.where(hit, far, zero)


def draw_jitter(shape: tuple[int, int, int], generator: Generators, device: torch.device) -> torch.Tensor:
    """Stratified offsets in [0, 1) of shape [P, R, S]: 0.5 (bin centres) without a generator, one
    draw of the whole shape from a single generator, or one [R, S] draw per slot from a sequence of
    ``P`` generators (so slot ``k`` of a window sees exactly the draws of its own step)."""
    p, r, s = shape
    if generator is None:
        return torch.full(shape, 0.5, device=device)
    if isinstance(generator, torch.Generator):
        return torch.rand(shape, generator=generator, device=generator.device).to(device)
    if len(generator) != p:
        raise SceneError(f"need one generator per slot ({p}), got {len(generator)}")
    return torch.stack([torch.rand(r, s, generator=g, device=g.device).to(device) for g in generator])


def composite(density: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Compositing weights ``alpha_i * T_i`` [..., S] from densities and bin widths [..., S]."""
    sd = density * deltas
    # transmittance before sample i: exp(-sum_{j<i} sigma_j delta_j), exclusive cumsum
    before = torch.cumsum(sd, dim=-1) - sd
    return (1.0 - torch.exp(-sd)) * torch.exp(-before)


def render_rays(
    params: Mapping[str, torch.Tensor],
    rays_o: torch.Tensor,
    rays_d: torch.Tensor,
    cfg: NeRFConfig,
    *,
    num_samples: int,
    generator: Generators = None,
    shading: str | Sequence | torch.Tensor = "albedo",
    shading_cfg: ShadingConfig | None = None,
    light_positions: torch.Tensor | None = None,
    background: torch.Tensor | None = None,
    background_mask: torch.Tensor | None = None,
    active_levels: int | None = None,
    need_normals: bool = False,
    ray_chunk: int | None = None,
    occupancy: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Render rays [P, R, 3] (unit directions) of every slot.

    ``shading``: a mode name, one per slot, or integer codes [P, R] (see ``shading.SHADING_MODES``).
    ``light_positions``: [P, R, 3] or [P, 1, 3]; defaults to the ray origins (a head light).
    ``background``: colours broadcastable to [P, R, 3] that replace the model's background where
    ``background_mask`` [P, R] is true (everywhere without a mask). ``need_normals`` also computes
    normals for albedo-only rays (orientation loss). ``ray_chunk`` splits the rays (for no-grad
    renders of many pixels); the jitter is drawn once, so chunking never changes the result.

    Returns rgb [P, R, 3], opacity [P, R, 1], depth [P, R, 1] (weighted distance, not normalized),
    normal [P, R, 3] (weighted sum of unit normals; zeros without normals), albedo [P, R, 3],
    weights / t [P, R, S], normals_samples [P, R, S, 3] (only with normals), rays_d [P, R, 3].

    ``occupancy`` (a bool grid [G, G, G] over ``[-radius, radius]^3``, see :func:`occupancy_grid`)
    skips empty space: the field is evaluated only at samples in occupied cells (density 0 elsewhere).
    Meant for previews and exports; samples it skips get no gradient.
    """
    rays = prepare_rays(params, rays_o, rays_d, num_samples, generator, shading, light_positions)
    p, r = rays.codes.shape
    shading_cfg = shading_cfg or ShadingConfig()
    if background is not None:
        background = background.expand(p, r, 3)
    if background_mask is not None and background_mask.shape != (p, r):
        raise SceneError(f"background_mask must be [P={p}, R={r}], got {list(background_mask.shape)}")
    outs = [
        _render_chunk(
            params,
            rays_o[:, sl],
            rays_d[:, sl],
            cfg,
            rays.jitter[:, sl],
            rays.codes[:, sl],
            shading_cfg,
            rays.lights[:, sl],
            None if background is None else background[:, sl],
            None if background_mask is None else background_mask[:, sl],
            active_levels,
            need_normals,
            occupancy,
        )
        for sl in ray_chunks(r, ray_chunk)
    ]
    if len(outs) == 1:
        return outs[0]
    return {k: torch.cat([o[k] for o in outs], dim=1) for k in outs[0]}


class PreparedRays(NamedTuple):
    """Per-ray draws of a render: shading codes [P, R], sample jitter [P, R, S], lights [P, R, 3]."""

    codes: torch.Tensor
    jitter: torch.Tensor
    lights: torch.Tensor


def prepare_rays(
    params: Mapping[str, torch.Tensor],
    rays_o: torch.Tensor,
    rays_d: torch.Tensor,
    num_samples: int,
    generator: Generators,
    shading: str | Sequence | torch.Tensor,
    light_positions: torch.Tensor | None,
) -> PreparedRays:
    """Check rays [P, R, 3] against the slots of ``params`` and draw what every chunk shares.

    The jitter is drawn for all rays at once so that splitting them into chunks never changes a
    render; lights default to the ray origins (a head light)."""
    p = num_slots(params)
    if rays_o.dim() != 3 or rays_o.shape[0] != p or rays_o.shape[-1] != 3 or rays_d.shape != rays_o.shape:
        raise SceneError(
            f"rays must both be [P={p}, R, 3], got {list(rays_o.shape)} and {list(rays_d.shape)}"
        )
    if num_samples < 1:
        raise SceneError(f"num_samples must be >= 1, got {num_samples}")
    r = rays_o.shape[1]
    codes = shading_codes(shading, p, 1, r, rays_o.device)
    jitter = draw_jitter((p, r, num_samples), generator, rays_o.device)
    lights = (rays_o if light_positions is None else light_positions).expand(p, r, 3)
    return PreparedRays(codes, jitter, lights)


def ray_chunks(num_rays: int, ray_chunk: int | None) -> list[slice]:
    """Slices of at most ``ray_chunk`` rays covering ``num_rays`` (one slice without a chunk size)."""
    chunk = num_rays if not ray_chunk else max(1, int(ray_chunk))
    return [slice(s, s + chunk) for s in range(0, num_rays, chunk)]


def occupancy_grid(density_fn, radius: float, resolution: int = 64, level: float = 0.01) -> torch.Tensor:
    """Bool grid [G, G, G] of the cells of ``[-radius, radius]^3`` where ``density_fn(points [N, 3]) -> [N]``
    exceeds ``level`` at the cell centre or any neighbour (dilated by one cell, so thin surfaces survive)."""
    g = (torch.arange(resolution, dtype=torch.float32) + 0.5) / resolution * 2 * radius - radius
    pts = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    with torch.no_grad():
        dens = torch.cat([density_fn(c).float().cpu() for c in pts.split(65536)])
    occ = (dens > level).reshape(1, 1, resolution, resolution, resolution).float()
    return torch.nn.functional.max_pool3d(occ, 3, stride=1, padding=1)[0, 0] > 0


def _sparse_field(
    params: Mapping[str, torch.Tensor],
    flat: torch.Tensor,
    cfg: NeRFConfig,
    active_levels: int | None,
    with_normals: bool,
    occupancy: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The field at occupied samples only; zeros elsewhere (differentiable w.r.t. the evaluated samples).

    ``occupancy`` is [G, G, G] shared by all slots or [P, G, G, G] per slot. Kept samples are packed to
    the front of each slot (stable order) and padded to the largest count, so all slots still go
    through the field in one batched call.
    """
    p, n, _ = flat.shape
    occ = occupancy.to(flat.device).bool()
    g = occ.shape[-1]
    idx = ((flat.detach() + cfg.radius) / (2 * cfg.radius) * g).long().clamp(0, g - 1)
    if occ.dim() == 3:
        keep = occ[idx[..., 0], idx[..., 1], idx[..., 2]]  # [P, N]
    else:
        slot = torch.arange(p, device=flat.device)[:, None].expand(p, n)
        keep = occ[slot, idx[..., 0], idx[..., 1], idx[..., 2]]
    m = max(int(keep.sum(1).max()), 1)
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :m]  # kept samples first
    valid = torch.gather(keep, 1, order).unsqueeze(-1).to(flat.dtype)  # [P, M, 1]
    pts = torch.gather(flat, 1, order.unsqueeze(-1).expand(p, m, 3))
    normals = None
    if with_normals:
        d, a, nrm = nerf_field_with_normals(params, pts, cfg, active_levels)
        normals = flat.new_zeros(p, n, 3).scatter(1, order.unsqueeze(-1).expand(p, m, 3), nrm * valid)
    else:
        d, a = nerf_field(params, pts, cfg, active_levels)
    density = flat.new_zeros(p, n).scatter(1, order, d * valid[..., 0])
    albedo = flat.new_zeros(p, n, 3).scatter(1, order.unsqueeze(-1).expand(p, m, 3), a * valid)
    return density, albedo, normals


def _render_chunk(
    params: Mapping[str, torch.Tensor],
    rays_o: torch.Tensor,
    rays_d: torch.Tensor,
    cfg: NeRFConfig,
    jitter: torch.Tensor,
    codes: torch.Tensor,
    shading_cfg: ShadingConfig,
    light_positions: torch.Tensor,
    background: torch.Tensor | None,
    background_mask: torch.Tensor | None,
    active_levels: int | None,
    need_normals: bool,
    occupancy: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    p, r, s = jitter.shape
    near, far = ray_sphere(rays_o, rays_d, cfg.radius)  # [P, R]
    width = ((far - near) / s).unsqueeze(-1)  # [P, R, 1]
    steps = torch.arange(s, device=rays_o.device, dtype=rays_o.dtype)
    t = near.unsqueeze(-1) + (steps + jitter) * width  # [P, R, S]
    deltas = width.expand(p, r, s)
    points = rays_o.unsqueeze(2) + t.unsqueeze(-1) * rays_d.unsqueeze(2)  # [P, R, S, 3]
    flat = points.reshape(p, r * s, 3)

    with_normals = need_normals or needs_normals(codes)
    if occupancy is not None:
        density, albedo, normals = _sparse_field(params, flat, cfg, active_levels, with_normals, occupancy)
    elif with_normals:
        density, albedo, normals = nerf_field_with_normals(params, flat, cfg, active_levels)
    else:
        density, albedo = nerf_field(params, flat, cfg, active_levels)
        normals = None
    if normals is not None:
        normals = normals.reshape(p, r, s, 3)
    density = density.reshape(p, r, s)
    albedo = albedo.reshape(p, r, s, 3)

    weights = composite(density, deltas)
    colour = shade(albedo, normals, points, light_positions.unsqueeze(2), codes.unsqueeze(-1), shading_cfg)
    w = weights.unsqueeze(-1)
    opacity = w.sum(2)
    rgb = (w * colour).sum(2)
    bg = nerf_background(params, rays_d, cfg)
    if background is not None:
        bg = (
            background
            if background_mask is None
            else torch.where(background_mask.unsqueeze(-1), background, bg)
        )
    out = {
        "rgb": rgb + (1.0 - opacity) * bg,
        "opacity": opacity,
        "depth": (weights * t).sum(-1, keepdim=True),
        "normal": (w * normals).sum(2) if normals is not None else torch.zeros_like(rgb),
        "albedo": (w * albedo).sum(2),
        "weights": weights,
        "t": t,
        "rays_d": rays_d,
    }
    if normals is not None:
        out["normals_samples"] = normals
    return out


_IMAGE_KEYS = ("rgb", "opacity", "depth", "normal", "albedo")


def render_cameras(
    params: Mapping[str, torch.Tensor],
    cameras: Cameras | Sequence[Cameras],
    height: int,
    width: int,
    cfg: NeRFConfig,
    *,
    num_samples: int,
    generator: Generators = None,
    shading: str | Sequence = "albedo",
    shading_cfg: ShadingConfig | None = None,
    light_positions: torch.Tensor | None = None,
    background: torch.Tensor | None = None,
    background_mask: torch.Tensor | None = None,
    active_levels: int | None = None,
    need_normals: bool = False,
    ray_chunk: int | None = None,
    occupancy: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Render ``B`` cameras per slot: one ``Cameras`` shared by all slots, or one per slot.

    ``shading``: a name, one per slot, or [P][B] names per camera. ``light_positions`` [P, B, 3]
    (default: at each camera). ``background`` [P, B, 3] with ``background_mask`` [P, B] (see
    ``nerf.sample_background_colors``). Image outputs (rgb, opacity, depth, normal, albedo) are
    [P, B, H, W, C]; per-sample outputs (weights, t, normals_samples, rays_d) stay flat over rays
    [P, B*H*W, ...] for the regularizers.
    """
    p = num_slots(params)
    per_slot = [cameras] * p if isinstance(cameras, Cameras) else list(cameras)
    if len(per_slot) != p:
        raise SceneError(f"need one Cameras per slot ({p}) or a single shared one, got {len(per_slot)}")
    b = len(per_slot[0])
    if any(len(c) != b for c in per_slot):
        raise SceneError(f"every slot needs the same number of cameras, got {[len(c) for c in per_slot]}")
    device = params["geometry.encoding"].device
    origins, dirs = zip(*(c.to(device).rays(height, width) for c in per_slot))
    rays_o = torch.stack(origins).reshape(p, b * height * width, 3)
    rays_d = torch.stack(dirs).reshape(p, b * height * width, 3)
    hw = height * width
    codes = shading_codes(shading, p, b, hw, device)
    if light_positions is None:
        light_positions = torch.stack([c.position.to(device) for c in per_slot])  # [P, B, 3]
    if light_positions.shape != (p, b, 3):
        raise SceneError(f"light_positions must be [P={p}, B={b}, 3], got {list(light_positions.shape)}")
    lights = light_positions.repeat_interleave(hw, dim=1)
    bg = None if background is None else background.expand(p, b, 3).repeat_interleave(hw, dim=1)
    mask = None if background_mask is None else background_mask.reshape(p, b).repeat_interleave(hw, dim=1)
    out = render_rays(
        params,
        rays_o,
        rays_d,
        cfg,
        num_samples=num_samples,
        generator=generator,
        shading=codes,
        shading_cfg=shading_cfg,
        light_positions=lights,
        background=bg,
        background_mask=mask,
        active_levels=active_levels,
        need_normals=need_normals,
        ray_chunk=ray_chunk,
        occupancy=occupancy,
    )
    for k in _IMAGE_KEYS:
        out[k] = out[k].reshape(p, b, height, width, -1)
    return out
