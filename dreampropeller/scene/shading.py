"""DreamFusion shading: albedo-only, diffuse with a point light, and textureless passes.

``shade`` is pure math over per-sample tensors. The light sampler and the per-camera mode chooser
draw only from the generator they are given (pass the per-step one), and the chooser gets the step
``t`` from the caller, so a Picard unit stays a pure function of ``(state, t)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dreampropeller.scene.hashgrid import SceneError

SHADING_MODES = ("albedo", "diffuse", "textureless")
"""Mode names; their index is the integer code used for per-ray modes."""


@dataclass
class ShadingConfig:
    """Lighting and the DreamFusion shading schedule (threestudio's defaults)."""

    ambient: float = 0.1
    diffuse: float = 0.9
    light_distance_range: tuple[float, float] = (0.8, 1.5)
    light_perturb: float = 1.0  # std of the jitter added to the camera direction before normalizing
    ambient_only_steps: int = 1000  # albedo-only before this step
    albedo_prob: float = 0.2  # after it: albedo with this chance ...
    textureless_prob: float = 0.5  # ... else textureless with this chance, else diffuse

    def __post_init__(self) -> None:
        lo, hi = self.light_distance_range
        if not 0 < lo <= hi:
            raise SceneError(
                f"shading.light_distance_range must satisfy 0 < lo <= hi, got {self.light_distance_range}"
            )
        for name in ("albedo_prob", "textureless_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise SceneError(f"shading.{name} must be in [0, 1], got {v}")


def mode_code(name: str) -> int:
    """Integer code of a shading mode name."""
    if name not in SHADING_MODES:
        raise SceneError(f"unknown shading mode {name!r}; use one of {SHADING_MODES}")
    return SHADING_MODES.index(name)


def needs_normals(codes: torch.Tensor) -> bool:
    """Whether any ray of ``codes`` is lit (diffuse or textureless)."""
    return bool((codes != 0).any())


def shade(
    albedo: torch.Tensor,
    normals: torch.Tensor | None,
    points: torch.Tensor,
    light_positions: torch.Tensor | None,
    codes: torch.Tensor,
    cfg: ShadingConfig,
) -> torch.Tensor:
    """Shaded colour [..., 3] of samples with per-sample mode ``codes`` [...] (broadcastable).

    albedo: ``a``; diffuse: ``a * (ambient + diffuse * max(0, n . l))`` with ``l`` the unit vector to
    the point light; textureless: the same with a white albedo.
    """
    if not needs_normals(codes):
        return albedo
    if normals is None or light_positions is None:
        raise SceneError("lit shading (diffuse / textureless) needs normals and light positions")
    to_light = torch.nn.functional.normalize(light_positions - points, dim=-1)
    lambert = (normals * to_light).sum(-1, keepdim=True).clamp_min(0.0)
    light = cfg.ambient + cfg.diffuse * lambert
    c = codes.unsqueeze(-1)
    base = torch.where(c == 2, torch.ones_like(albedo), albedo)
    return torch.where(c == 0, albedo, base * light)


def sample_light_positions(
    camera_positions: torch.Tensor, generator: torch.Generator, cfg: ShadingConfig
) -> torch.Tensor:
    """Point lights [B, 3] near the camera directions (DreamFusion): jittered direction, random distance."""
    b = camera_positions.shape[0]
    noise = torch.randn(b, 3, generator=generator).to(camera_positions)
    u = torch.rand(b, generator=generator).to(camera_positions)
    direction = torch.nn.functional.normalize(camera_positions + cfg.light_perturb * noise, dim=-1)
    lo, hi = cfg.light_distance_range
    return direction * (lo + (hi - lo) * u).unsqueeze(-1)


def choose_shading(step: int, n: int, generator: torch.Generator, cfg: ShadingConfig) -> list[str]:
    """Shading mode of each of ``n`` cameras at step ``step`` (draws ``n`` uniforms every time)."""
    u = torch.rand(n, generator=generator)
    if step < cfg.ambient_only_steps:
        return ["albedo"] * n
    textureless_until = cfg.albedo_prob + (1.0 - cfg.albedo_prob) * cfg.textureless_prob
    return [
        "albedo" if x < cfg.albedo_prob else "textureless" if x < textureless_until else "diffuse"
        for x in u.tolist()
    ]


def shading_codes(
    shading: str | Sequence | torch.Tensor,
    slots: int,
    cameras: int,
    rays_per_camera: int,
    device: torch.device,
) -> torch.Tensor:
    """Per-ray mode codes [P, B * rays_per_camera] from a name, per-slot names, per-camera names
    ([P][B] nested lists) or an integer tensor [P, R]."""
    r = cameras * rays_per_camera
    if isinstance(shading, torch.Tensor):
        if shading.shape != (slots, r):
            raise SceneError(f"per-ray shading codes must be [P={slots}, R={r}], got {list(shading.shape)}")
        return shading.to(device=device, dtype=torch.long)
    if isinstance(shading, str):
        return torch.full((slots, r), mode_code(shading), dtype=torch.long, device=device)
    if len(shading) != slots:
        raise SceneError(f"shading needs one entry per slot ({slots}), got {len(shading)}")
    rows = []
    for entry in shading:
        if isinstance(entry, str):
            rows.append([mode_code(entry)] * cameras)
        else:
            if len(entry) != cameras:
                raise SceneError(f"per-camera shading needs {cameras} names per slot, got {len(entry)}")
            rows.append([mode_code(e) for e in entry])
    per_camera = torch.tensor(rows, dtype=torch.long, device=device)  # [P, B]
    return per_camera.repeat_interleave(rays_per_camera, dim=1)
