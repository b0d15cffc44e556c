"""The lit training views of one step, drawn alike by every process that renders with DreamFusion
shading (NeRF, SDF, DMTet, texture): cameras, a point light near each, and each view's shading mode;
for the rasterizing processes (DMTet, texture) the whole step's draws including the SDS noise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.guidance.distillation import ScoreDistillation
from dreampropeller.picard.rng import StepRandom
from dreampropeller.scene.cameras import Cameras
from dreampropeller.scene.shading import choose_shading, mode_code, sample_light_positions


def lit_views(cfg: TextTo3DConfig, rnd: StepRandom, t: int) -> tuple[Cameras, torch.Tensor, list[str]]:
    """``render.batch_size`` cameras, lights [B, 3] and shading modes of step ``t``, each from its own
    stream of ``rnd`` (``camera``, ``light``, ``shading``), so a unit's draws depend on (seed, t) only."""
    b = cfg.render.batch_size
    cams = cfg.camera.sample(b, rnd.generator("camera"))
    lights = sample_light_positions(cams.position, rnd.generator("light"), cfg.shading)
    modes = choose_shading(t, b, rnd.generator("shading"), cfg.shading)
    return cams, lights, modes


def raster_draws(
    cfg: TextTo3DConfig, guidance: ScoreDistillation, seed: int, t: int, background: Sequence[float]
) -> dict[str, Any]:
    """Every random draw of step ``t`` of a process that rasterizes a mesh: cameras, lights, shading
    ``codes`` [B], the ``background`` [B, 3], SDS timesteps ``t`` and ``noise`` (from ``(seed, t)``)."""
    rnd = StepRandom(seed, t)
    b = cfg.render.batch_size
    cams, lights, modes = lit_views(cfg, rnd, t)
    ts, noise = guidance.draw(b, cfg.render.height, cfg.render.width, rnd.generator("sds"), t)
    return {
        "cameras": cams,
        "lights": lights,
        "codes": torch.tensor([mode_code(m) for m in modes]),
        "background": torch.tensor(tuple(background), dtype=torch.float32).expand(b, 3),
        "t": ts,
        "noise": noise,
    }
