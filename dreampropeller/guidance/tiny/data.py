"""Training images of the library, made on the training device.

Geometry is traced once into a pool of G-buffers (random cameras from the text-to-3D camera
distribution, every shape equally often); each batch then draws pool entries and shades them with a
random allowed colour, a jittered point light near the camera and a random ambient level. Shading
is a handful of per-pixel operations, so batches cost almost nothing next to a UNet step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dreampropeller.guidance.tiny.library import COLOUR_NAMES, HELD_OUT, SHAPE_NAMES, colour_table
from dreampropeller.guidance.tiny.render import GBuffer, shade, trace
from dreampropeller.scene.cameras import Cameras, CameraSampler

TRAIN_CAMERAS = CameraSampler(
    elevation_range=(-10.0, 60.0),
    azimuth_range=(-180.0, 180.0),
    distance_range=(1.5, 2.0),
    fovy_range=(40.0, 60.0),
)
"""The camera distribution of the text-to-3D default, used for every training image."""


@dataclass
class GeometryPool:
    """Traced geometry of N views: G-buffer channels [N, 7, H, W] = (alpha, normal, position)."""

    gbuffer: torch.Tensor
    shape_ids: torch.Tensor  # [N]
    camera: torch.Tensor  # [N, 3] = (elevation deg, azimuth deg, distance)
    eye: torch.Tensor  # [N, 3] camera positions

    def __len__(self) -> int:
        return self.shape_ids.shape[0]


def allowed_combos(include_held_out: bool, device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean [n_shapes, n_colours]: which combinations training may show."""
    mask = torch.ones(len(SHAPE_NAMES), len(COLOUR_NAMES), dtype=torch.bool)
    if not include_held_out:
        for shape, colour in HELD_OUT:
            mask[SHAPE_NAMES.index(shape), COLOUR_NAMES.index(colour)] = False
    return mask.to(device)


def build_pool(
    views_per_shape: int,
    seed: int,
    device: torch.device | str = "cpu",
    image_size: int = 32,
    chunk: int | None = None,
    dtype: torch.dtype = torch.float32,
    sampler: CameraSampler = TRAIN_CAMERAS,
) -> GeometryPool:
    """Trace ``views_per_shape`` random views of every shape on ``device`` (deterministic in ``seed``).

    ``chunk`` views are traced at a time (default: 8192 on CUDA, 256 on the CPU, which favours caches).
    """
    if views_per_shape < 1:
        raise ValueError(f"views_per_shape must be at least 1, got {views_per_shape}")
    device = torch.device(device)
    chunk = chunk or (8192 if device.type == "cuda" else 256)
    n = views_per_shape * len(SHAPE_NAMES)
    shape_ids = torch.arange(n) % len(SHAPE_NAMES)
    gen = torch.Generator().manual_seed(int(seed))
    parts, cams, eyes = [], [], []
    for start in range(0, n, chunk):
        ids = shape_ids[start : start + chunk]
        cameras = sampler.sample(len(ids), gen).to(device)
        g = trace(ids.to(device), cameras, image_size, image_size)
        parts.append(torch.cat([g.alpha, g.normal, g.position], 1).to(dtype))
        cams.append(torch.stack([cameras.elevation, cameras.azimuth, cameras.distance], -1))
        eyes.append(cameras.position)
    return GeometryPool(torch.cat(parts), shape_ids.to(device), torch.cat(cams), torch.cat(eyes))


@dataclass
class Batch:
    """Shaded training images with their labels."""

    rgb: torch.Tensor  # [B, 3, H, W] in [0, 1], white background
    shape_ids: torch.Tensor  # [B]
    colour_ids: torch.Tensor  # [B]
    camera: torch.Tensor  # [B, 3]


def draw_batch(
    pool: GeometryPool,
    batch: int,
    generator: torch.Generator,
    allowed: torch.Tensor,
    ambient_range: tuple[float, float] = (0.3, 0.5),
    light_jitter: float = 0.3,
) -> Batch:
    """``batch`` shaded images: random pool views, allowed colours, lights and ambient from ``generator``.

    ``generator`` must live on the pool's device.
    """
    device = pool.gbuffer.device
    idx = torch.randint(0, len(pool), (batch,), generator=generator, device=device)
    shapes = pool.shape_ids[idx]
    colours = torch.multinomial(allowed[shapes].float(), 1, generator=generator).squeeze(1)
    g = pool.gbuffer[idx].float()
    eye = pool.eye[idx]
    dist = eye.norm(dim=-1, keepdim=True)
    noise = torch.randn(batch, 3, generator=generator, device=device)
    light = torch.nn.functional.normalize(eye / dist + light_jitter * noise, dim=-1) * dist
    lo, hi = ambient_range
    ambient = lo + (hi - lo) * torch.rand(batch, generator=generator, device=device)
    gb = GBuffer(alpha=g[:, 0:1], normal=g[:, 1:4], position=g[:, 4:7], depth=g[:, 0:1])
    rgb = shade(gb, colour_table(device)[colours], light, ambient)
    return Batch(rgb, shapes, colours, pool.camera[idx])


def camera_tuple(cameras: Cameras) -> torch.Tensor:
    """[B, 3] = (elevation, azimuth, distance) of cameras, the prior's camera conditioning."""
    return torch.stack([cameras.elevation, cameras.azimuth, cameras.distance], -1)
