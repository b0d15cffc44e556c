"""Tokenizer and learned text encoder of the tiny prior's vocabulary.

A prompt means a (shape, colour) pair, so the tokenizer reduces it to two token ids, one per slot,
with a null id for a slot the prompt leaves open (``""`` is fully unconditional). Paraphrases and
synonyms ("a cube that is red", "red box") therefore map to exactly the same tokens. The encoder
embeds each slot, refines it with a small residual MLP, and returns per-slot hidden states (for
cross-attention) and a pooled vector (for the UNet's class embedding).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dreampropeller.guidance.tiny.library import COLOUR_NAMES, SHAPE_NAMES, parse_partial

NULL_SHAPE = len(SHAPE_NAMES)
NULL_COLOUR = len(COLOUR_NAMES)


def tokenize(prompts: Sequence[str]) -> torch.Tensor:
    """Token ids [B, 2] = (shape id, colour id), a null id where the prompt names none."""
    rows = []
    for prompt in prompts:
        shape, colour = parse_partial(prompt)
        rows.append(
            (
                NULL_SHAPE if shape is None else SHAPE_NAMES.index(shape),
                NULL_COLOUR if colour is None else COLOUR_NAMES.index(colour),
            )
        )
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 2)


def drop_tokens(
    tokens: torch.Tensor, drop_both: torch.Tensor, drop_shape: torch.Tensor, drop_colour: torch.Tensor
) -> torch.Tensor:
    """Tokens with slots replaced by their null ids where the boolean masks [B] say so (text dropout)."""
    out = tokens.clone()
    out[:, 0] = torch.where(drop_both | drop_shape, NULL_SHAPE, out[:, 0])
    out[:, 1] = torch.where(drop_both | drop_colour, NULL_COLOUR, out[:, 1])
    return out


class TextEncoder(nn.Module):
    """Token ids [B, 2] -> ``{"hidden_states": [B, 2, dim], "pooled": [B, pooled_dim]}``."""

    def __init__(self, dim: int = 64, pooled_dim: int = 64) -> None:
        super().__init__()
        self.shape_embed = nn.Embedding(NULL_SHAPE + 1, dim)
        self.colour_embed = nn.Embedding(NULL_COLOUR + 1, dim)
        self.slot_embed = nn.Parameter(torch.randn(2, dim) * 0.1)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, dim))
        self.pool = nn.Linear(2 * dim, pooled_dim)

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Conditioning tensors of token ids (see class docstring)."""
        x = torch.stack([self.shape_embed(tokens[:, 0]), self.colour_embed(tokens[:, 1])], dim=1)
        x = x + self.slot_embed
        x = x + self.mlp(self.norm(x))
        return {"hidden_states": x, "pooled": self.pool(x.flatten(1))}
