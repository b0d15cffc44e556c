"""The one render contract of a finished asset, shared by the exporters and the evaluation.

``render_fn(cameras) -> (rgb, alpha)``: ``rgb [B, H, W, 3]`` in [0, 1] on the asset's background
(white for every asset we make), ``alpha [B, H, W, 1]`` its coverage, no gradient; the resolution is
the render function's own (fixed when it is made). Channels last, as every renderer here produces
them and as image files store them; a consumer that needs channels first permutes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from dreampropeller.scene.cameras import Cameras

RenderFn = Callable[[Cameras], tuple[Tensor, Tensor]]


def broadcast_background(
    background: Tensor | float | Sequence[float], like: Tensor, error: type[Exception] = ValueError
) -> Tensor:
    """``background`` (a number, [3], [B, 3] or [B, H, W, 3]) made broadcastable to images ``like``
    [B, H, W, 3]; anything else raises ``error`` with a one-line reason."""
    bg = torch.as_tensor(background, dtype=like.dtype, device=like.device)
    if bg.dim() == 2:  # [B, 3]
        bg = bg[:, None, None, :]
    try:
        torch.broadcast_shapes(bg.shape, like.shape)
    except RuntimeError:
        raise error(
            f"background of shape {tuple(bg.shape)} does not fit images {tuple(like.shape)}; "
            "pass a number, [3], [B, 3] or [B, H, W, 3]"
        ) from None
    return bg
