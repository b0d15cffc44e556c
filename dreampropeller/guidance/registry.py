"""Priors by name: ``tiny`` (embedded, default), ``sd`` (Stable Diffusion), ``if`` (DeepFloyd IF)."""

from __future__ import annotations

import importlib

import torch

from dreampropeller.guidance.prior import DiffusionPrior

PRIORS = {
    "tiny": ("dreampropeller.guidance.tiny.model", "TinyPrior"),
    "sd": ("dreampropeller.guidance.stable_diffusion", "StableDiffusionPrior"),
    "if": ("dreampropeller.guidance.deepfloyd", "DeepFloydPrior"),
}


class PriorError(ValueError):
    """A prior that cannot be loaded (unknown name, missing or malformed weights)."""


def load_prior(name: str, path: str | None = None, device: torch.device | str = "cpu") -> DiffusionPrior:
    """Load prior ``name`` from ``path`` (a local directory or hub id; ``None``: its default)."""
    if name not in PRIORS:
        raise PriorError(f"unknown prior {name!r}: use one of {', '.join(PRIORS)}")
    module_name, cls_name = PRIORS[name]
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as err:
        raise PriorError(f"prior {name!r} is not available in this installation ({err})") from None
    try:
        prior = cls.load(path, device=device) if path is not None else cls.load(device=device)
    except (FileNotFoundError, OSError, ValueError, KeyError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise PriorError(f"cannot load prior {name!r}{f' from {path!r}' if path else ''}: {first}") from None
    return prior
