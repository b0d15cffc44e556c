"""The lit training views of one step, drawn alike by every process that renders with DreamFusion
shading (NeRF, DMTet): cameras, a point light near each, and each view's shading mode."""

from __future__ import annotations

import torch

from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.picard.rng import StepRandom
from dreampropeller.scene.cameras import Cameras
from dreampropeller.scene.shading import choose_shading, sample_light_positions


def lit_views(cfg: TextTo3DConfig, rnd: StepRandom, t: int) -> tuple[Cameras, torch.Tensor, list[str]]:
    """``render.batch_size`` cameras, lights [B, 3] and shading modes of step ``t``, each from its own
    stream of ``rnd`` (``camera``, ``light``, ``shading``), so a unit's draws depend on (seed, t) only."""
    b = cfg.render.batch_size
    cams = cfg.camera.sample(b, rnd.generator("camera"))
    lights = sample_light_positions(cams.position, rnd.generator("light"), cfg.shading)
    modes = choose_shading(t, b, rnd.generator("shading"), cfg.shading)
    return cams, lights, modes
