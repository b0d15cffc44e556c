"""Random-weight Stable Diffusion / DeepFloyd IF components built from configs (nothing downloaded).

``sd_components(arch)`` gives the five parts of a Stable Diffusion pipeline: ``"sd21-base"`` has the
exact UNet and VAE architecture of Stable Diffusion 2.1-base (the text encoder is a 1-layer CLIP with
the right width, since it runs once per run); ``"small"`` and ``"tiny"`` are scaled-down versions for
CPUs and tests. ``if_components("tiny")`` is an IF stage-I-shaped pixel model with a T5 encoder.
The tokenizers use a small character vocabulary written here, so prompts of plain English work.
``save_components`` writes them as a diffusers directory that the priors' ``load`` reads.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import torch

CHARS = list(string.ascii_lowercase) + list(string.digits) + [",", ".", "'", "-", "!", "?"]

SD21_BASE_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "attention_head_dim": (5, 10, 20, 20),
    "cross_attention_dim": 1024,
    "use_linear_projection": True,
    "norm_num_groups": 32,
}
SD21_BASE_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
SD_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}
ARCHS = ("tiny", "small", "sd21-base")


def _scaled_unet(channels: tuple[int, ...], sample_size: int, cross: int, groups: int) -> dict[str, Any]:
    n = len(channels)
    return {
        **SD21_BASE_UNET,
        "sample_size": sample_size,
        "down_block_types": ("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        "block_out_channels": channels,
        "layers_per_block": 1,
        "attention_head_dim": 2,
        "cross_attention_dim": cross,
        "norm_num_groups": groups,
    }


def _scaled_vae(channels: tuple[int, ...], groups: int) -> dict[str, Any]:
    n = len(channels)
    return {
        **SD21_BASE_VAE,
        "down_block_types": ("DownEncoderBlock2D",) * n,
        "up_block_types": ("UpDecoderBlock2D",) * n,
        "block_out_channels": channels,
        "layers_per_block": 1,
        "norm_num_groups": groups,
    }


def clip_tokenizer(max_length: int = 77) -> Any:
    """A CLIP BPE tokenizer over single characters (no merges)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in CHARS:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def t5_tokenizer(max_length: int = 77) -> Any:
    """A T5 unigram tokenizer over single characters."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(c, -2.0) for c in CHARS] + [("\u2581" + c, -1.5) for c in CHARS]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=max_length)


def sd_components(arch: str = "tiny", seed: int = 0) -> dict[str, Any]:
    """Random-weight ``unet, vae, text_encoder, tokenizer, scheduler`` of a Stable Diffusion of ``arch``."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}: use one of {', '.join(ARCHS)}")
    torch.manual_seed(seed)
    if arch == "sd21-base":
        unet_cfg, vae_cfg, width, max_len = SD21_BASE_UNET, SD21_BASE_VAE, 1024, 77
    elif arch == "small":
        unet_cfg = _scaled_unet((32, 64, 64), 16, 64, 8)
        vae_cfg, width, max_len = _scaled_vae((16, 32, 32), 8), 64, 16
    else:
        unet_cfg = _scaled_unet((8, 16), 8, 16, 4)
        vae_cfg, width, max_len = _scaled_vae((8, 8), 4), 16, 12
    text_cfg = CLIPTextConfig(
        vocab_size=2 + 2 * len(CHARS),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=max_len,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return {
        "unet": UNet2DConditionModel(**unet_cfg),
        "vae": AutoencoderKL(**vae_cfg),
        "text_encoder": CLIPTextModel(text_cfg),
        "tokenizer": clip_tokenizer(max_len),
        "scheduler": DDIMScheduler(**SD_SCHEDULER),
    }


def if_components(arch: str = "tiny", seed: int = 0) -> dict[str, Any]:
    """Random-weight ``unet, text_encoder, tokenizer, scheduler`` shaped like IF stage I (pixels, T5)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel

    if arch != "tiny":
        raise ValueError(f"only the 'tiny' IF architecture is built here, got {arch!r}")
    torch.manual_seed(seed)
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=4 + 2 * len(CHARS),
            d_model=16,
            d_kv=8,
            d_ff=32,
            num_layers=1,
            num_heads=2,
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=3,
        out_channels=6,  # learned variance, like IF
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        block_out_channels=(8, 16),
        layers_per_block=1,
        attention_head_dim=8,
        cross_attention_dim=16,
        encoder_hid_dim=16,
        addition_embed_type="text",
        addition_embed_type_num_heads=2,
        resnet_time_scale_shift="scale_shift",
        norm_num_groups=4,
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", variance_type="learned_range"
    )
    return {"unet": unet, "text_encoder": t5, "tokenizer": t5_tokenizer(12), "scheduler": scheduler}


def save_components(components: dict[str, Any], directory: str | Path) -> Path:
    """Write components as a diffusers directory (``<name>/`` per component)."""
    directory = Path(directory)
    for name, part in components.items():
        target = directory / name
        if hasattr(part, "save_config") and not hasattr(part, "save_pretrained"):
            part.save_config(target)
        else:
            part.save_pretrained(target)
    return directory
