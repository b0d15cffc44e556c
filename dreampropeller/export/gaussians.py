"""Exporters of a Gaussian set: the 3DGS viewer ``.ply``, and density / colour / render functions for the
generic mesh and video exporters.

PLY layout (what the reference 3DGS code writes and viewers read): binary little-endian vertices with
``x y z nx ny nz f_dc_0..2 f_rest_0..(3K-1) opacity scale_0..2 rot_0..3`` as float32, the raw
(pre-activation) values: SH coefficients with ``f_rest`` channel-major, opacity logits, log scales,
quaternions (w, x, y, z). Our world is z-up; by default the file is rotated to y-up (x, z, -y), like
our meshes, with quaternions and degree-1 SH rotated along.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dreampropeller.export.errors import ExportError
from dreampropeller.export.mesh import Mesh, extract_mesh, sample_grid
from dreampropeller.scene.cameras import Cameras
from dreampropeller.scene.gaussian_raster import rasterize_gaussians
from dreampropeller.scene.gaussians import (
    COLORS,
    MEANS,
    OPACITIES,
    QUATS,
    SCALES,
    SH_C0,
    SH_REST,
    activate,
    covariance_3d,
    rgb_to_sh0,
)
from dreampropeller.scene.views import RenderFn

#: z-up world -> y-up file: (x, y, z) -> (x, z, -y)
Z_TO_Y_UP = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def _rotmat_to_quat(r: Tensor) -> Tensor:
    """Unit quaternion (w, x, y, z) of a proper rotation matrix [3, 3] (trace > -1 branch is enough here)."""
    w = torch.sqrt(torch.clamp(1.0 + r[0, 0] + r[1, 1] + r[2, 2], min=1e-12)) / 2
    return torch.stack(
        [w, (r[2, 1] - r[1, 2]) / (4 * w), (r[0, 2] - r[2, 0]) / (4 * w), (r[1, 0] - r[0, 1]) / (4 * w)]
    )


def _quat_mul(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product of quaternions (w, x, y, z), broadcasting."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def rotate_gaussians(state: Mapping[str, Tensor], rot: Tensor) -> dict[str, Tensor]:
    """The same Gaussians in a rotated frame ``p' = rot p``: means, quaternions and degree-1 SH turn along."""
    out = {k: v.detach().clone() for k, v in state.items()}
    rot = rot.to(state[MEANS])
    out[MEANS] = state[MEANS] @ rot.T
    out[QUATS] = _quat_mul(_rotmat_to_quat(rot), state[QUATS])
    if SH_REST in state:
        # rgb1 = C1 (-y s0 + z s1 - x s2) = C1 c . d with c = (-s2, -s0, s1): c' = rot c
        s = state[SH_REST]
        c = torch.stack([-s[:, 2], -s[:, 0], s[:, 1]], dim=1)  # [N, xyz, channel]
        c2 = torch.einsum("ij,njc->nic", rot, c)
        out[SH_REST] = torch.stack([-c2[:, 1], c2[:, 2], -c2[:, 0]], dim=1)
    return out


def write_gaussian_ply(
    state: Mapping[str, Tensor], path: str | Path, color_mode: str = "sh", y_up: bool = True
) -> Path:
    """Write the Gaussians of ``state`` as a 3DGS-viewer ``.ply`` (see module doc)."""
    missing = [k for k in (MEANS, SCALES, QUATS, OPACITIES, COLORS) if k not in state]
    if missing:
        raise ExportError(f"state lacks Gaussian entries {missing}; pass a Gaussian run's state")
    s = {k: v.detach().float().cpu() for k, v in state.items()}
    if color_mode == "rgb":
        s[COLORS] = rgb_to_sh0(torch.sigmoid(s[COLORS]))
    if y_up:
        s = rotate_gaussians(s, Z_TO_Y_UP)
    n = s[MEANS].shape[0]
    rest = s[SH_REST].transpose(1, 2).reshape(n, -1) if SH_REST in s else torch.zeros(n, 0)
    columns = [s[MEANS], torch.zeros(n, 3), s[COLORS], rest, s[OPACITIES][:, None], s[SCALES], s[QUATS]]
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(rest.shape[1])]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    data = torch.cat(columns, dim=1).numpy().astype("<f4")
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property float {name}" for name in names] + ["end_header"]
    path = Path(path)
    with path.open("wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(np.ascontiguousarray(data).tobytes())
    return path


def read_gaussian_ply(path: str | Path) -> dict[str, np.ndarray]:
    """The named float columns of a ``.ply`` written by :func:`write_gaussian_ply` (for checks)."""
    raw = Path(path).read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    lines = raw[:end].decode("ascii").splitlines()
    names = [ln.split()[-1] for ln in lines if ln.startswith("property")]
    n = int(next(ln for ln in lines if ln.startswith("element vertex")).split()[-1])
    data = np.frombuffer(raw[end:], dtype="<f4").reshape(n, len(names))
    return {name: data[:, i] for i, name in enumerate(names)}


# ------------------------------------------------------------------------------ fields for the mesh


def _blocks(
    points: Tensor,
    means: Tensor,
    radius: Tensor,
    fn: Callable[[Tensor, Tensor], Tensor],
    cell: float = 0.3,
) -> Tensor:
    """Apply ``fn(points, idx)`` per spatial tile of ``points`` (cubes of side ``cell``), ``idx`` the
    Gaussians whose 3-sigma box reaches the tile; results in the order of ``points``.

    A chunk of grid points spans the whole scene in two axes, so one box for the chunk would take in
    nearly every Gaussian: tiles keep the work proportional to the Gaussians near each point.
    """
    if points.shape[0] == 0:
        return fn(points, torch.zeros(0, dtype=torch.long))
    lo = points.min(0).values
    ijk = ((points - lo) / cell).floor().long()
    dims = ijk.max(0).values + 1
    key = (ijk[:, 0] * dims[1] + ijk[:, 1]) * dims[2] + ijk[:, 2]
    order = torch.argsort(key, stable=True)
    _, counts = torch.unique_consecutive(key[order], return_counts=True)
    parts = []
    for sel in torch.split(order, counts.tolist()):
        p = points[sel]
        near = (
            (means + radius[:, None] >= p.min(0).values) & (means - radius[:, None] <= p.max(0).values)
        ).all(-1)
        parts.append(fn(p, torch.nonzero(near).squeeze(-1)))
    values = torch.cat(parts)
    out = values.new_empty(values.shape)
    out[order] = values
    return out


def gaussian_fields(
    state: Mapping[str, Tensor], color_mode: str = "sh"
) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
    """``(density_fn, color_fn)`` of a Gaussian set: an extinction field ``sum_i o_i exp(-q_i / 2) /
    (sqrt(2 pi) s_i)`` (``s_i`` the mean standard deviation), whose integral through a Gaussian's centre
    is about its opacity, so the mesh exporter's silhouette-matched ``auto`` level works as for a NeRF
    (DreamGaussian thresholds the unnormalized sum at 1); colour the field-weighted mean of the
    Gaussians' view-independent colours.

    Points are processed in the chunks the mesh exporter passes; only Gaussians whose 3-sigma box
    overlaps a chunk's bounding box are evaluated (spatially sorted grids make that a small set).
    """
    s = {k: v.detach().float().cpu() for k, v in state.items()}
    act = activate(s)
    inv_cov = torch.linalg.inv(covariance_3d(act.scales, act.quats) + 1e-10 * torch.eye(3))
    radius = 3.0 * act.scales.max(-1).values
    peak = act.opacities / (math.sqrt(2 * math.pi) * act.scales.mean(-1))
    rgb = torch.sigmoid(s[COLORS]) if color_mode == "rgb" else (SH_C0 * s[COLORS] + 0.5).clamp(0, 1)

    def weights(points: Tensor, idx: Tensor, sub: int = 2048) -> Tensor:
        out = []
        for i in range(0, points.shape[0], sub):
            d = points[i : i + sub, None, :] - act.means[idx][None]  # [M, K, 3]
            q = torch.einsum("mki,kij,mkj->mk", d, inv_cov[idx], d)
            out.append(peak[idx][None] * torch.exp(-0.5 * q))
        return torch.cat(out) if out else points.new_zeros(0, idx.numel())

    def density(points: Tensor) -> Tensor:
        pts = points.float().cpu()
        return _blocks(pts, act.means, radius, lambda p, idx: weights(p, idx).sum(-1))

    def color(points: Tensor) -> Tensor:
        pts = points.float().cpu()

        def mean_color(p: Tensor, idx: Tensor) -> Tensor:
            w = weights(p, idx)
            return (w @ rgb[idx]) / w.sum(-1, keepdim=True).clamp_min(1e-8)

        return _blocks(pts, act.means, radius, mean_color)

    return density, color


def gaussian_render_fn(
    state: Mapping[str, Tensor],
    height: int,
    width: int,
    color_mode: str = "sh",
    background: float = 1.0,
    backend: str = "auto",
) -> RenderFn:
    """The :data:`~dreampropeller.scene.views.RenderFn` of a Gaussian set on a plain background."""
    params = {k: v.detach() for k, v in state.items() if k.startswith("gaussians.")}
    if MEANS not in params:
        raise ExportError("state lacks Gaussian entries; pass a Gaussian run's state")

    def render(cameras: Cameras) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            out = rasterize_gaussians(
                params, cameras.to(params[MEANS].device), height, width, background,
                backend=backend, color_mode=color_mode,
            )  # fmt: skip
        return out["rgb"], out["alpha"]

    return render


def gaussian_mesh(
    state: Mapping[str, Tensor],
    color_mode: str = "sh",
    bound: float = 1.0,
    resolution: int = 96,
    threshold: float | str = "auto",
    colour: bool = True,
) -> Mesh:
    """Marching cubes of a Gaussian set's density field (:func:`gaussian_fields`), vertex-coloured.

    A faint set never reaches the ``auto`` level (50% opacity): it falls back to half its peak density.
    """
    density, color = gaussian_fields(state, color_mode)
    color_fn = color if colour else None
    with torch.no_grad():
        try:
            return extract_mesh(
                density, color_fn, bound=bound, resolution=resolution, threshold=threshold, chunk=16384
            )
        except ExportError:
            if threshold != "auto":
                raise
        peak = float(sample_grid(density, bound, min(resolution, 32), chunk=16384).max())
        if not peak > 0:
            raise ExportError("the Gaussians have no density inside the export bound; nothing to mesh")
        return extract_mesh(
            density, color_fn, bound=bound, resolution=resolution, threshold=0.5 * peak, chunk=16384
        )
