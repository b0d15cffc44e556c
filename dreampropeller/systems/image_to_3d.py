"""Image-to-3D (DreamGaussian's image mode): the reference view a Gaussian process is anchored to.

Every unit renders, per slot, the SDS views and the reference camera in one rasterizer call; the
reference render is pulled towards the image (``lambda_rgb * mse(rgb) + lambda_mask * mse(alpha)``,
ramped up over the run) and the other views get score distillation from the prior. Text priors use
the prompt when one is given, else their unconditional prediction (the guidance object decides); an
image-conditioned prior (Zero123, later) only needs a different guidance object.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dreampropeller.config.schema import ImageConfig, TextTo3DConfig
from dreampropeller.scene.cameras import Cameras, cameras_from_spherical

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


def _cat_cameras(a: Cameras, b: Cameras) -> Cameras:
    fields = ("c2w", "fovy", "elevation", "azimuth", "distance")
    return Cameras(*(torch.cat([getattr(a, f), getattr(b, f).to(getattr(a, f))]) for f in fields))


class ReferenceView:
    """A reference image at a fixed camera and its losses (DreamGaussian's image mode).

    A Gaussian process holding one renders the reference camera after its distillation views and adds
    ``lambda_rgb * mse(rgb) + lambda_mask * mse(alpha)`` there, ramped up over the run (``warmup``).
    """

    def __init__(
        self, rgb: torch.Tensor, mask: torch.Tensor, cfg: ImageConfig, steps: int, device: torch.device | str
    ) -> None:
        self.cfg, self.steps = cfg, int(steps)
        self.rgb, self.mask = rgb.to(device), mask.to(device)
        self.camera = cameras_from_spherical(cfg.elevation, cfg.azimuth, cfg.distance, cfg.fovy, batch=1)

    @classmethod
    def from_config(
        cls,
        cfg: TextTo3DConfig,
        device: torch.device | str = "cpu",
        image: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> ReferenceView:
        """The run's reference view: ``image`` (rgb, mask) or the file ``cfg.image.path`` at render size."""
        if image is None and not cfg.image.path:
            raise ImageError("image-to-3D needs a reference image: pass --image PATH (image.path)")
        h, w = cfg.render.height, cfg.render.width
        rgb, mask = image if image is not None else load_reference_image(cfg.image.path, h, w)
        if tuple(rgb.shape) != (h, w, 3):
            raise ImageError(
                f"reference rgb has shape {list(rgb.shape)}, expected [{h}, {w}, 3] (the render size)"
            )
        return cls(rgb, mask, cfg.image, cfg.steps, device)

    def append_to(self, cameras: Cameras, background: torch.Tensor) -> tuple[Cameras, torch.Tensor]:
        """The distillation views with the reference camera (on white) appended."""
        return _cat_cameras(cameras, self.camera), torch.cat([background, torch.ones(1, 3)])

    def weight(self, t: int) -> float:
        """DreamGaussian's warm-up: the reference losses ramp linearly to full weight at the last step."""
        return min(1.0, (t + 1) / max(self.steps, 1)) if self.cfg.warmup else 1.0

    def loss(self, out: dict[str, Any], index: int, ts: Sequence[int]) -> torch.Tensor:
        """Per-slot reference losses [P] from renders ``out`` whose view ``index`` is the reference."""
        rgb, alpha = out["rgb"][:, index], out["alpha"][:, index]  # [P, H, W, 3], [P, H, W, 1]
        im = self.cfg
        rgb_loss = (rgb - self.rgb).square().flatten(1).mean(1)
        mask_loss = (alpha - self.mask).square().flatten(1).mean(1)
        ramp = torch.tensor([self.weight(t) for t in ts], device=rgb.device)
        return ramp * (im.lambda_rgb * rgb_loss + im.lambda_mask * mask_loss)

    def to(self, device: torch.device | str) -> ReferenceView:
        """A copy with its images on ``device``."""
        clone = copy.copy(self)
        clone.rgb, clone.mask = self.rgb.to(device), self.mask.to(device)
        return clone
