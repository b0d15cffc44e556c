"""Score distillation as one object: a frozen prior, a run's prompts and the SDS settings.

Every process holds one (:class:`ScoreDistillation` for SDS, or
:class:`~dreampropeller.guidance.variational.VariationalScoreDistillation` for VSD) and asks it for
the draws of a step and the gradient with respect to the rendered latents; the representation never
needs to know which loss it is trained by. A guidance object may keep part of the Picard state (the
synchronized VSD LoRA): it names those keys (``param_keys``, :meth:`owns`), initializes them and
updates them, and its :meth:`gradient` returns their drifts next to the latent gradient. State a
guidance keeps OUTSIDE the Picard state (the worker / accepted VSD LoRA) is read and restored through
:meth:`worker_state` / :meth:`load_worker_state` (checkpoints), and :meth:`accept` hears which steps
the solver accepted.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

from dreampropeller.guidance.prior import DiffusionPrior, cat_conditions
from dreampropeller.guidance.prompts import PromptConfig, make_prompts
from dreampropeller.guidance.sds import SDSConfig, draw_sds, row_steps, sds_gradient
from dreampropeller.picard.process import Drift, State


def camera_rows(draws: Sequence[dict[str, Any]], device: torch.device) -> list[torch.Tensor]:
    """Per slot ``[B, 3]`` (elevation, azimuth, distance) of its cameras, on ``device``."""
    return [
        torch.stack([d["cameras"].elevation, d["cameras"].azimuth, d["cameras"].distance], -1).to(device)
        for d in draws
    ]


class ScoreDistillation:
    """SDS (DreamFusion): prior + prompts + :class:`SDSConfig`, on one device.

    ``allow_empty`` lets an empty prompt mean unconditional guidance (image-to-3D without a text).
    """

    param_keys: tuple[str, ...] = ()

    def __init__(
        self,
        prior: DiffusionPrior,
        prompt: str | None,
        sds: SDSConfig,
        prompt_cfg: PromptConfig | None = None,
        device: torch.device | str = "cpu",
        allow_empty: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.prior = prior.to(self.device).eval()
        for p in self.prior.parameters():
            p.requires_grad_(False)
        self.prompt, self.prompt_cfg, self.allow_empty = prompt, prompt_cfg, allow_empty
        self.prompts = make_prompts(self.prior, prompt, prompt_cfg, allow_empty)
        self.sds = sds
        self._shapes: dict[tuple[int, int], tuple[int, ...]] = {}

    # -- draws -------------------------------------------------------------------------------------
    def model_shape(self, height: int, width: int) -> tuple[int, ...]:
        """The shape of one encoded render of ``height`` x ``width`` (latent or pixel space), cached."""
        shape = self._shapes.get((height, width))
        if shape is None:
            with torch.no_grad():
                probe = torch.zeros(1, 3, height, width, device=self.device)
                shape = tuple(self.prior.encode_images(probe).shape[1:])
            self._shapes[(height, width)] = shape
        return shape

    def draw(
        self, n: int, height: int, width: int, generator: torch.Generator, step: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Diffusion timesteps [n] and noise [n, ...] of step ``step`` from its ``sds`` generator."""
        return draw_sds(self.sds, self.prior, n, self.model_shape(height, width), generator, step)

    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        """Renders [N, 3, H, W] in [0, 1] -> the prior's latents, with gradient."""
        return self.prior.encode_images(rgb)

    # -- the gradient ------------------------------------------------------------------------------
    def conditions(self, draws: Sequence[dict[str, Any]]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """Per slot the (conditional, unconditional) text conditions of its cameras."""
        pairs = [self.prompts.condition(d["cameras"].elevation, d["cameras"].azimuth) for d in draws]
        return tuple(c for c, _ in pairs), tuple(u for _, u in pairs)

    def gradient(
        self,
        latents: torch.Tensor,
        draws: Sequence[dict[str, Any]],
        ts: Sequence[int],
        slots: Sequence[State] = (),
    ) -> tuple[torch.Tensor, list[Drift]]:
        """``(d loss / d latents [P*B, ...], drifts of the guidance's own state per slot)``."""
        dev = self.device
        cond, uncond = self.conditions(draws)
        camera = torch.cat(camera_rows(draws, dev))
        t_all = torch.cat([d["t"] for d in draws]).to(dev)
        noise = torch.cat([d["noise"] for d in draws]).to(dev, latents.dtype)
        grad = sds_gradient(
            self.prior,
            latents,
            t_all,
            noise,
            cat_conditions(cond),
            cat_conditions(uncond),
            camera if self.prior.uses_camera else None,
            self.sds,
            step=row_steps(ts, latents.shape[0]),
        )
        return grad, []

    # -- the guidance's own part of the state (none for SDS) ---------------------------------------
    def owns(self, key: str) -> bool:
        """True for state entries this guidance keeps (and updates)."""
        return False

    def initial_state(self) -> State:
        """The guidance's own state entries at step 0."""
        return {}

    def update(self, x: State, drift: Drift, t: int) -> State:
        """Step the guidance's own entries ``x`` with their ``drift``."""
        return {}

    def worker_state(self) -> State:
        """State this guidance keeps outside the Picard state (none for SDS), copied for a checkpoint."""
        return {}

    def load_worker_state(self, state: State) -> None:
        """Restore :meth:`worker_state` from a checkpoint."""

    def accept(self, first: int, count: int) -> None:
        """The solver accepted steps ``[first, first + count)`` (their states are exact)."""

    def replicate(self, device: torch.device | str) -> ScoreDistillation:
        """A copy on ``device`` with its own prior replica and prompt embeddings."""
        clone = copy.copy(self)
        clone.device = torch.device(device)
        clone.prior = copy.deepcopy(self.prior).to(device)
        clone.prompts = make_prompts(clone.prior, self.prompt, self.prompt_cfg, self.allow_empty)
        clone._shapes = {}
        return clone
