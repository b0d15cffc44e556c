"""Adapters from a NeRF parameter set to the generic exporters (density / colour / render functions)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from dreampropeller.scene.cameras import Cameras
from dreampropeller.scene.nerf import NeRFConfig, nerf_field, stack_params
from dreampropeller.scene.shading import ShadingConfig
from dreampropeller.scene.views import RenderFn
from dreampropeller.scene.volume import render_cameras


def _slotted(params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One parameter set (state layout, no slot dim) -> P = 1 slotted dict."""
    return stack_params([{k: v.detach() for k, v in params.items()}])


def nerf_density_fn(
    params: Mapping[str, torch.Tensor], cfg: NeRFConfig, active_levels: int | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``points [N, 3] -> density [N]`` of one NeRF parameter set (no slot dimension)."""
    slotted = _slotted(params)
    device = slotted["geometry.encoding"].device
    return lambda pts: nerf_field(slotted, pts.to(device)[None], cfg, active_levels)[0][0]


def nerf_color_fn(
    params: Mapping[str, torch.Tensor], cfg: NeRFConfig, active_levels: int | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``points [N, 3] -> albedo [N, 3]`` of one NeRF parameter set (no slot dimension)."""
    slotted = _slotted(params)
    device = slotted["geometry.encoding"].device
    return lambda pts: nerf_field(slotted, pts.to(device)[None], cfg, active_levels)[1][0]


def nerf_render_fn(
    params: Mapping[str, torch.Tensor],
    cfg: NeRFConfig,
    height: int,
    width: int,
    num_samples: int = 64,
    shading: str = "albedo",
    active_levels: int | None = None,
    ray_chunk: int = 16384,
    occupancy: torch.Tensor | None = None,
    shading_cfg: ShadingConfig | None = None,
) -> RenderFn:
    """The :data:`~dreampropeller.scene.views.RenderFn` of one NeRF parameter set (bin-centre samples,
    no randomness, a head light with ``shading_cfg``'s ambient and diffuse terms); ``occupancy`` skips
    empty space (faster, max pixel change ~0.04)."""
    slotted = _slotted(params)

    def render(cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            out = render_cameras(
                slotted,
                cameras,
                height,
                width,
                cfg,
                num_samples=num_samples,
                shading=shading,
                shading_cfg=shading_cfg,
                active_levels=active_levels,
                ray_chunk=ray_chunk,
                occupancy=occupancy,
            )
        return out["rgb"][0], out["opacity"][0]

    return render
