"""The one render contract of a finished asset, shared by the exporters and the evaluation.

``render_fn(cameras) -> (rgb, alpha)``: ``rgb [B, H, W, 3]`` in [0, 1] on the asset's background
(white for every asset we make), ``alpha [B, H, W, 1]`` its coverage, no gradient; the resolution is
the render function's own (fixed when it is made). Channels last, as every renderer here produces
them and as image files store them; a consumer that needs channels first permutes.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from dreampropeller.scene.cameras import Cameras

RenderFn = Callable[[Cameras], tuple[Tensor, Tensor]]
