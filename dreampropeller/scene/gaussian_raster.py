"""Differentiable rasterization of 3D Gaussians: a pure-PyTorch path (any device) and gsplat (CUDA).

Both backends follow gsplat's "classic" 3DGS semantics so that they agree to rounding:

* EWA projection: camera covariance ``R Sigma R^T``, Jacobian of the pinhole projection (camera-space
  ``x/z``, ``y/z`` clamped to 1.3x the half field of view), 2D covariance plus ``eps2d = 0.3`` on the
  diagonal (low-pass), Gaussians with depth outside ``[near, far]`` culled.
* Per-axis screen radius ``ceil(extend * sqrt(cov_ii))`` with the opacity-aware
  ``extend = min(3.33, sqrt(2 ln(opacity * 255)))``: outside that box a Gaussian's alpha is below 1/255.
* Front-to-back compositing in depth order, ``alpha = min(0.999, o exp(-q/2))``, contributions with
  ``alpha < 1/255`` skipped, a pixel stops before the contribution that brings its transmittance to
  ``<= 1e-4``.

Cameras come from :mod:`dreampropeller.scene.cameras` (OpenGL frames: looks along -z, y up, rows top to
bottom, ``focal = 0.5 H / tan(fovy / 2)`` for both axes, principal point at the image centre). They are
converted here to gsplat's world-to-camera OpenCV view matrices (y down, z forward) and ``K``.

The torch path enumerates (Gaussian, pixel) pairs inside every visible Gaussian's screen box (work
proportional to the covered area, not to pixels x Gaussians), sorts them by pixel (stably, so depth order
is kept), and composites with segmented cumulative sums of ``log(1 - alpha)``; large scenes go in
depth-ordered chunks of pairs with a running per-pixel transmittance.

Densification statistics: the result carries ``means2d`` [B, N, 2] (pixel coordinates of the projected
centres, part of the autograd graph) and ``radii`` [B, N, 2]; pass ``means2d`` as an extra input of
``torch.autograd.grad`` to get the view-space positional gradient 3DGS accumulates (see
:mod:`dreampropeller.scene.densify`).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .cameras import Cameras, cameras_from_spherical
from .gaussians import (
    MEANS,
    SH_REST,
    GaussianError,
    activate,
    check_gaussians,
    covariance_3d,
    gaussian_colors,
    init_gaussians,
)
from .views import broadcast_background

ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.999
MIN_TRANSMITTANCE = 1e-4
MAX_EXTEND = 3.33
BACKENDS = ("auto", "torch", "gsplat")
#: Pairs (Gaussian, pixel) processed at once by the torch path (bounds temporary memory).
DEFAULT_MAX_PAIRS = 1 << 22

Params = Mapping[str, Tensor]


class Projected(NamedTuple):
    """Screen-space Gaussians of one set seen by B cameras (entries of culled ones are meaningless)."""

    means2d: Tensor  # [B, N, 2] pixel coordinates (pixel centres at i + 0.5)
    conics: Tensor  # [B, N, 3] inverse 2D covariance (a, b, c): q = a dx^2 + 2 b dx dy + c dy^2
    depths: Tensor  # [B, N] camera z (OpenCV: forward)
    radii: Tensor  # [B, N, 2] int32 screen half-extent in x and y; 0 = culled


# ----------------------------------------------------------------------------------------------- cameras


def camera_matrices(cameras: Cameras, height: int, width: int) -> tuple[Tensor, Tensor]:
    """World-to-camera OpenCV view matrices [B, 4, 4] and intrinsics [B, 3, 3] of ``cameras``."""
    c2w = cameras.c2w
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=c2w.dtype, device=c2w.device))
    viewmats = flip @ torch.linalg.inv(c2w)  # OpenGL camera -> OpenCV camera (y down, z forward)
    focal = 0.5 * height / torch.tan(0.5 * torch.deg2rad(cameras.fovy.to(c2w)))
    ks = torch.zeros(c2w.shape[0], 3, 3, dtype=c2w.dtype, device=c2w.device)
    ks[:, 0, 0] = focal
    ks[:, 1, 1] = focal
    ks[:, 0, 2] = 0.5 * width
    ks[:, 1, 2] = 0.5 * height
    ks[:, 2, 2] = 1.0
    return viewmats, ks


# -------------------------------------------------------------------------------------------- projection


def projection_jacobian(mean_c: Tensor, ks: Tensor, height: int, width: int) -> Tensor:
    """Jacobian [B, N, 2, 3] of the pinhole projection at camera-space points [B, N, 3] (z > 0)."""
    fx, fy = ks[:, 0, 0, None], ks[:, 1, 1, None]
    cx, cy = ks[:, 0, 2, None], ks[:, 1, 2, None]
    x, y, z = mean_c.unbind(-1)
    # clamp the direction to 1.3x the half field of view (3DGS / gsplat) so off-screen Gaussians stay sane
    lim_x = 0.5 * width / fx
    lim_y = 0.5 * height / fy
    tx = z * torch.minimum((width - cx) / fx + 0.3 * lim_x, torch.maximum(-(cx / fx + 0.3 * lim_x), x / z))
    ty = z * torch.minimum((height - cy) / fy + 0.3 * lim_y, torch.maximum(-(cy / fy + 0.3 * lim_y), y / z))
    zero = torch.zeros_like(z)
    row0 = torch.stack([fx / z, zero, -fx * tx / z.square()], dim=-1)
    row1 = torch.stack([zero, fy / z, -fy * ty / z.square()], dim=-1)
    return torch.stack([row0, row1], dim=-2)


def project_gaussians(
    means: Tensor,
    scales: Tensor,
    quats: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    ks: Tensor,
    height: int,
    width: int,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
) -> Projected:
    """EWA projection of N Gaussians (activated: std scales, unit quats, opacities) into B cameras."""
    rot, trans = viewmats[:, None, :3, :3], viewmats[:, None, :3, 3]
    mean_c = (rot @ means[None, :, :, None]).squeeze(-1) + trans  # [B, N, 3]
    z = mean_c[..., 2]
    in_range = (z >= near_plane) & (z <= far_plane)
    # substitute a harmless point for culled ones so no inf/nan reaches the gradients
    safe_c = torch.where(in_range[..., None], mean_c, mean_c.new_tensor([0.0, 0.0, 1.0]))
    cov_c = rot @ covariance_3d(scales, quats)[None] @ rot.transpose(-1, -2)  # [B, N, 3, 3]
    jac = projection_jacobian(safe_c, ks, height, width)
    cov2d = jac @ cov_c @ jac.transpose(-1, -2)
    a = cov2d[..., 0, 0] + eps2d
    b = cov2d[..., 0, 1]
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    ok = in_range & (det > 0)
    det_safe = torch.where(ok, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    sz = safe_c[..., 2]
    u = ks[:, None, 0, 0] * safe_c[..., 0] / sz + ks[:, None, 0, 2]
    v = ks[:, None, 1, 1] * safe_c[..., 1] / sz + ks[:, None, 1, 2]
    means2d = torch.stack([u, v], dim=-1)
    with torch.no_grad():
        opac = opacities.detach()[None].expand_as(z)
        ok = ok & (opac >= ALPHA_THRESHOLD)
        extend = torch.sqrt(2.0 * torch.log(opac.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD)).clamp_max(
            MAX_EXTEND
        )
        rx = torch.ceil(extend * torch.sqrt(a.detach().clamp_min(0)))
        ry = torch.ceil(extend * torch.sqrt(c.detach().clamp_min(0)))
        u_, v_ = u.detach(), v.detach()
        inside = (u_ + rx > 0) & (u_ - rx < width) & (v_ + ry > 0) & (v_ - ry < height)
        ok = ok & inside & ((rx > 0) | (ry > 0))
        radii = torch.where(ok[..., None], torch.stack([rx, ry], dim=-1), torch.zeros_like(means2d)).to(
            torch.int32
        )
    return Projected(means2d, conics, z, radii)


# ----------------------------------------------------------------------------------------- compositing


def _pairs(box_lo: Tensor, box_w: Tensor, counts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Enumerate pixels of boxes: (instance index, pixel x, pixel y) per pair."""
    total = int(counts.sum())
    inst = torch.repeat_interleave(
        torch.arange(counts.shape[0], device=counts.device), counts, output_size=total
    )
    starts = torch.cumsum(counts, 0) - counts
    off = torch.arange(total, device=counts.device) - starts[inst]
    w = box_w[inst]
    return inst, box_lo[inst, 0] + off % w, box_lo[inst, 1] + torch.div(off, w, rounding_mode="floor")


def composite(
    proj: Projected,
    colors: Tensor,
    opacities: Tensor,
    height: int,
    width: int,
    *,
    max_pairs: int = DEFAULT_MAX_PAIRS,
) -> tuple[Tensor, Tensor, Tensor]:
    """Front-to-back alpha compositing of projected Gaussians.

    ``colors`` [B, N, C], ``opacities`` [N] (activated). Returns ``(color [B, H, W, C],
    alpha [B, H, W, 1], accumulated depth [B, H, W, 1])`` over a zero background.
    """
    bsz, n = proj.depths.shape
    ch = colors.shape[-1]
    hw = height * width
    device = colors.device
    visible = (proj.radii > 0).any(-1).reshape(-1)
    inst_all = torch.nonzero(visible).squeeze(-1)  # flat (camera, gaussian) instances
    order = torch.argsort(proj.depths.detach().reshape(-1)[inst_all], stable=True)
    inst_all = inst_all[order]  # depth order (across cameras; the pixel sort separates the images)
    with torch.no_grad():
        m2d = proj.means2d.detach().reshape(-1, 2)[inst_all]
        rad = proj.radii.reshape(-1, 2)[inst_all].to(m2d.dtype)
        lo = torch.ceil(m2d - rad - 0.5).clamp_min(0)
        hi = torch.floor(m2d + rad - 0.5)
        hi = torch.minimum(hi, hi.new_tensor([width - 1, height - 1]))
        box_lo = lo.long()
        box_wh = (hi - lo + 1).clamp_min(0).long()
        counts = box_wh[:, 0] * box_wh[:, 1]
        cum = torch.cumsum(counts, 0)
    flat_means2d = proj.means2d.reshape(-1, 2)
    flat_conics = proj.conics.reshape(-1, 3)
    flat_colors = torch.cat([colors.reshape(-1, ch), proj.depths.reshape(-1, 1).to(colors.dtype)], dim=-1)
    flat_opac = opacities[None].expand(bsz, n).reshape(-1)
    acc = colors.new_zeros(bsz * hw, ch + 2)  # colour channels, depth, alpha
    log_t = torch.zeros(bsz * hw, dtype=torch.float64, device=device)  # running log transmittance
    start = 0
    while start < inst_all.shape[0]:
        base = int(cum[start - 1]) if start > 0 else 0
        stop = int(torch.searchsorted(cum, base + max_pairs, right=True))
        stop = max(stop, start + 1)
        sel = slice(start, stop)
        acc, log_t = _composite_chunk(
            inst_all[sel], box_lo[sel], box_wh[sel], counts[sel], flat_means2d, flat_conics, flat_colors,
            flat_opac, acc, log_t, n, hw, width,
        )  # fmt: skip
        start = stop
    acc = acc.reshape(bsz, height, width, ch + 2)
    return acc[..., :ch], acc[..., ch + 1 :], acc[..., ch : ch + 1]


def _composite_chunk(
    inst: Tensor,
    box_lo: Tensor,
    box_wh: Tensor,
    counts: Tensor,
    means2d: Tensor,
    conics: Tensor,
    feats: Tensor,
    opac: Tensor,
    acc: Tensor,
    log_t: Tensor,
    n: int,
    hw: int,
    width: int,
) -> tuple[Tensor, Tensor]:
    """Composite the pairs of a depth-ordered run of instances into ``acc`` given the running ``log_t``."""
    pair_inst, px, py = _pairs(box_lo, box_wh[:, 0], counts)
    flat = inst[pair_inst]  # camera * N + gaussian
    pix = torch.div(flat, n, rounding_mode="floor") * hw + py * width + px
    m = means2d[flat]
    dx = px.to(m.dtype) + 0.5 - m[:, 0]
    dy = py.to(m.dtype) + 0.5 - m[:, 1]
    cn = conics[flat]
    q = 0.5 * (cn[:, 0] * dx.square() + cn[:, 2] * dy.square()) + cn[:, 1] * dx * dy
    alpha = (opac[flat] * torch.exp(-q)).clamp_max(MAX_ALPHA)
    with torch.no_grad():
        keep = torch.nonzero((q >= 0) & (alpha >= ALPHA_THRESHOLD)).squeeze(-1)
        pix_k = pix[keep]
        order = torch.argsort(pix_k, stable=True)  # by pixel; ties keep depth order
        keep, pix_s = keep[order], pix_k[order]
        first = torch.ones_like(pix_s, dtype=torch.bool)
        first[1:] = pix_s[1:] != pix_s[:-1]
        seg = torch.cumsum(first.long(), 0) - 1
    a = alpha[keep]
    log1m = torch.log1p(-a.double())
    incl = torch.cumsum(log1m, 0)
    seg_base = (incl - log1m)[first]  # cumulative sum before each pixel's first pair
    log_before = incl - log1m - seg_base[seg] + log_t[pix_s]
    trans_before = torch.exp(log_before)
    with torch.no_grad():
        alive = (log_before + log1m) > math.log(MIN_TRANSMITTANCE)
    w = (a * trans_before.to(a.dtype)) * alive
    contrib = torch.cat([w[:, None] * feats[flat[keep]], w[:, None]], dim=-1)
    acc = acc.index_add(0, pix_s, contrib)
    log_t = log_t.index_add(0, pix_s, log1m)
    return acc, log_t


# ------------------------------------------------------------------------------------------ front door


def _split_slots(params: Params | Sequence[Params]) -> tuple[list[dict[str, Tensor]], bool, bool]:
    """Per-slot parameter dicts, whether the input had slots, and whether it was one stacked tensor set."""
    if isinstance(params, Mapping):
        if MEANS not in params:
            raise GaussianError(f"params lack {MEANS!r}; pass a Gaussian state from init_gaussians()")
        if params[MEANS].dim() == 3:
            check_gaussians(dict(params), slots=True)
            p = params[MEANS].shape[0]
            return [{k: v[i] for k, v in params.items()} for i in range(p)], True, True
        check_gaussians(dict(params))
        return [dict(params)], False, False
    slots = [dict(s) for s in params]
    if not slots:
        raise GaussianError("params is an empty list; pass at least one Gaussian set")
    for s in slots:
        check_gaussians(s)
    return slots, True, False


def _background(background: Tensor | float | None, like: Tensor) -> Tensor:
    """A background broadcastable to ``like`` [B, H, W, 3] (none: black)."""
    if background is None:
        return like.new_zeros(3)
    return broadcast_background(background, like, GaussianError)


def gsplat_available() -> bool:
    """True when gsplat is importable and CUDA is present."""
    return torch.cuda.is_available() and importlib.util.find_spec("gsplat") is not None


def _render_torch(
    params: dict[str, Tensor],
    cameras: Cameras,
    height: int,
    width: int,
    color_mode: str,
    opts: dict[str, Any],
) -> dict[str, Tensor]:
    act = activate(params)
    viewmats, ks = camera_matrices(cameras.to(act.means.device), height, width)
    viewmats, ks = viewmats.to(act.means.dtype), ks.to(act.means.dtype)
    proj = project_gaussians(
        act.means, act.scales, act.quats, act.opacities, viewmats, ks, height, width,
        near_plane=opts["near_plane"], far_plane=opts["far_plane"], eps2d=opts["eps2d"],
    )  # fmt: skip
    colors = gaussian_colors(params, cameras.position.to(act.means), color_mode)
    rgb, alpha, depth_acc = composite(proj, colors, act.opacities, height, width, max_pairs=opts["max_pairs"])
    return {"rgb": rgb, "alpha": alpha, "depth_acc": depth_acc, "means2d": proj.means2d, "radii": proj.radii}


def _render_gsplat(
    params: dict[str, Tensor],
    cameras: Cameras,
    height: int,
    width: int,
    color_mode: str,
    opts: dict[str, Any],
) -> dict[str, Tensor]:
    from gsplat import rasterization  # imported lazily: CUDA-only dependency

    act = activate(params)
    dev = act.means.device
    viewmats, ks = camera_matrices(cameras.to(dev), height, width)
    colors = gaussian_colors(params, cameras.position.to(act.means), color_mode)  # [B, N, 3]
    render, alpha, meta = rasterization(
        act.means, act.quats, act.scales, act.opacities, colors,
        viewmats.float().contiguous(), ks.float().contiguous(), width, height,
        near_plane=opts["near_plane"], far_plane=opts["far_plane"], eps2d=opts["eps2d"],
        packed=False, render_mode="RGB+D", rasterize_mode="classic",
    )  # fmt: skip
    return {
        "rgb": render[..., :3],
        "alpha": alpha,
        "depth_acc": render[..., 3:4],
        "means2d": meta["means2d"],
        "radii": meta["radii"].to(torch.int32),
    }


def rasterize_gaussians(
    params: Params | Sequence[Params],
    cameras: Cameras | Sequence[Cameras],
    height: int,
    width: int,
    background: Tensor | float | Sequence[Tensor] | None = None,
    *,
    backend: str = "auto",
    color_mode: str = "sh",
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    max_pairs: int = DEFAULT_MAX_PAIRS,
) -> dict[str, Tensor | list[Tensor]]:
    """Render Gaussian sets into B cameras.

    ``params``: one Gaussian state (entries [N, ...]), a state with a leading slot dimension
    ([P, N, ...]), or a list of P states (N may differ per slot). ``cameras``: one batch of B cameras
    shared by the slots, or a list of P batches. ``background``: colour [3], [B, 3] or [B, H, W, 3]
    (a list per slot also works); black when ``None``.

    Returns ``rgb`` [B, H, W, 3], ``alpha`` [B, H, W, 1], ``depth`` [B, H, W, 1] (expected camera
    depth, ``sum w z / alpha``; 0 where nothing is hit), ``means2d`` [B, N, 2] (pixel positions of the
    centres, in the graph: differentiate with respect to it for densification) and ``radii`` [B, N, 2]
    (int, 0 = not visible). With slots the images get a leading P dimension; ``means2d`` / ``radii``
    are stacked [P, B, N, ...] for stacked input and lists for list input.
    """
    if backend not in BACKENDS:
        raise GaussianError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if height < 1 or width < 1:
        raise GaussianError(f"image size must be positive, got {height}x{width}")
    slots, slotted, stacked = _split_slots(params)
    cams = list(cameras) if isinstance(cameras, Sequence) else [cameras] * len(slots)
    if len(cams) != len(slots):
        raise GaussianError(
            f"got {len(cams)} camera batches for {len(slots)} slots; pass one per slot or one"
        )
    bgs = list(background) if isinstance(background, (list, tuple)) else [background] * len(slots)
    if len(bgs) != len(slots):
        raise GaussianError(f"got {len(bgs)} backgrounds for {len(slots)} slots; pass one per slot or one")
    on_cuda = slots[0][MEANS].is_cuda
    if backend == "gsplat" and not (on_cuda and gsplat_available()):
        raise GaussianError("backend='gsplat' needs CUDA tensors and the gsplat package; use backend='torch'")
    use_gsplat = backend == "gsplat" or (backend == "auto" and on_cuda and gsplat_available())
    if use_gsplat and any(SH_REST in s for s in slots) and color_mode != "sh":
        raise GaussianError("degree-1 SH needs color_mode='sh'")
    render = _render_gsplat if use_gsplat else _render_torch
    opts = {"near_plane": near_plane, "far_plane": far_plane, "eps2d": eps2d, "max_pairs": max_pairs}
    outs = []
    for state, cam, bg in zip(slots, cams, bgs, strict=True):
        out = render(state, cam, height, width, color_mode, opts)
        alpha = out["alpha"]
        out["rgb"] = out["rgb"] + (1.0 - alpha) * _background(bg, out["rgb"])
        out["depth"] = out.pop("depth_acc") / alpha.clamp_min(1e-10)
        outs.append(out)
    if not slotted:
        return outs[0]
    result: dict[str, Tensor | list[Tensor]] = {
        k: torch.stack([o[k] for o in outs]) for k in ("rgb", "alpha", "depth")
    }
    for k in ("means2d", "radii"):
        result[k] = torch.stack([o[k] for o in outs]) if stacked else [o[k] for o in outs]
    return result


# ---------------------------------------------------------------------------------- backend comparison


def random_scene(
    n: int = 2000, seed: int = 0, sh_degree: int = 1, device: str = "cpu"
) -> tuple[dict[str, Tensor], Cameras]:
    """A fixed random test scene (anisotropic, rotated, mixed opacities) and 4 cameras around it."""
    gen = torch.Generator().manual_seed(seed)
    state = init_gaussians(n, 0.5, gen, opacity=0.5, sh_degree=sh_degree)
    state["gaussians.scales"] = state["gaussians.scales"] + 0.5 * torch.randn(n, 3, generator=gen)
    state["gaussians.quats"] = torch.randn(n, 4, generator=gen)
    state["gaussians.opacities"] = 2.0 * torch.randn(n, generator=gen)
    if sh_degree == 1:
        state[SH_REST] = 0.3 * torch.randn(n, 3, 3, generator=gen)
    cams = cameras_from_spherical(
        torch.tensor([10.0, 30.0, -5.0, 60.0]), torch.tensor([0.0, 90.0, 200.0, 300.0]), 1.8, 50.0
    )
    return {k: v.to(device) for k, v in state.items()}, cams.to(device)


def compare_backends(n: int = 2000, size: int = 128, seed: int = 0, device: str = "cuda") -> dict[str, float]:
    """Render :func:`random_scene` with both backends; differences of images and gradients."""
    state, cams = random_scene(n, seed, device=device)
    gen = torch.Generator().manual_seed(seed + 1)
    weights = torch.rand(len(cams), size, size, 5, generator=gen).to(device)
    bg = torch.tensor([0.2, 0.4, 0.6], device=device)
    report: dict[str, float] = {}
    results = {}
    for backend in ("torch", "gsplat"):
        leaves = {k: v.clone().requires_grad_(True) for k, v in state.items()}
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = rasterize_gaussians(leaves, cams, size, size, bg, backend=backend)
        img = torch.cat([out["rgb"], out["alpha"], out["depth"]], dim=-1)
        loss = (img * weights).sum()
        keys = list(leaves)
        grads = torch.autograd.grad(loss, [leaves[k] for k in keys] + [out["means2d"]], allow_unused=True)
        if device == "cuda":
            torch.cuda.synchronize()
        report[f"{backend}_seconds"] = time.perf_counter() - t0
        results[backend] = (img.detach(), dict(zip([*keys, "means2d"], grads)), out["radii"])
    (img_t, g_t, r_t), (img_g, g_g, r_g) = results["torch"], results["gsplat"]
    for name, sl in (("rgb", slice(0, 3)), ("alpha", slice(3, 4)), ("depth", slice(4, 5))):
        diff = (img_t[..., sl] - img_g[..., sl]).abs()
        report[f"{name}_max_abs"] = float(diff.max())
        report[f"{name}_mean_abs"] = float(diff.mean())
    report["radii_mismatch_frac"] = float((r_t != r_g).any(-1).float().mean())
    for key, gt in g_t.items():
        gg = g_g[key]
        if gt is None or gg is None:
            continue
        gt, gg = gt.flatten().double(), gg.flatten().double()
        short = key.split(".")[-1]
        report[f"grad_{short}_cos"] = float(torch.nn.functional.cosine_similarity(gt, gg, dim=0))
        report[f"grad_{short}_rel_err"] = float((gt - gg).norm() / gg.norm().clamp_min(1e-30))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dreampropeller.scene.gaussian_raster --check``: torch vs gsplat on a CUDA device."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare the torch and gsplat backends")
    parser.add_argument("-n", type=int, default=2000, help="number of Gaussians")
    parser.add_argument("--size", type=int, default=128, help="image height and width")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tol", type=float, default=1e-3, help="max abs rgb/alpha difference to pass")
    args = parser.parse_args(argv)
    if not args.check:
        parser.print_help()
        return 0
    if not gsplat_available():
        print("the check needs a CUDA device and the gsplat package (a GPU machine)", file=sys.stderr)
        return 2
    report = compare_backends(args.n, args.size, args.seed)
    for key, value in report.items():
        print(f"{key:28s} {value:.3e}")
    ok = report["rgb_max_abs"] < args.tol and report["alpha_max_abs"] < args.tol
    ok = ok and all(v > 0.99 for k, v in report.items() if k.endswith("_cos"))
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
