"""A Gaussian run's ``gaussians.ply`` as compact splats for the report's viewer: position, size and
colour of the most opaque Gaussians, packed little-endian as ``uint32 n, float32 xyz[n], float32
size[n], uint8 rgba[n]`` (what ``viewer.js`` reads)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from dreampropeller.export.gaussians import read_gaussian_ply
from dreampropeller.scene.gaussians import SH_C0

#: the most splats a report embeds (20 bytes each before base64): keeps a report well under 5 MB
MAX_SPLATS = 60_000
#: Gaussians fainter than this opacity are left out of the preview
MIN_OPACITY = 0.05


def pack_splats(ply: Path, limit: int = MAX_SPLATS) -> bytes:
    """The packed splats of the ``.ply`` at ``ply`` (its frame: y up, like the meshes)."""
    cols = read_gaussian_ply(ply)
    xyz = np.stack([cols["x"], cols["y"], cols["z"]], 1).astype("<f4")
    opacity = 1.0 / (1.0 + np.exp(-cols["opacity"].astype(np.float64)))
    rgb = np.clip(np.stack([cols[f"f_dc_{i}"] for i in range(3)], 1) * SH_C0 + 0.5, 0.0, 1.0)
    size = np.exp(np.max(np.stack([cols[f"scale_{i}"] for i in range(3)], 1), axis=1)).astype("<f4")
    order = np.argsort(-opacity, kind="stable")
    order = order[opacity[order] >= MIN_OPACITY][:limit]
    rgba = np.concatenate([rgb[order], opacity[order, None]], 1)
    rgba = np.round(rgba * 255).astype(np.uint8)
    return b"".join(
        [
            struct.pack("<I", len(order)),
            np.ascontiguousarray(xyz[order]).tobytes(),
            np.ascontiguousarray(size[order]).tobytes(),
            np.ascontiguousarray(rgba).tobytes(),
        ]
    )
