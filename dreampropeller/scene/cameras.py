"""Cameras: spherical placement, random sampling from a per-step generator, turntables, rays.

Conventions (threestudio's): the world is z-up; a camera at elevation ``el`` and azimuth ``az``
(degrees) and distance ``d`` sits at ``d * (cos el cos az, cos el sin az, sin el)`` looking at the
origin; azimuth 0 is the front. Camera frames are OpenGL-style: the camera looks along its -z axis,
+x is right, +y is up. Image rows run top to bottom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class Cameras:
    """A batch of pinhole cameras."""

    c2w: torch.Tensor  # [B, 4, 4] camera-to-world
    fovy: torch.Tensor  # [B] vertical field of view, degrees
    elevation: torch.Tensor  # [B] degrees (nominal, before perturbation)
    azimuth: torch.Tensor  # [B] degrees in [-180, 180)
    distance: torch.Tensor  # [B]

    def __len__(self) -> int:
        return self.c2w.shape[0]

    @property
    def position(self) -> torch.Tensor:
        """Camera centres in world space, [B, 3]."""
        return self.c2w[:, :3, 3]

    def to(self, device: torch.device | str) -> Cameras:
        """The same cameras on ``device``."""
        return Cameras(
            *(getattr(self, f).to(device) for f in ("c2w", "fovy", "elevation", "azimuth", "distance"))
        )

    def index(self, idx: slice | torch.Tensor | list[int]) -> Cameras:
        """A sub-batch."""
        return Cameras(*(getattr(self, f)[idx] for f in ("c2w", "fovy", "elevation", "azimuth", "distance")))

    def rays(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Ray origins and unit directions, each [B, H, W, 3]."""
        return camera_rays(self.c2w, self.fovy, height, width)


def look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Camera-to-world matrices [B, 4, 4] for cameras at ``eye`` looking at ``target``."""
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    right = torch.nn.functional.normalize(torch.cross(forward, up.expand_as(forward), dim=-1), dim=-1)
    true_up = torch.cross(right, forward, dim=-1)
    c2w = torch.zeros(eye.shape[0], 4, 4, dtype=eye.dtype, device=eye.device)
    c2w[:, :3, 0] = right
    c2w[:, :3, 1] = true_up
    c2w[:, :3, 2] = -forward
    c2w[:, :3, 3] = eye
    c2w[:, 3, 3] = 1.0
    return c2w


def spherical_to_cartesian(
    elevation: torch.Tensor, azimuth: torch.Tensor, distance: torch.Tensor
) -> torch.Tensor:
    """Positions [B, 3] from elevation / azimuth in degrees and distance."""
    el = torch.deg2rad(elevation)
    az = torch.deg2rad(azimuth)
    return torch.stack(
        [
            distance * torch.cos(el) * torch.cos(az),
            distance * torch.cos(el) * torch.sin(az),
            distance * torch.sin(el),
        ],
        dim=-1,
    )


def cameras_from_spherical(
    elevation: torch.Tensor | float,
    azimuth: torch.Tensor | float,
    distance: torch.Tensor | float,
    fovy: torch.Tensor | float,
    *,
    batch: int | None = None,
) -> Cameras:
    """Cameras on a sphere looking at the origin (degrees), broadcasting scalars to ``batch``."""
    tensors = [torch.as_tensor(v, dtype=torch.float32) for v in (elevation, azimuth, distance, fovy)]
    n = batch or max(v.numel() for v in tensors)
    el, az, d, fy = (v.reshape(-1).expand(n).clone() for v in tensors)
    eye = spherical_to_cartesian(el, az, d)
    up = torch.tensor([0.0, 0.0, 1.0])
    c2w = look_at(eye, torch.zeros_like(eye), up)
    return Cameras(c2w, fy, el, wrap_azimuth(az), d)


def wrap_azimuth(azimuth: torch.Tensor) -> torch.Tensor:
    """Azimuths wrapped to [-180, 180)."""
    return torch.remainder(azimuth + 180.0, 360.0) - 180.0


@dataclass
class CameraSampler:
    """Random training cameras (threestudio's random-camera conventions), drawn from a given generator."""

    elevation_range: tuple[float, float] = (-10.0, 45.0)
    azimuth_range: tuple[float, float] = (-180.0, 180.0)
    distance_range: tuple[float, float] = (1.5, 2.0)
    fovy_range: tuple[float, float] = (40.0, 70.0)
    camera_perturb: float = 0.0
    center_perturb: float = 0.0
    up_perturb: float = 0.0
    stratified_azimuth: bool = True
    extra: dict = field(default_factory=dict)

    def sample(self, n: int, generator: torch.Generator) -> Cameras:
        """``n`` cameras; every draw comes from ``generator`` (pass a per-step generator)."""
        u = torch.rand(n, 7, generator=generator)
        lo, hi = self.elevation_range
        # uniform on the sphere between the elevation bounds (not uniform in angle)
        s_lo, s_hi = math.sin(math.radians(lo)), math.sin(math.radians(hi))
        elevation = torch.rad2deg(torch.asin(s_lo + (s_hi - s_lo) * u[:, 0]))
        a_lo, a_hi = self.azimuth_range
        if self.stratified_azimuth:
            azimuth = a_lo + (torch.arange(n, dtype=torch.float32) + u[:, 1]) / n * (a_hi - a_lo)
        else:
            azimuth = a_lo + u[:, 1] * (a_hi - a_lo)
        distance = self.distance_range[0] + u[:, 2] * (self.distance_range[1] - self.distance_range[0])
        fovy = self.fovy_range[0] + u[:, 3] * (self.fovy_range[1] - self.fovy_range[0])
        eye = spherical_to_cartesian(elevation, azimuth, distance)
        center = torch.zeros_like(eye)
        up = torch.tensor([0.0, 0.0, 1.0]).expand(n, 3)
        if self.camera_perturb or self.center_perturb or self.up_perturb:
            noise = torch.randn(n, 9, generator=generator)
            eye = eye + self.camera_perturb * noise[:, 0:3]
            center = center + self.center_perturb * noise[:, 3:6]
            up = up + self.up_perturb * noise[:, 6:9]
        c2w = look_at(eye, center, up)
        return Cameras(c2w, fovy, elevation, wrap_azimuth(azimuth), distance)


def turntable(
    n: int, elevation: float = 15.0, distance: float = 2.0, fovy: float = 50.0, start_azimuth: float = 0.0
) -> Cameras:
    """``n`` cameras evenly around the object at a fixed elevation (for videos and evaluation)."""
    azimuth = start_azimuth + torch.arange(n, dtype=torch.float32) * (360.0 / n)
    return cameras_from_spherical(elevation, azimuth, distance, fovy, batch=n)


def camera_rays(
    c2w: torch.Tensor, fovy: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray origins and unit directions [B, H, W, 3] of pinhole cameras (pixel centres)."""
    b = c2w.shape[0]
    device, dtype = c2w.device, c2w.dtype
    focal = 0.5 * height / torch.tan(0.5 * torch.deg2rad(fovy.to(device=device, dtype=dtype)))  # [B]
    j, i = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype) + 0.5,
        torch.arange(width, device=device, dtype=dtype) + 0.5,
        indexing="ij",
    )
    x = (i - 0.5 * width)[None] / focal[:, None, None]
    y = -(j - 0.5 * height)[None] / focal[:, None, None]
    dirs_cam = torch.stack([x, y, -torch.ones_like(x)], dim=-1)  # [B, H, W, 3]
    dirs = torch.einsum("bij,bhwj->bhwi", c2w[:, :3, :3], dirs_cam)
    dirs = torch.nn.functional.normalize(dirs, dim=-1)
    origins = c2w[:, None, None, :3, 3].expand(b, height, width, 3)
    return origins, dirs
