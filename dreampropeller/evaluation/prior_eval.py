"""Scoring the prior's own samples: does a sample for "a red cube" show a red cube on white?

Every library combination (held-out ones included) is sampled a few times from random training
cameras with DDIM + classifier-free guidance, then judged by the learned evaluator.
``sample_accuracy`` is the fraction where both shape and colour are right. Paraphrases tokenize to
the same condition, so the canonical phrasing stands for all of them.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from dreampropeller.evaluation.classifier import LibraryClassifier
from dreampropeller.evaluation.metrics import frechet_distance
from dreampropeller.guidance.tiny.data import TRAIN_CAMERAS, camera_tuple
from dreampropeller.guidance.tiny.library import COLOUR_NAMES, HELD_OUT, SHAPE_NAMES, combos, prompt_for
from dreampropeller.guidance.tiny.model import TinyPrior
from dreampropeller.guidance.tiny.render import render
from dreampropeller.guidance.tiny.sampling import ddim_sample


def _border(images: torch.Tensor) -> torch.Tensor:
    """Values of the outer two-pixel ring of images [B, 3, H, W] (mostly background), [B, N]."""
    return torch.cat(
        [
            images[..., :2, :].flatten(1),
            images[..., -2:, :].flatten(1),
            images[..., :, :2].flatten(1),
            images[..., :, -2:].flatten(1),
        ],
        1,
    ).cpu()


@torch.no_grad()
def evaluate_prior(
    prior: TinyPrior,
    classifier: LibraryClassifier,
    *,
    samples_per_prompt: int = 4,
    steps: int = 50,
    guidance_scale: float = 5.0,
    seed: int = 0,
    batch: int = 512,
) -> tuple[dict[str, Any], torch.Tensor]:
    """(metrics, samples [n_combos * samples_per_prompt, 3, 32, 32]) of the prior at ``guidance_scale``."""
    if samples_per_prompt < 1:
        raise ValueError(f"samples_per_prompt must be at least 1, got {samples_per_prompt}")
    device = prior.alphas_cumprod.device
    pairs = combos(include_held_out=True)
    shapes = [s for s, _ in pairs for _ in range(samples_per_prompt)]
    colours = [c for _, c in pairs for _ in range(samples_per_prompt)]
    prompts = [prompt_for(s, c) for s, c in zip(shapes, colours)]
    cams = TRAIN_CAMERAS.sample(len(prompts), torch.Generator().manual_seed(seed))
    camera = camera_tuple(cams)
    gen = torch.Generator(device=device).manual_seed(seed)
    start = time.perf_counter()
    images = torch.cat(
        [
            ddim_sample(
                prior,
                prompts[i : i + batch],
                camera[i : i + batch].to(device),
                steps=steps,
                guidance_scale=guidance_scale,
                generator=gen,
            )
            for i in range(0, len(prompts), batch)
        ]
    )
    seconds = time.perf_counter() - start
    clf_device = next(classifier.parameters()).device
    s_logits, c_logits, feats = classifier(images.to(clf_device))
    truth = render(shapes, colours, cams, prior.image_size)
    _, _, true_feats = classifier(truth.rgb.to(clf_device))
    s_true = torch.tensor([SHAPE_NAMES.index(s) for s in shapes], device=clf_device)
    c_true = torch.tensor([COLOUR_NAMES.index(c) for c in colours], device=clf_device)
    shape_ok, colour_ok = s_logits.argmax(-1) == s_true, c_logits.argmax(-1) == c_true
    both = (shape_ok & colour_ok).float().cpu()
    held = torch.tensor([(s, c) in HELD_OUT for s, c in zip(shapes, colours)])
    border, true_border = _border(images), _border(truth.rgb)
    per_combo = both.view(len(pairs), samples_per_prompt).mean(1)
    metrics = {
        "sample_accuracy": float(both.mean()),
        "sample_accuracy_train_combos": float(both[~held].mean()),
        "sample_accuracy_held_out": float(both[held].mean()),
        "shape_accuracy": float(shape_ok.float().mean()),
        "colour_accuracy": float(colour_ok.float().mean()),
        "feature_distance": frechet_distance(feats.cpu(), true_feats.cpu()),
        "background_mean": float(border.mean()),
        "background_white_fraction": float((border > 0.9).float().mean()),
        "background_white_fraction_truth": float((true_border > 0.9).float().mean()),
        "per_combo": {f"{s}/{c}": round(float(a), 3) for (s, c), a in zip(pairs, per_combo)},
        "held_out": [f"{s}/{c}" for s, c in HELD_OUT],
        "prompts": len(pairs),
        "samples_per_prompt": samples_per_prompt,
        "ddim_steps": steps,
        "guidance_scale": guidance_scale,
        "seed": seed,
        "sampling_seconds": round(seconds, 2),
        "device": str(device),
    }
    return metrics, images
