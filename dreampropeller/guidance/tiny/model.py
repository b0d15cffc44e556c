"""TinyPrior: the embedded text- and camera-conditioned pixel-space diffusion prior (32x32).

A diffusers ``UNet2DConditionModel`` (channels 32/64/128, one layer per block, cross-attention only
at 8x8) predicts the noise of a DDPM linear schedule (1000 steps). Text enters twice: the per-slot
hidden states through cross-attention, and the pooled vector together with the camera features
(sin/cos azimuth, elevation, distance, presence flag) through ``class_embed_type="projection"``.
Weights ship as safetensors + a JSON config in ``dreampropeller/guidance/tiny/weights``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from dreampropeller.guidance.prior import DiffusionPrior, TextCondition
from dreampropeller.guidance.tiny.text import TextEncoder, tokenize

WEIGHTS_DIR = Path(__file__).parent / "weights"
CAMERA_FEATURES = 5


class PriorWeightsMissing(FileNotFoundError):
    """The requested prior weights are not on disk."""


@dataclass
class TinyPriorConfig:
    """Architecture and schedule of a TinyPrior (saved next to its weights)."""

    image_size: int = 32
    channels: tuple[int, ...] = (32, 64, 128)
    layers_per_block: int = 1
    text_dim: int = 64
    pooled_dim: int = 64
    attention_heads: int = 4
    norm_groups: int = 8
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    guidance_scale: float = 5.0  # default classifier-free guidance of ``prior sample``
    info: dict = field(default_factory=dict)  # provenance: how these weights were trained

    @classmethod
    def from_dict(cls, data: dict) -> TinyPriorConfig:
        """A config from its JSON form (unknown keys are an error)."""
        data = dict(data)
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown TinyPrior config keys {sorted(unknown)}; was it written by a newer version?"
            )
        if "channels" in data:
            data["channels"] = tuple(data["channels"])
        return cls(**data)


def camera_features(camera: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
    """[B, 5] = (sin az, cos az, elevation rad, scaled distance, 1) of camera [B, 3]; zeros if absent."""
    if camera is None:
        return torch.zeros(batch, CAMERA_FEATURES, device=device)
    cam = camera.to(device=device, dtype=torch.float32).reshape(-1, 3)
    el, az, dist = torch.deg2rad(cam[:, 0]), torch.deg2rad(cam[:, 1]), cam[:, 2]
    feats = torch.stack([az.sin(), az.cos(), el, (dist - 1.75) * 4.0, torch.ones_like(el)], dim=-1)
    return feats.expand(batch, CAMERA_FEATURES) if feats.shape[0] == 1 else feats


def build_unet(cfg: TinyPriorConfig):
    """The UNet of a config (diffusers imported here so the rest of the package loads without it)."""
    from diffusers import UNet2DConditionModel

    n = len(cfg.channels)
    return UNet2DConditionModel(
        sample_size=cfg.image_size,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownBlock2D",) * (n - 1) + ("CrossAttnDownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",) + ("UpBlock2D",) * (n - 1),
        block_out_channels=tuple(cfg.channels),
        layers_per_block=cfg.layers_per_block,
        cross_attention_dim=cfg.text_dim,
        attention_head_dim=cfg.attention_heads,
        norm_num_groups=cfg.norm_groups,
        class_embed_type="projection",
        projection_class_embeddings_input_dim=cfg.pooled_dim + CAMERA_FEATURES,
    )


class TinyPrior(DiffusionPrior):
    """The embedded prior (see module docstring). ``TinyPrior.load()`` gives the shipped weights."""

    name = "tiny"
    uses_camera = True

    def __init__(self, config: TinyPriorConfig | None = None) -> None:
        super().__init__()
        self.config = config or TinyPriorConfig()
        self.image_size = self.config.image_size
        self.num_train_timesteps = self.config.num_train_timesteps
        self.text_encoder = TextEncoder(self.config.text_dim, self.config.pooled_dim)
        self.unet = build_unet(self.config)
        betas = torch.linspace(
            self.config.beta_start, self.config.beta_end, self.config.num_train_timesteps, dtype=torch.float64
        )
        self.register_buffer("alphas_cumprod", torch.cumprod(1.0 - betas, 0).float(), persistent=False)

    # -- the DiffusionPrior interface -------------------------------------------------------------
    def encode_text(self, prompts: Sequence[str]) -> TextCondition:
        """Conditioning of ``prompts`` (``""`` unconditional); raises PromptError for unknown words."""
        tokens = tokenize(prompts).to(self.alphas_cumprod.device)
        with torch.no_grad():
            return self.condition(tokens)

    def condition(self, tokens: torch.Tensor) -> TextCondition:
        """Conditioning of token ids [B, 2] (differentiable; used in training)."""
        return self.text_encoder(tokens)

    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        """[-1, 1] pixels at ``image_size`` from renders in [0, 1] (antialiased when downsampling)."""
        size = self.image_size
        if rgb.shape[-2:] != (size, size):
            down = rgb.shape[-1] > size or rgb.shape[-2] > size
            rgb = F.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False, antialias=down)
        return rgb * 2.0 - 1.0

    def decode(self, model_space: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] from model-space pixels."""
        return ((model_space + 1.0) * 0.5).clamp(0.0, 1.0)

    def predict_noise(
        self,
        noisy: torch.Tensor,
        t: torch.Tensor,
        cond: TextCondition,
        camera: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Epsilon [B, 3, 32, 32]; a condition or camera of batch 1 is broadcast to B."""
        b = noisy.shape[0]
        hidden, pooled = cond["hidden_states"], cond["pooled"]
        if hidden.shape[0] == 1 and b > 1:
            hidden, pooled = hidden.expand(b, -1, -1), pooled.expand(b, -1)
        if hidden.shape[0] != b:
            raise ValueError(f"condition has batch {hidden.shape[0]} but the noisy input has {b}")
        t = torch.as_tensor(t, device=noisy.device).reshape(-1).expand(b)
        labels = torch.cat(
            [pooled.to(noisy.dtype), camera_features(camera, b, noisy.device).to(noisy.dtype)], -1
        )
        return self.unet(noisy, t, encoder_hidden_states=hidden.to(noisy.dtype), class_labels=labels).sample

    # -- weights ------------------------------------------------------------------------------------
    def save(self, directory: str | Path, name: str = "tiny", half: bool = False) -> Path:
        """Write ``<name>.safetensors`` and ``<name>.json`` into ``directory``; returns the weights path."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        dtype = torch.float16 if half else torch.float32
        tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in self.state_dict().items()}
        path = directory / f"{name}.safetensors"
        save_file(tensors, str(path))
        (directory / f"{name}.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, name_or_path: str | Path = "tiny", device: torch.device | str = "cpu") -> TinyPrior:
        """The shipped weights (``"tiny"``), or a directory / ``.safetensors`` file written by ``save``."""
        from safetensors.torch import load_file

        weights = _resolve(name_or_path)
        config = TinyPriorConfig.from_dict(json.loads(weights.with_suffix(".json").read_text()))
        prior = cls(config)
        state = {k: v.float() for k, v in load_file(str(weights)).items()}
        prior.load_state_dict(state)
        return prior.to(device).eval().requires_grad_(False)

    def num_parameters(self) -> int:
        """Number of trainable parameters (UNet and text encoder)."""
        return sum(p.numel() for p in self.parameters())


def _resolve(name_or_path: str | Path) -> Path:
    """The ``.safetensors`` file a name or path refers to (its JSON config must sit beside it)."""
    text = str(name_or_path)
    path = WEIGHTS_DIR / "tiny.safetensors" if text == "tiny" else Path(text)
    if path.is_dir():
        found = sorted(path.glob("*.safetensors"))
        if len(found) != 1:
            raise PriorWeightsMissing(
                f"expected one .safetensors file in {path}, found {len(found)}; pass the file itself"
            )
        path = found[0]
    if not path.is_file() or not path.with_suffix(".json").is_file():
        hint = (
            "the shipped tiny prior weights are missing from the package; reinstall it, or train them with "
            "`dreampropeller prior train --out DIR` and pass DIR/export"
            if text == "tiny"
            else "pass a weights file written by `dreampropeller prior train` (with its .json beside it)"
        )
        raise PriorWeightsMissing(f"no prior weights at {path}: {hint}")
    return path


def snr(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio a/(1-a) at timesteps ``t``."""
    a = alphas_cumprod[t]
    return a / (1.0 - a)
