"""The procedural object library of the embedded prior: shapes x colours, prompts, and the prompt parser.

Every shape has an exact signed distance function in a canonical size and pose: centred at the
origin, fitting inside a sphere of radius about 0.5, z up (cone tip up, torus lying flat, cube
axis-aligned). Colours are vivid and distinct in chromaticity (none is white: backgrounds are white),
so a shaded render still reveals its colour. A few shape x colour combinations are held out of
training to measure generalization.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from dreampropeller.guidance.tiny import sdf


class PromptError(ValueError):
    """A prompt the library cannot parse."""


@dataclass(frozen=True)
class Shape:
    """A library shape: name, words that name it, its exact SDF in canonical placement."""

    name: str
    words: tuple[str, ...]
    sdf: Callable[[torch.Tensor], torch.Tensor]
    bound: float  # radius of the smallest origin-centred sphere containing the shape


@dataclass(frozen=True)
class Colour:
    """A library colour: name, words that name it, linear RGB albedo in [0, 1]."""

    name: str
    words: tuple[str, ...]
    rgb: tuple[float, float, float]


SHAPES: tuple[Shape, ...] = (
    Shape("sphere", ("sphere", "ball", "orb"), partial(sdf.sphere, radius=0.42), 0.42),
    Shape("cube", ("cube", "box", "block"), partial(sdf.box, half=(0.29, 0.29, 0.29)), 0.29 * 3**0.5),
    Shape(
        "cylinder",
        ("cylinder", "can", "tube"),
        partial(sdf.cylinder, radius=0.31, half_height=0.36),
        (0.31**2 + 0.36**2) ** 0.5,
    ),
    Shape(
        "cone",
        ("cone",),
        partial(sdf.cone, radius=0.37, z_base=-0.32, z_apex=0.44),
        (0.37**2 + 0.32**2) ** 0.5,
    ),
    Shape("torus", ("torus", "donut", "doughnut", "ring"), partial(sdf.torus, major=0.32, minor=0.14), 0.46),
    Shape("octahedron", ("octahedron", "diamond"), partial(sdf.octahedron, size=0.5), 0.5),
)

COLOURS: tuple[Colour, ...] = (
    Colour("red", ("red",), (0.85, 0.10, 0.10)),
    Colour("orange", ("orange",), (0.95, 0.50, 0.05)),
    Colour("yellow", ("yellow",), (0.92, 0.82, 0.10)),
    Colour("green", ("green",), (0.10, 0.62, 0.15)),
    Colour("cyan", ("cyan", "turquoise", "teal"), (0.05, 0.72, 0.78)),
    Colour("blue", ("blue",), (0.10, 0.25, 0.85)),
    Colour("purple", ("purple", "violet"), (0.50, 0.15, 0.75)),
    Colour("pink", ("pink", "magenta"), (0.95, 0.40, 0.70)),
)

SHAPE_NAMES: tuple[str, ...] = tuple(s.name for s in SHAPES)
COLOUR_NAMES: tuple[str, ...] = tuple(c.name for c in COLOURS)

HELD_OUT: tuple[tuple[str, str], ...] = (
    ("sphere", "purple"),
    ("cube", "green"),
    ("cylinder", "pink"),
    ("cone", "blue"),
    ("torus", "yellow"),
    ("octahedron", "orange"),
)
"""(shape, colour) combinations never shown to the prior in training."""

PHRASINGS: tuple[str, ...] = ("a {colour} {shape}", "a {shape} that is {colour}", "{colour} {shape}")
"""Prompt templates used in training; the first is the canonical one."""

FILLER_WORDS = frozenset(
    {
        "a",
        "an",
        "the",
        "one",
        "single",
        "of",
        "that",
        "which",
        "is",
        "it",
        "its",
        "coloured",
        "colored",
        "color",
        "colour",
        "in",
        "with",
        "made",
        "object",
        "shape",
        "solid",
        "simple",
        "plain",
        "3d",
        "model",
        "render",
        "rendering",
    }
)
"""Words that carry no meaning here (skipped by the parser)."""

VIEW_WORDS = frozenset(["front", "side", "back", "overhead", "top", "bottom", "view"])
"""View-dependent prompt suffixes (", front view"): skipped, the prior reads the camera instead."""

_WORD = {w: ("shape", i) for i, s in enumerate(SHAPES) for w in s.words}
_WORD.update({w: ("colour", i) for i, c in enumerate(COLOURS) for w in c.words})


def shape_index(name: str) -> int:
    """Index of a shape by name."""
    if name not in SHAPE_NAMES:
        raise PromptError(f"unknown shape {name!r}; known: {', '.join(SHAPE_NAMES)}")
    return SHAPE_NAMES.index(name)


def colour_index(name: str) -> int:
    """Index of a colour by name."""
    if name not in COLOUR_NAMES:
        raise PromptError(f"unknown colour {name!r}; known: {', '.join(COLOUR_NAMES)}")
    return COLOUR_NAMES.index(name)


def combos(include_held_out: bool = True) -> list[tuple[str, str]]:
    """All (shape, colour) pairs in library order, optionally without the held-out ones."""
    out = [(s, c) for s in SHAPE_NAMES for c in COLOUR_NAMES]
    return out if include_held_out else [p for p in out if p not in HELD_OUT]


def prompt_for(shape: str, colour: str, phrasing: int = 0) -> str:
    """The prompt of a combination in one of the ``PHRASINGS``."""
    shape_index(shape), colour_index(colour)
    return PHRASINGS[phrasing % len(PHRASINGS)].format(shape=shape, colour=colour)


def all_prompts(include_held_out: bool = True) -> list[str]:
    """Canonical prompts of every combination (48 with the default library)."""
    return [prompt_for(s, c) for s, c in combos(include_held_out)]


def parse_partial(prompt: str) -> tuple[str | None, str | None]:
    """(shape, colour) named by ``prompt``, each None when absent; ``""`` is (None, None).

    Raises PromptError for a word outside the vocabulary or a prompt naming two shapes or colours.
    """
    words = [w for w in re.split(r"[^a-z0-9]+", prompt.lower()) if w]
    found: dict[str, int] = {}
    for word in words:
        if word in FILLER_WORDS or word in VIEW_WORDS:
            continue
        kind_index = _WORD.get(word)
        if kind_index is None:
            raise PromptError(
                f"the tiny prior does not know the word {word!r} in {prompt!r}; it knows the shapes "
                f"{', '.join(SHAPE_NAMES)} and the colours {', '.join(COLOUR_NAMES)}"
            )
        kind, index = kind_index
        if kind in found and found[kind] != index:
            raise PromptError(f"prompt {prompt!r} names more than one {kind}; name one shape and one colour")
        found[kind] = index
    shape = SHAPE_NAMES[found["shape"]] if "shape" in found else None
    colour = COLOUR_NAMES[found["colour"]] if "colour" in found else None
    return shape, colour


def parse_prompt(prompt: str) -> tuple[str, str]:
    """(shape, colour) of a prompt that names both, e.g. ``"a cube that is red"`` -> ("cube", "red")."""
    shape, colour = parse_partial(prompt)
    if shape is None or colour is None:
        raise PromptError(f"prompt {prompt!r} must name one shape and one colour, e.g. 'a red cube'")
    return shape, colour


def shape_sdf(shape: str | int, points: torch.Tensor) -> torch.Tensor:
    """Signed distance of ``points`` [..., 3] to a library shape (negative inside)."""
    index = shape if isinstance(shape, int) else shape_index(shape)
    return SHAPES[index].sdf(points)


def colour_table(device: torch.device | str = "cpu") -> torch.Tensor:
    """Albedos of every colour, [n_colours, 3]."""
    return torch.tensor([c.rgb for c in COLOURS], dtype=torch.float32, device=device)
