"""DeepFloyd IF stage I as a :class:`DiffusionPrior`: pixel space at the UNet's size (64x64), T5 text.

Loaded component by component from a diffusers IF-I directory (or a cached hub id; nothing is
downloaded): ``unet`` (UNet2DConditionModel; its learned-variance half of the output is dropped),
``text_encoder`` (T5EncoderModel), ``tokenizer`` and ``scheduler``. Renders are resized to the model
resolution and mapped to [-1, 1] with gradient. fp16 on CUDA by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dreampropeller.guidance.prior import TextCondition
from dreampropeller.guidance.stable_diffusion import (
    UNetPrior,
    resize,
)

MAX_TOKENS = 77  # IF's prompt length


class DeepFloydPrior(UNetPrior):
    """DeepFloyd IF stage I (see the module docstring)."""

    name = "if"
    what = "DeepFloyd IF"
    uses_camera = False

    def __init__(self, unet: Any, text_encoder: Any, tokenizer: Any, scheduler: Any) -> None:
        super().__init__(unet, scheduler)
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.image_size = int(unet.config.sample_size)

    @classmethod
    def load(
        cls,
        path: str | Path = "DeepFloyd/IF-I-XL-v1.0",
        device: torch.device | str = "cpu",
        dtype: torch.dtype | str | None = None,
        attention: str = "sdpa",
        channels_last: bool = False,
    ) -> DeepFloydPrior:
        """Load from a diffusers IF-I directory or cached hub id (one clear line when a part is missing)."""
        return cls.load_components(path, device, dtype, attention, channels_last)

    @classmethod
    def component_loaders(cls) -> dict[str, tuple[Any, bool]]:
        from diffusers import DDPMScheduler, UNet2DConditionModel
        from transformers import AutoTokenizer, T5EncoderModel

        return {
            "unet": (UNet2DConditionModel, True),
            "text_encoder": (T5EncoderModel, True),
            "tokenizer": (AutoTokenizer, False),
            "scheduler": (DDPMScheduler, False),
        }

    def encode_text(self, prompts: Sequence[str]) -> TextCondition:
        """T5 hidden states [B, L, D] (padding masked inside the encoder, as the IF pipeline does)."""
        length = min(MAX_TOKENS, int(getattr(self.tokenizer, "model_max_length", MAX_TOKENS)))
        tok = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=length,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        )
        device = self.alphas_cumprod.device
        with torch.no_grad():
            hidden = self.text_encoder(
                tok.input_ids.to(device), attention_mask=tok.attention_mask.to(device)
            )[0]
        return {"hidden_states": hidden}

    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        """[-1, 1] pixels at the model resolution (differentiable)."""
        return resize(rgb, self.image_size) * 2.0 - 1.0

    def decode(self, model_space: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] from model-space pixels."""
        return ((model_space.float() + 1.0) * 0.5).clamp(0.0, 1.0)
