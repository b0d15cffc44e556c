import math

import pytest
import torch

from dreampropeller.guidance.tiny import library
from dreampropeller.guidance.tiny.library import (
    COLOUR_NAMES,
    HELD_OUT,
    SHAPE_NAMES,
    PromptError,
    parse_partial,
    parse_prompt,
    shape_sdf,
)


def _surface_points(shape: str, n: int, gen: torch.Generator) -> torch.Tensor:
    """Analytic points on each canonical shape's surface (independent of the SDF code)."""
    u = torch.rand(n, 3, generator=gen)
    ang = 2 * math.pi * u[:, 0]
    if shape == "sphere":
        return torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1) * 0.42
    if shape == "cube":
        p = (u * 2 - 1) * 0.29
        axis = torch.randint(0, 3, (n,), generator=gen)
        sign = torch.where(torch.rand(n, generator=gen) < 0.5, -0.29, 0.29)
        p[torch.arange(n), axis] = sign
        return p
    disc = u[:, 2].sqrt()  # radius fraction of points uniform on a disc
    cap = torch.rand(n, generator=gen) < 0.3
    if shape == "cylinder":
        side = torch.stack([0.31 * ang.cos(), 0.31 * ang.sin(), (u[:, 1] * 2 - 1) * 0.36], -1)
        z = torch.where(u[:, 1] < 0.5, -0.36, 0.36)
        caps = torch.stack([0.31 * disc * ang.cos(), 0.31 * disc * ang.sin(), z], -1)
        return torch.where(cap[:, None], caps, side)
    if shape == "cone":
        h = u[:, 1]  # 0 at the base rim, 1 at the tip
        r = 0.37 * (1 - h)
        side = torch.stack([r * ang.cos(), r * ang.sin(), -0.32 + h * 0.76], -1)
        base = torch.stack([0.37 * disc * ang.cos(), 0.37 * disc * ang.sin(), torch.full_like(h, -0.32)], -1)
        return torch.where(cap[:, None], base, side)
    if shape == "torus":
        phi = 2 * math.pi * u[:, 1]
        rr = 0.32 + 0.14 * phi.cos()
        return torch.stack([rr * ang.cos(), rr * ang.sin(), 0.14 * phi.sin()], -1)
    if shape == "octahedron":
        w = -torch.log(u.clamp(min=1e-9))
        w = w / w.sum(-1, keepdim=True) * 0.5  # uniform on the face x + y + z = 0.5
        signs = torch.where(torch.rand(n, 3, generator=gen) < 0.5, -1.0, 1.0)
        return w * signs
    raise AssertionError(shape)


@pytest.mark.parametrize("shape", SHAPE_NAMES)
def test_sdf_zero_on_surface_negative_inside(shape):
    gen = torch.Generator().manual_seed(0)
    surface = _surface_points(shape, 2000, gen)
    assert shape_sdf(shape, surface).abs().max() < 1e-5
    inside = torch.tensor([[0.0, 0.0, 0.0]]) if shape != "torus" else torch.tensor([[0.32, 0.0, 0.0]])
    assert shape_sdf(shape, inside).item() < -0.1
    assert shape_sdf(shape, torch.tensor([[0.0, 0.0, 0.7]])).item() > 0.1


@pytest.mark.parametrize("shape", SHAPE_NAMES)
def test_sdf_is_exact_distance(shape):
    """Outside, the SDF equals the distance to a dense surface sampling (up to its spacing)."""
    gen = torch.Generator().manual_seed(1)
    surface = _surface_points(shape, 60000, gen)
    queries = (torch.rand(300, 3, generator=gen) * 2 - 1) * 0.8
    d = shape_sdf(shape, queries)
    queries, d = queries[d > 0.02], d[d > 0.02]
    brute = torch.cdist(queries, surface).amin(1)
    assert (brute - d).max() < 0.02  # the sampled surface is never closer than the true one...
    assert (d - brute).max() < 1e-4  # ...and the SDF never overestimates
    # and SDF gradients are unit length (eikonal)
    q = queries.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(shape_sdf(shape, q).sum(), q)
    assert torch.allclose(grad.norm(dim=-1), torch.ones(len(q)), atol=1e-3)


def test_shapes_fit_the_unit_ball_and_are_in_pose():
    gen = torch.Generator().manual_seed(2)
    for shape in SHAPE_NAMES:
        pts = _surface_points(shape, 5000, gen)
        assert pts.norm(dim=-1).max() < 0.52
    cone = _surface_points("cone", 5000, gen)
    assert cone[:, 2].max() > 0.43 and cone[:, 2].min() > -0.33  # tip up
    torus = _surface_points("torus", 5000, gen)
    assert torus[:, 2].abs().max() <= 0.14 + 1e-6  # lying flat


def test_phrasings_parse_to_the_same_meaning():
    for phrase in ["a red cube", "a cube that is red", "red cube", "A RED BOX.", "a red cube, front view"]:
        assert parse_prompt(phrase) == ("cube", "red")
    for i in range(3):
        assert parse_prompt(library.prompt_for("torus", "cyan", i)) == ("torus", "cyan")
    assert parse_partial("") == (None, None)
    assert parse_partial("a blue object") == (None, "blue")


def test_unknown_words_and_ambiguity_raise_clear_errors():
    with pytest.raises(PromptError, match="does not know the word 'dragon'"):
        parse_prompt("a red dragon")
    with pytest.raises(PromptError, match="more than one shape"):
        parse_prompt("a red cube sphere")
    with pytest.raises(PromptError, match="must name one shape and one colour"):
        parse_prompt("a cube")
    assert issubclass(PromptError, ValueError)


def test_library_size_and_held_out():
    assert len(SHAPE_NAMES) >= 6 and len(COLOUR_NAMES) == 8
    assert "white" not in COLOUR_NAMES
    assert len(library.all_prompts()) == len(SHAPE_NAMES) * 8
    assert len(HELD_OUT) >= 4
    train = library.combos(include_held_out=False)
    assert not set(HELD_OUT) & set(train)
    assert len(train) == len(SHAPE_NAMES) * 8 - len(HELD_OUT)
    # every held-out shape and colour is still seen in other combinations
    assert {s for s, _ in HELD_OUT} <= {s for s, _ in train}
    assert {c for _, c in HELD_OUT} <= {c for _, c in train}
