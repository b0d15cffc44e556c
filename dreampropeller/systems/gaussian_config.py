"""Config sections of Gaussian runs: the Gaussian set and its densification, the reference image.

Kept apart from :mod:`dreampropeller.systems.gaussians` so that ``TextTo3DConfig`` can hold them
without importing the Gaussian process (which itself imports ``text_to_3d``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dreampropeller.scene.densify import DensifyConfig

BACKGROUNDS = ("random", "white", "black")


def dreamgaussian_densify() -> DensifyConfig:
    """DreamGaussian's text-to-3D schedule (from step 100 every 50), with a count cap that fits a CPU."""
    return DensifyConfig(start=100, interval=50, max_count=50_000)


@dataclass
class GaussianConfig:
    """A 3D Gaussian set trained by SDS (DreamGaussian's defaults where they exist; count sized for CPUs).

    ``optimizer`` ``None`` means DreamGaussian's per-attribute Adam (see
    :func:`dreampropeller.systems.gaussians.dreamgaussian_optimizer`); a mapping replaces it.
    ``background``: per training view white or black with equal odds (``random``, DreamGaussian), or
    fixed. ``memory_limit_gb`` ``None``: the free memory of the device, measured before the run.
    """

    num_points: int = 1000
    radius: float = 0.5
    init_opacity: float = 0.1
    color_spread: float = 1.0 / 255.0
    sh_degree: int = 0
    color_mode: str = "sh"
    backend: str = "auto"
    background: str = "random"
    densify: DensifyConfig = field(default_factory=dreamgaussian_densify)
    optimizer: Any = None
    memory_limit_gb: float | None = None
    export_bound: float = 1.0


@dataclass
class ImageConfig:
    """Image-to-3D: a reference view (RGBA, or RGB on a white background) seen from a fixed camera.

    Losses at the reference camera: ``lambda_rgb * mse(rgb)`` and ``lambda_mask * mse(alpha)``
    (DreamGaussian's 10000 and 1000), both ramped up linearly over the run when ``warmup``.
    """

    path: str | None = None
    elevation: float = 0.0
    azimuth: float = 0.0
    distance: float = 1.75
    fovy: float = 50.0
    lambda_rgb: float = 10000.0
    lambda_mask: float = 1000.0
    warmup: bool = True
