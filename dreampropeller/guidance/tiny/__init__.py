"""The embedded tiny prior: a procedural object library, its renderer, and a small diffusion model.

Heavy pieces (diffusers) load only when the model is used: ``from dreampropeller.guidance.tiny.model
import TinyPrior``; ``TinyPrior.load()`` returns the shipped weights.
"""

from dreampropeller.guidance.tiny.library import (
    COLOUR_NAMES,
    HELD_OUT,
    SHAPE_NAMES,
    PromptError,
    all_prompts,
    combos,
    parse_prompt,
    prompt_for,
    shape_sdf,
)
from dreampropeller.guidance.tiny.render import Render, render

__all__ = [
    "COLOUR_NAMES",
    "HELD_OUT",
    "SHAPE_NAMES",
    "PromptError",
    "Render",
    "all_prompts",
    "combos",
    "parse_prompt",
    "prompt_for",
    "render",
    "shape_sdf",
]
