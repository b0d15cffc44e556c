"""Prompt processing: view-dependent prompt suffixes and embeddings computed once per run.

DreamFusion / threestudio append "front view", "side view", "back view" or "overhead view" by the
camera's azimuth and elevation (front and back within 45 degrees, overhead above 60 degrees) so a
view-agnostic prior is told which side it is looking at. Priors that read the camera directly
(``uses_camera``) get the plain prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dreampropeller.guidance.prior import DiffusionPrior, TextCondition, index_condition

VIEWS = ("front", "side", "back", "overhead")
EMPTY_PROMPT = "the prompt is empty: give a text such as 'a red cube'"


def check_prompt(prompt: str | None) -> str:
    """The stripped prompt; ValueError (the one message every entry point gives) when it is empty."""
    if not prompt or not prompt.strip():
        raise ValueError(EMPTY_PROMPT)
    return prompt.strip()


@dataclass
class PromptConfig:
    """How prompts are conditioned."""

    negative_prompt: str = ""
    view_dependent: bool | None = None  # None: on unless the prior reads the camera
    front_threshold: float = 45.0
    back_threshold: float = 45.0
    overhead_threshold: float = 60.0


def view_indices(elevation: torch.Tensor, azimuth: torch.Tensor, cfg: PromptConfig) -> torch.Tensor:
    """Index into :data:`VIEWS` per camera (degrees; azimuth 0 is the front)."""
    az = torch.remainder(azimuth + 180.0, 360.0) - 180.0
    idx = torch.ones_like(az, dtype=torch.long)  # side
    idx = torch.where(az.abs() < cfg.front_threshold, torch.zeros_like(idx), idx)
    idx = torch.where(az.abs() > 180.0 - cfg.back_threshold, torch.full_like(idx, 2), idx)
    return torch.where(elevation > cfg.overhead_threshold, torch.full_like(idx, 3), idx)


def view_prompts(prompt: str) -> list[str]:
    """The prompt with each view suffix, in the order of :data:`VIEWS`."""
    return [f"{prompt}, {v} view" for v in VIEWS]


class PromptProcessor:
    """Embeds a prompt (and its view variants and the negative prompt) once, then picks per camera."""

    def __init__(self, prior: DiffusionPrior, prompt: str, cfg: PromptConfig | None = None) -> None:
        self.prompt = check_prompt(prompt)
        self.cfg = cfg or PromptConfig()
        self.view_dependent = (
            (not prior.uses_camera) if self.cfg.view_dependent is None else bool(self.cfg.view_dependent)
        )
        texts = view_prompts(self.prompt) if self.view_dependent else [self.prompt]
        with torch.no_grad():
            self.cond = prior.encode_text(texts)
            self.uncond = prior.encode_text([self.cfg.negative_prompt])

    def condition(
        self, elevation: torch.Tensor, azimuth: torch.Tensor
    ) -> tuple[TextCondition, TextCondition]:
        """(conditional, unconditional) conditioning, one row per camera."""
        n = elevation.shape[0]
        if self.view_dependent:
            idx = view_indices(elevation.cpu(), azimuth.cpu(), self.cfg)
        else:
            idx = torch.zeros(n, dtype=torch.long)
        cond = index_condition(self.cond, idx.to(next(iter(self.cond.values())).device))
        uncond = index_condition(self.uncond, torch.zeros(n, dtype=torch.long, device=idx.device).to(idx))
        return cond, uncond


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


def make_prompts(
    prior: DiffusionPrior, prompt: str | None, cfg: PromptConfig | None = None, allow_empty: bool = False
) -> PromptProcessor | UnconditionalPrompts:
    """The prompt processor of a run; unconditional when the prompt is empty and ``allow_empty`` (an
    image-to-3D run without a text), else an empty prompt is the usual one-line error."""
    if allow_empty and not (prompt and prompt.strip()):
        return UnconditionalPrompts(prior, cfg)
    return PromptProcessor(prior, prompt or "", cfg)
