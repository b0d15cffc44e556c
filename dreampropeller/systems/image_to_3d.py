"""Image-to-3D with Gaussians (DreamGaussian's image mode): a reference view at a fixed camera plus SDS.

Every unit renders, per slot, the SDS views and the reference camera in one rasterizer call; the
reference render is pulled towards the image (``lambda_rgb * mse(rgb) + lambda_mask * mse(alpha)``,
ramped up over the run) and the other views get SDS from the prior. Text priors use the prompt when
one is given, else their unconditional prediction; an image-conditioned prior (Zero123, later) only
needs a different :meth:`guidance_gradient` and the reference image, both reachable from here.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dreampropeller.guidance.prior import DiffusionPrior, TextCondition, index_condition
from dreampropeller.guidance.prompts import PromptConfig
from dreampropeller.scene.cameras import Cameras, cameras_from_spherical
from dreampropeller.systems.gaussians import GaussianTextTo3D
from dreampropeller.systems.text_to_3d import TextTo3DConfig

#: An RGB pixel this close to white (max over channels of 1 - value) counts as background.
WHITE_TOLERANCE = 0.02


class ImageError(ValueError):
    """A reference image that cannot be used (the message says which and what to do)."""


def load_reference_image(path: str | Path, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rgb [H, W, 3] on white, mask [H, W, 1])`` in [0, 1] from an RGBA image or an RGB one on white."""
    import imageio.v2 as imageio

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image {str(path)!r} not found: give the path of a PNG or JPEG file")
    try:
        img = np.asarray(imageio.imread(path))
    except Exception as err:  # imageio raises many types for undecodable files
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ImageError(f"cannot read image {str(path)!r} ({first}): give a PNG or JPEG file") from None
    channels = 1 if img.ndim == 2 else img.shape[-1] if img.ndim == 3 else -1
    if channels not in (3, 4):
        raise ImageError(
            f"image {str(path)!r} has {channels if channels > 0 else 'no'} colour channels (shape "
            f"{list(img.shape)}): give an RGBA image or an RGB image on a white background"
        )
    if img.dtype == np.uint8:
        data = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        data = img.astype(np.float32) / 65535.0
    else:
        data = np.clip(img.astype(np.float32), 0.0, 1.0)
    x = torch.from_numpy(np.ascontiguousarray(data))
    if channels == 4:
        mask = x[..., 3:4]
        rgb = x[..., :3] * mask + (1.0 - mask)  # composite on white
    else:
        rgb = x
        mask = ((1.0 - rgb).amax(-1, keepdim=True) > WHITE_TOLERANCE).float()
    stacked = torch.cat([rgb, mask], -1).permute(2, 0, 1)[None]
    down = stacked.shape[-2] > height or stacked.shape[-1] > width
    stacked = F.interpolate(
        stacked, size=(height, width), mode="bilinear", align_corners=False, antialias=down
    )
    out = stacked[0].permute(1, 2, 0).clamp(0, 1)
    return out[..., :3].contiguous(), out[..., 3:].contiguous()


class UnconditionalPrompts:
    """Stands in for :class:`PromptProcessor` without a prompt: both halves unconditional."""

    def __init__(self, prior: DiffusionPrior, cfg: PromptConfig | None = None) -> None:
        self.cfg = cfg or PromptConfig()
        with torch.no_grad():
            self.uncond = prior.encode_text([self.cfg.negative_prompt])

    def condition(
        self, elevation: torch.Tensor, azimuth: torch.Tensor
    ) -> tuple[TextCondition, TextCondition]:
        idx = torch.zeros(
            elevation.shape[0], dtype=torch.long, device=next(iter(self.uncond.values())).device
        )
        cond = index_condition(self.uncond, idx)
        return cond, dict(cond)


def _cat_cameras(a: Cameras, b: Cameras) -> Cameras:
    fields = ("c2w", "fovy", "elevation", "azimuth", "distance")
    return Cameras(*(torch.cat([getattr(a, f), getattr(b, f).to(getattr(a, f))]) for f in fields))


class GaussianImageTo3D(GaussianTextTo3D):
    """Gaussians fitted to a reference image at a fixed camera, SDS for the other views."""

    def __init__(
        self,
        cfg: TextTo3DConfig,
        prior: DiffusionPrior,
        device: torch.device | str = "cpu",
        image: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        if image is None and not cfg.image.path:
            raise ImageError("image-to-3D needs a reference image: pass --image PATH (image.path)")
        super().__init__(cfg, prior, device)
        rgb, mask = (
            image
            if image is not None
            else load_reference_image(cfg.image.path, cfg.render.height, cfg.render.width)
        )
        if tuple(rgb.shape) != (cfg.render.height, cfg.render.width, 3):
            raise ImageError(
                f"reference rgb has shape {list(rgb.shape)}, expected [{cfg.render.height}, "
                f"{cfg.render.width}, 3] (the render size)"
            )
        self.ref_rgb = rgb.to(self.device)
        self.ref_mask = mask.to(self.device)
        im = cfg.image
        self.ref_camera = cameras_from_spherical(im.elevation, im.azimuth, im.distance, im.fovy, batch=1)

    def _setup_guidance(self, cfg: TextTo3DConfig, prior: DiffusionPrior, device: torch.device | str) -> None:
        if cfg.prompt and cfg.prompt.strip():
            super()._setup_guidance(cfg, prior, device)
            return
        self.cfg = cfg
        self.device = torch.device(device)
        self.prior = prior.to(self.device).eval()
        for p in self.prior.parameters():
            p.requires_grad_(False)
        self.prompts = UnconditionalPrompts(self.prior, cfg.prompt_processing)  # type: ignore[assignment]
        self.seed = int(cfg.seed)

    def _views(self, draws: dict[str, Any]) -> tuple[Cameras, torch.Tensor]:
        cams, bg = super()._views(draws)
        return _cat_cameras(cams, self.ref_camera), torch.cat([bg, torch.ones(1, 3)])

    def reference_weight(self, t: int) -> float:
        """DreamGaussian's warm-up: the reference losses ramp linearly to full weight at the last step."""
        return min(1.0, (t + 1) / max(self.cfg.steps, 1)) if self.cfg.image.warmup else 1.0

    def _extra_loss(self, out: dict[str, Any], ts: Sequence[int]) -> torch.Tensor:
        b = self.cfg.render.batch_size
        rgb, alpha = out["rgb"][:, b], out["alpha"][:, b]  # [P, H, W, 3], [P, H, W, 1]
        im = self.cfg.image
        rgb_loss = (rgb - self.ref_rgb).square().flatten(1).mean(1)
        mask_loss = (alpha - self.ref_mask).square().flatten(1).mean(1)
        ramp = torch.tensor([self.reference_weight(t) for t in ts], device=rgb.device)
        return ramp * (im.lambda_rgb * rgb_loss + im.lambda_mask * mask_loss)

    def replicate(self, device: torch.device) -> GaussianImageTo3D:
        if self.cfg.prompt and self.cfg.prompt.strip():
            clone = super().replicate(device)
        else:  # TextTo3D.replicate would re-encode an empty prompt
            clone = copy.copy(self)
            clone._setup_guidance(self.cfg, copy.deepcopy(self.prior), device)
            clone._shape_cache = None
        clone.ref_rgb, clone.ref_mask = self.ref_rgb.to(device), self.ref_mask.to(device)
        return clone  # type: ignore[return-value]
