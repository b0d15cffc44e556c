"""Turntable videos and view strips, generic over the representation.

A :data:`~dreampropeller.scene.views.RenderFn` (``render_fn(cameras) -> (rgb [B, H, W, 3], alpha)``,
rgb in [0, 1], tensor or array) is all these need; cameras come from
:func:`dreampropeller.scene.cameras.turntable`. Videos are h264 / yuv420p (plays everywhere),
which needs even frame sizes: odd sizes are padded by repeating the last row / column.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
from tqdm import tqdm

from dreampropeller.export.errors import ExportError
from dreampropeller.scene.cameras import Cameras, turntable
from dreampropeller.scene.views import RenderFn


def to_uint8(rgb: torch.Tensor | np.ndarray) -> np.ndarray:
    """[..., H, W, 3] floats in [0, 1] -> uint8 (NaN -> 0)."""
    if isinstance(rgb, torch.Tensor):
        rgb = rgb.detach().float().cpu().numpy()
    return (np.nan_to_num(np.clip(rgb, 0.0, 1.0)) * 255.0 + 0.5).astype(np.uint8)


def _even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def render_frames(
    render_fn: RenderFn, cameras: Cameras, chunk: int = 8, progress: bool = True
) -> Iterable[np.ndarray]:
    """uint8 frames [H, W, 3] of ``cameras``, rendered ``chunk`` views at a time under no_grad."""
    n = len(cameras)
    with tqdm(total=n, desc="rendering views", unit="view", disable=not progress, leave=False) as bar:
        for s in range(0, n, chunk):
            with torch.no_grad():
                rgb, _ = render_fn(cameras.index(slice(s, s + chunk)))
            frames = to_uint8(rgb)
            if frames.ndim != 4 or frames.shape[-1] != 3:
                raise ExportError(
                    f"render_fn must return rgb [B, H, W, 3] images, got shape {list(frames.shape)}"
                )
            bar.update(len(frames))
            yield from frames


def write_video(frames: Iterable[np.ndarray], path: str | Path, fps: int = 30, quality: int = 8) -> int:
    """Write uint8 frames to an h264 / yuv420p mp4; returns the number of frames written."""
    path = Path(path)
    count = 0
    writer = imageio.get_writer(
        path, fps=fps, codec="libx264", pixelformat="yuv420p", quality=quality, macro_block_size=1
    )
    try:
        for frame in frames:
            writer.append_data(_even(np.ascontiguousarray(frame)))
            count += 1
    finally:
        writer.close()
    if count == 0:
        path.unlink(missing_ok=True)
        raise ExportError("no frames to write; give at least one view")
    return count


def write_turntable(
    render_fn: RenderFn,
    path: str | Path,
    n_views: int = 120,
    fps: int = 30,
    elevation: float = 15.0,
    distance: float = 2.0,
    fovy: float = 50.0,
    chunk: int = 8,
    progress: bool = True,
) -> Path:
    """A turntable mp4 of ``n_views`` views evenly around the object (threestudio: 120 views at 30 fps)."""
    if n_views < 1 or fps < 1:
        raise ExportError(f"n_views and fps must be >= 1, got {n_views}, {fps}")
    cams = turntable(n_views, elevation=elevation, distance=distance, fovy=fovy)
    write_video(render_frames(render_fn, cams, chunk, progress), path, fps=fps)
    return Path(path)


def write_views_png(
    render_fn: RenderFn,
    path: str | Path,
    n: int = 4,
    elevation: float = 15.0,
    distance: float = 2.0,
    fovy: float = 50.0,
) -> Path:
    """A 1 x ``n`` strip of views evenly around the object (front first) as one PNG."""
    if n < 1:
        raise ExportError(f"need at least one view, got n={n}")
    cams = turntable(n, elevation=elevation, distance=distance, fovy=fovy)
    frames = list(render_frames(render_fn, cams, chunk=n, progress=False))
    imageio.imwrite(Path(path), np.concatenate(frames, axis=1))
    return Path(path)
