"""The diffusion-prior interface every guidance (SDS, VSD) is written against.

A prior turns rendered images into its model space (pixels or VAE latents), encodes prompts once per
run, and predicts noise for a batch of noisy inputs at integer timesteps. The embedded tiny prior,
Stable Diffusion and DeepFloyd IF all implement it, so SDS / VSD never know which model they drive.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

TextCondition = dict[str, torch.Tensor]
"""Prompt conditioning: named tensors whose first dimension is the batch (e.g. ``hidden_states``)."""


def index_condition(cond: TextCondition, idx: torch.Tensor | slice | list[int]) -> TextCondition:
    """Rows ``idx`` of every tensor of a condition."""
    return {k: v[idx] for k, v in cond.items()}


def cat_conditions(conds: Sequence[TextCondition]) -> TextCondition:
    """Concatenate conditions along the batch dimension."""
    keys = conds[0].keys()
    return {k: torch.cat([c[k] for c in conds], dim=0) for k in keys}


class DiffusionPrior(torch.nn.Module):
    """Base class of diffusion priors used for score distillation.

    Attributes every prior sets: ``image_size`` (render resolution it consumes), ``num_train_timesteps``,
    the buffer ``alphas_cumprod`` ([num_train_timesteps]), ``uses_camera`` (whether ``predict_noise``
    reads the camera), and ``name``.
    """

    name: str = "prior"
    image_size: int = 64
    num_train_timesteps: int = 1000
    uses_camera: bool = False

    def encode_text(self, prompts: Sequence[str]) -> TextCondition:
        """Conditioning for ``prompts`` (``""`` is the unconditional prompt). Called once per run."""
        raise NotImplementedError

    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        """Model-space inputs [B, C, h, w] from renders ``rgb`` [B, 3, H, W] in [0, 1] (differentiable)."""
        raise NotImplementedError

    def decode(self, model_space: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [0, 1] from model-space tensors (for previews)."""
        raise NotImplementedError

    def predict_noise(
        self,
        noisy: torch.Tensor,
        t: torch.Tensor,
        cond: TextCondition,
        camera: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Noise prediction [B, C, h, w] for ``noisy`` at integer timesteps ``t`` [B].

        ``camera`` is [B, 3] = (elevation deg, azimuth deg, distance); priors with ``uses_camera``
        False ignore it.
        """
        raise NotImplementedError

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Forward diffusion ``sqrt(a_t) x0 + sqrt(1 - a_t) noise`` (DDPM)."""
        a = self.alphas_cumprod.to(x0.device, x0.dtype)[t].view(-1, *([1] * (x0.dim() - 1)))
        return a.sqrt() * x0 + (1.0 - a).sqrt() * noise
