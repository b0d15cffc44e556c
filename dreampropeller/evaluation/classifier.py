"""The learned evaluator: a small CNN that names the shape and the colour of a 32x32 render.

Trained on shaded library renders of every combination (held-out ones included: it is the judge,
not the prior), with noise, blur and small shifts so that it also reads imperfect generated images.
Its pooled features serve the FID-like distance. Weights ship in ``evaluation/weights``.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dreampropeller.guidance.tiny.data import allowed_combos, build_pool, draw_batch
from dreampropeller.guidance.tiny.library import COLOUR_NAMES, SHAPE_NAMES

WEIGHTS_DIR = Path(__file__).parent / "weights"
INPUT_SIZE = 32


class ClassifierWeightsMissing(FileNotFoundError):
    """The evaluator's weights are not on disk."""


@dataclass
class ClassifierConfig:
    """Architecture of the evaluator (saved next to its weights)."""

    channels: tuple[int, ...] = (32, 64, 128)
    n_shapes: int = len(SHAPE_NAMES)
    n_colours: int = len(COLOUR_NAMES)
    info: dict = field(default_factory=dict)


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU())


class LibraryClassifier(nn.Module):
    """Images [B, 3, H, W] in [0, 1] -> shape logits, colour logits, features [B, channels[-1]]."""

    def __init__(self, config: ClassifierConfig | None = None) -> None:
        super().__init__()
        self.config = config or ClassifierConfig()
        c = self.config.channels
        layers = [_block(3, c[0], 1)]
        for cin, cout in itertools.pairwise(c):
            layers += [_block(cin, cout, 2), _block(cout, cout, 1)]
        layers += [_block(c[-1], c[-1], 2)]
        self.body = nn.Sequential(*layers)
        self.shape_head = nn.Linear(c[-1], self.config.n_shapes)
        self.colour_head = nn.Linear(c[-1], self.config.n_colours)

    def features(self, rgb: torch.Tensor) -> torch.Tensor:
        """Pooled features [B, C] of images in [0, 1] (resized to 32x32, antialiased)."""
        if rgb.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            down = max(rgb.shape[-2:]) > INPUT_SIZE
            rgb = F.interpolate(
                rgb, (INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=down
            )
        return self.body(rgb * 2.0 - 1.0).mean(dim=(2, 3))

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(shape logits [B, S], colour logits [B, C], features [B, F])."""
        f = self.features(rgb)
        return self.shape_head(f), self.colour_head(f), f

    def save(self, directory: str | Path, name: str = "classifier") -> Path:
        """Write ``<name>.safetensors`` + ``<name>.json``; returns the weights path."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.safetensors"
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(path))
        (directory / f"{name}.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        return path


def load_classifier(path: str | Path | None = None, device: torch.device | str = "cpu") -> LibraryClassifier:
    """The shipped evaluator (``path`` None) or one saved by ``LibraryClassifier.save``."""
    from safetensors.torch import load_file

    weights = Path(path) if path is not None else WEIGHTS_DIR / "classifier.safetensors"
    if weights.is_dir():
        weights = weights / "classifier.safetensors"
    meta = weights.with_suffix(".json")
    if not weights.is_file() or not meta.is_file():
        raise ClassifierWeightsMissing(
            f"no evaluator weights at {weights}; train them with `dreampropeller prior train-evaluator`"
        )
    data = json.loads(meta.read_text())
    data["channels"] = tuple(data["channels"])
    model = LibraryClassifier(ClassifierConfig(**data))
    model.load_state_dict(load_file(str(weights)))
    return model.to(device).eval().requires_grad_(False)


def augment(
    rgb: torch.Tensor, generator: torch.Generator, max_noise: float = 0.08, max_shift: int = 2
) -> torch.Tensor:
    """Noise, occasional blur and a small shift (white fill), drawn from ``generator``."""
    b, dev = rgb.shape[0], rgb.device
    u = torch.rand(b, 4, generator=generator, device=dev)
    blurred = F.avg_pool2d(F.pad(rgb, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    rgb = torch.where((u[:, 0] < 0.3).view(-1, 1, 1, 1), 0.5 * rgb + 0.5 * blurred, rgb)
    sx, sy = (torch.randint(-max_shift, max_shift + 1, (2,), generator=generator, device=dev)).tolist()
    padded = F.pad(rgb, (max_shift,) * 4, value=1.0)
    h, w = rgb.shape[-2:]
    rgb = padded[:, :, max_shift + sy : max_shift + sy + h, max_shift + sx : max_shift + sx + w]
    noise = torch.randn(rgb.shape, generator=generator, device=dev) * (u[:, 1] * max_noise).view(-1, 1, 1, 1)
    return (rgb + noise).clamp(0.0, 1.0)


def train_classifier(
    steps: int = 1500,
    batch: int = 64,
    views_per_shape: int = 256,
    seed: int = 0,
    device: torch.device | str = "cpu",
    lr: float = 2e-3,
    log=print,
) -> tuple[LibraryClassifier, dict]:
    """Train the evaluator on library renders; returns it and its held-out-view accuracies."""
    device = torch.device(device)
    torch.manual_seed(seed)
    start = time.perf_counter()
    pool = build_pool(views_per_shape, seed=seed + 100, device=device)
    test_pool = build_pool(max(16, views_per_shape // 8), seed=seed + 200, device=device)
    allowed = allowed_combos(include_held_out=True, device=device)
    model = LibraryClassifier().to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator(device=device).manual_seed(seed)
    for step in range(steps):
        data = draw_batch(pool, batch, gen, allowed)
        shape_logits, colour_logits, _ = model(augment(data.rgb, gen))
        loss = F.cross_entropy(shape_logits, data.shape_ids) + F.cross_entropy(colour_logits, data.colour_ids)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 250 == 0:
            log(f"classifier step {step + 1} loss {loss.item():.4f}")
    model.eval()
    test_gen = torch.Generator(device=device).manual_seed(seed + 1)
    with torch.no_grad():
        data = draw_batch(test_pool, 1024, test_gen, allowed)
        s_logits, c_logits, _ = model(data.rgb)
        noisy_s, noisy_c, _ = model(augment(data.rgb, test_gen))
    report = {
        "shape_accuracy": (s_logits.argmax(1) == data.shape_ids).float().mean().item(),
        "colour_accuracy": (c_logits.argmax(1) == data.colour_ids).float().mean().item(),
        "shape_accuracy_augmented": (noisy_s.argmax(1) == data.shape_ids).float().mean().item(),
        "colour_accuracy_augmented": (noisy_c.argmax(1) == data.colour_ids).float().mean().item(),
        "steps": steps,
        "batch": batch,
        "seed": seed,
        "train_seconds": round(time.perf_counter() - start, 1),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }
    model.config.info = report
    return model.requires_grad_(False), report
