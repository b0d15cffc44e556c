"""Stable Diffusion 1.x / 2.x as a :class:`DiffusionPrior` (latent space, CLIP text encoder).

Loaded component by component from a diffusers directory (or a hub id already in the local Hugging Face
cache): ``unet`` (UNet2DConditionModel), ``vae`` (AutoencoderKL), ``text_encoder`` (CLIPTextModel),
``tokenizer`` and ``scheduler`` (its betas give ``alphas_cumprod``; ``v_prediction`` models are converted
to noise predictions). Renders are resized to the model resolution and VAE-encoded WITH gradient (the
posterior mean, so the encoding is deterministic). On CUDA the weights are fp16 by default.

Nothing is downloaded: ``local_files_only`` is on unless ``DREAMPROPELLER_ALLOW_DOWNLOAD=1`` (and
``HF_HUB_OFFLINE=1`` always wins).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dreampropeller.guidance.prior import DiffusionPrior, TextCondition

ATTENTION = ("sdpa", "slicing", "default")


class PriorDirectoryError(FileNotFoundError):
    """A prior directory that is missing or lacks a component (the message names it)."""


def local_files_only() -> bool:
    """True unless downloads were explicitly allowed (``DREAMPROPELLER_ALLOW_DOWNLOAD=1``)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return True
    return os.environ.get("DREAMPROPELLER_ALLOW_DOWNLOAD", "") != "1"


def is_hub_id(path: str) -> bool:
    """``org/name`` that is not a local path (hub ids are resolved from the local cache only)."""
    return re.fullmatch(r"[\w.-]+/[\w.-]+", path) is not None and not Path(path).exists()


def check_components(path: str, components: Sequence[str], what: str) -> None:
    """Raise :class:`PriorDirectoryError` naming the first missing component of a local directory.

    Hub ids (``org/name``) that are not local directories are left to the loader (local cache only).
    """
    if is_hub_id(path):
        return
    p = Path(path).expanduser()
    if not p.exists():
        raise PriorDirectoryError(f"{what} directory {path!r} does not exist")
    if not p.is_dir():
        raise PriorDirectoryError(f"{path!r} is not a directory: give a saved diffusers {what} directory")
    for name in components:
        sub = p / name
        if not sub.is_dir():
            raise PriorDirectoryError(
                f"{what} directory {path!r} has no '{name}' component (no {name}/ folder)"
            )
        if name == "tokenizer":
            if not any((sub / f).is_file() for f in ("tokenizer.json", "vocab.json", "spiece.model")):
                raise PriorDirectoryError(
                    f"{what} directory {path!r}: tokenizer/ has no tokenizer.json, vocab.json or spiece.model"
                )
        elif name == "scheduler":
            if not (sub / "scheduler_config.json").is_file():
                raise PriorDirectoryError(
                    f"{what} directory {path!r}: scheduler/ has no scheduler_config.json"
                )
        else:
            if not (sub / "config.json").is_file():
                raise PriorDirectoryError(f"{what} directory {path!r}: {name}/ has no config.json")
            if not any(f.suffix in (".safetensors", ".bin") for f in sub.iterdir()):
                raise PriorDirectoryError(f"{what} directory {path!r}: {name}/ has no weights (.safetensors)")


def load_component(loader: Any, path: str, subfolder: str, what: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(path, subfolder=...)`` offline, failing with one line that names the part."""
    try:
        return loader.from_pretrained(
            path, subfolder=subfolder, local_files_only=local_files_only(), **kwargs
        )
    except (OSError, ValueError, KeyError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        if is_hub_id(path):
            raise PriorDirectoryError(
                f"{what} {path!r} is neither a local directory nor in the local Hugging Face cache "
                "(downloads are off): give a saved diffusers directory"
            ) from None
        raise PriorDirectoryError(
            f"{what} component '{subfolder}' of {path!r} cannot be loaded: {first}"
        ) from None


def default_dtype(device: torch.device | str, dtype: torch.dtype | str | None) -> torch.dtype:
    """fp16 on CUDA, fp32 elsewhere, unless ``dtype`` is given."""
    if dtype is not None:
        return getattr(torch, dtype) if isinstance(dtype, str) else dtype
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def schedule_buffers(scheduler: Any) -> tuple[torch.Tensor, str, int]:
    """``(alphas_cumprod [T] fp32, prediction_type, T)`` of a diffusers scheduler."""
    ac = torch.as_tensor(scheduler.alphas_cumprod, dtype=torch.float32).clone()
    pred = str(getattr(scheduler.config, "prediction_type", "epsilon"))
    if pred not in ("epsilon", "v_prediction"):
        raise ValueError(f"scheduler prediction_type {pred!r} is not supported (epsilon or v_prediction)")
    return ac, pred, int(ac.shape[0])


def configure_unet(unet: Any, attention: str = "sdpa", channels_last: bool = False) -> None:
    """Memory / speed options: SDPA attention, attention slicing, channels-last layout."""
    if attention not in ATTENTION:
        raise ValueError(f"attention must be one of {', '.join(ATTENTION)}, got {attention!r}")
    if attention == "sdpa":
        from diffusers.models.attention_processor import AttnProcessor2_0

        unet.set_attn_processor(AttnProcessor2_0())
    elif attention == "slicing":
        unet.set_attention_slice("auto")
    if channels_last:
        unet.to(memory_format=torch.channels_last)


def resize(rgb: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize to ``size`` x ``size`` (antialiased when shrinking), differentiable."""
    if rgb.shape[-2:] == (size, size):
        return rgb
    down = rgb.shape[-1] > size or rgb.shape[-2] > size
    return F.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False, antialias=down)


class UNetPrior(DiffusionPrior):
    """What SD and IF share: a diffusers UNet, a schedule, epsilon / v conversion, broadcast conditions."""

    def __init__(self, unet: Any, scheduler: Any) -> None:
        super().__init__()
        self.unet = unet
        self.scheduler_config = dict(scheduler.config)
        ac, self.prediction_type, self.num_train_timesteps = schedule_buffers(scheduler)
        self.register_buffer("alphas_cumprod", ac, persistent=False)
        self.channels_last = False

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the UNet weights."""
        return next(self.unet.parameters()).dtype

    def unet_kwargs(self, cond: TextCondition, b: int) -> dict[str, Any]:
        """Extra UNet inputs from a condition (broadcast to batch ``b``)."""
        hidden = cond["hidden_states"]
        if hidden.shape[0] == 1 and b > 1:
            hidden = hidden.expand(b, *hidden.shape[1:])
        if hidden.shape[0] != b:
            raise ValueError(f"condition has batch {hidden.shape[0]} but the noisy input has {b}")
        return {"encoder_hidden_states": hidden.to(self.dtype)}

    def predict_noise(
        self,
        noisy: torch.Tensor,
        t: torch.Tensor,
        cond: TextCondition,
        camera: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Epsilon (fp32) for ``noisy`` at timesteps ``t``; the camera is ignored (view prompts carry it)."""
        b = noisy.shape[0]
        t = torch.as_tensor(t, device=noisy.device).reshape(-1).expand(b)
        x = noisy.to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.unet(x, t, **self.unet_kwargs(cond, b)).sample.float()
        c = noisy.shape[1]
        if out.shape[1] == 2 * c:  # learned variance (IF): the first half is the prediction
            out = out[:, :c]
        if self.prediction_type == "v_prediction":
            a = self.alphas_cumprod.to(noisy.device)[t].view(-1, 1, 1, 1)
            out = a.sqrt() * out + (1.0 - a).sqrt() * noisy.float()
        return out

    what = "a diffusers prior"

    @classmethod
    def component_loaders(cls) -> dict[str, tuple[Any, bool]]:
        """``{component: (diffusers / transformers class, takes a dtype)}`` in loading order (override)."""
        raise NotImplementedError

    @classmethod
    def load_components(
        cls,
        path: str | Path,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | str | None = None,
        attention: str = "sdpa",
        channels_last: bool = False,
    ) -> Any:
        """Load every component offline from a diffusers directory or cached hub id (one clear line
        naming a missing part), build the prior, configure attention and freeze it on ``device``."""
        path = str(path)
        loaders = cls.component_loaders()
        check_components(path, tuple(loaders), cls.what)
        dt = default_dtype(device, dtype)
        parts = {
            name: load_component(loader, path, name, cls.what, **({"torch_dtype": dt} if typed else {}))
            for name, (loader, typed) in loaders.items()
        }
        prior = cls(**parts)
        prior.configure(attention, channels_last)
        return prior.to(device).eval().requires_grad_(False)

    def configure(self, attention: str = "sdpa", channels_last: bool = False) -> None:
        """Set the attention implementation (``sdpa``, ``slicing``, ``default``) and the memory layout."""
        configure_unet(self.unet, attention, channels_last)
        self.channels_last = bool(channels_last)


class StableDiffusionPrior(UNetPrior):
    """Stable Diffusion 1.x / 2.x (see the module docstring)."""

    name = "sd"
    what = "Stable Diffusion"
    uses_camera = False

    def __init__(self, unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, scheduler: Any) -> None:
        super().__init__(unet, scheduler)
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.image_size = int(unet.config.sample_size) * self.vae_scale
        self.scaling_factor = float(getattr(vae.config, "scaling_factor", 0.18215))

    @classmethod
    def load(
        cls,
        path: str | Path = "stabilityai/stable-diffusion-2-1-base",
        device: torch.device | str = "cpu",
        dtype: torch.dtype | str | None = None,
        attention: str = "sdpa",
        channels_last: bool = False,
    ) -> StableDiffusionPrior:
        """Load from a diffusers directory or cached hub id (one clear line when a component is missing)."""
        return cls.load_components(path, device, dtype, attention, channels_last)

    @classmethod
    def component_loaders(cls) -> dict[str, tuple[Any, bool]]:
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        return {
            "unet": (UNet2DConditionModel, True),
            "vae": (AutoencoderKL, True),
            "text_encoder": (CLIPTextModel, True),
            "tokenizer": (CLIPTokenizer, False),
            "scheduler": (DDIMScheduler, False),
        }

    def encode_text(self, prompts: Sequence[str]) -> TextCondition:
        """CLIP last hidden states [B, 77, D] of ``prompts`` (padded to the tokenizer's max length)."""
        tok = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        device = self.alphas_cumprod.device
        with torch.no_grad():
            hidden = self.text_encoder(tok.input_ids.to(device))[0]
        return {"hidden_states": hidden}

    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        """Scaled VAE latents (posterior mean) of renders in [0, 1], with gradient; fp32 out."""
        x = resize(rgb, self.image_size) * 2.0 - 1.0
        latents = self.vae.encode(x.to(self.dtype)).latent_dist.mean * self.scaling_factor
        return latents.to(rgb.dtype)

    def decode(self, model_space: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] from latents."""
        img = self.vae.decode((model_space / self.scaling_factor).to(self.dtype)).sample
        return ((img.float() + 1.0) * 0.5).clamp(0.0, 1.0)
