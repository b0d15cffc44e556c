"""Image grids for previews (PNG through Pillow, which every install has)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def image_grid(images: torch.Tensor, columns: int, pad: int = 2) -> np.ndarray:
    """uint8 [H, W, 3] grid of images [B, 3, h, w] in [0, 1], ``columns`` per row, white padding."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images [B, 3, H, W], got {tuple(images.shape)}")
    b, _, h, w = images.shape
    columns = max(1, min(columns, b))
    rows = -(-b // columns)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, dtype=np.uint8)
    pixels = (images.detach().float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    for i in range(b):
        r, c = divmod(i, columns)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y : y + h, x : x + w] = pixels[i]
    return grid


def save_png(images: torch.Tensor, path: str | Path, columns: int = 8, scale: int = 1) -> Path:
    """Write a grid of images to a PNG, each pixel enlarged ``scale`` times."""
    from PIL import Image

    grid = image_grid(images, columns)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path
