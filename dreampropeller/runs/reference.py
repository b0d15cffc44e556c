"""How well an image-to-3D asset reproduces its reference view: PSNR and mask IoU at the reference camera.

DreamGaussian users judge an image-to-3D run first by its front view. The asset is rendered from the
run's reference camera (``image.elevation / azimuth / distance / fovy``) at ``resolution`` and compared
with the reference image loaded at the same size: PSNR of the rgb composited on white, and the IoU of
the alpha > 0.5 and mask > 0.5 regions.
"""

from __future__ import annotations

import math

import torch

from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.scene.cameras import cameras_from_spherical
from dreampropeller.scene.views import RenderFn
from dreampropeller.systems.image_to_3d import load_reference_image

#: Side in pixels of the square reference comparison.
REFERENCE_RESOLUTION = 128


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [0, 1]; infinite when they are equal."""
    mse = float((a.double() - b.double()).square().mean())
    return math.inf if mse == 0.0 else -10.0 * math.log10(mse)


def mask_iou(a: torch.Tensor, b: torch.Tensor, threshold: float = 0.5) -> float:
    """IoU of the regions ``a > threshold`` and ``b > threshold`` (1 when both are empty)."""
    x, y = a > threshold, b > threshold
    union = int((x | y).sum())
    return 1.0 if union == 0 else int((x & y).sum()) / union


def reference_scores(
    render_fn: RenderFn, cfg: TextTo3DConfig, resolution: int = REFERENCE_RESOLUTION
) -> dict[str, float | None]:
    """``{"reference_psnr", "reference_mask_iou"}`` of an asset's ``render_fn`` at the run's reference
    camera (``render_fn(cameras) -> (rgb [1, H, W, 3] on white, alpha [1, H, W, 1])``). PSNR is ``None``
    when the render equals the image exactly (JSON has no infinity)."""
    im = cfg.image
    if not im.path:
        raise ValueError("reference_scores needs a run with a reference image (image.path)")
    rgb_ref, mask_ref = load_reference_image(im.path, resolution, resolution)
    camera = cameras_from_spherical(im.elevation, im.azimuth, im.distance, im.fovy, batch=1)
    with torch.no_grad():
        rgb, alpha = render_fn(camera)
    value = psnr(rgb[0].clamp(0, 1).cpu(), rgb_ref)
    return {
        "reference_psnr": None if math.isinf(value) else round(value, 3),
        "reference_mask_iou": round(mask_iou(alpha[0].cpu(), mask_ref), 4),
    }
