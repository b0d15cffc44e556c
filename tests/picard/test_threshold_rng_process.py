"""Threshold rules, per-step generators and row mapping through index maps."""

import math

import pytest
import torch

from dreampropeller.picard.process import IndexMap, clone_state, map_rows, mean_squared_distance
from dreampropeller.picard.rng import StepRandom, derive_seed, seeded_global_rng, step_generator
from dreampropeller.picard.threshold import AdaptiveThreshold, aggregate_errors


def test_aggregates():
    errors = [1.0, 5.0, 2.0, 10.0]
    assert aggregate_errors(errors, "mean") == pytest.approx(4.5)
    assert aggregate_errors(errors, "median") == pytest.approx(3.5)  # a true median: mean of 2 and 5
    assert aggregate_errors(errors, "middle") == 2.0  # the authors' rule: the error at index len // 2
    assert aggregate_errors([1.0, math.inf, 3.0], "mean") == pytest.approx(2.0)
    assert aggregate_errors([], "mean") is None


def test_threshold_ema_and_fixed():
    thr = AdaptiveThreshold(value=10.0, ema=0.9, rule="mean")
    thr.observe([0.0, 0.0])
    assert thr.value == pytest.approx(9.0)
    fixed = AdaptiveThreshold(value=0.0, adaptive=False)
    fixed.observe([5.0])
    assert fixed.value == 0.0
    auto = AdaptiveThreshold(value=None, rule="middle")
    assert auto.current([1.0, 4.0, 9.0]) == 4.0
    capped = AdaptiveThreshold(value=1.0, rule="mean", maximum=2.0, ema=0.0)
    capped.observe([100.0])
    assert capped.value == 2.0


def test_step_generators_depend_only_on_seed_step_stream():
    a = StepRandom(3, 7).randn("noise", 5)
    torch.manual_seed(123)  # the global RNG must not matter
    b = StepRandom(3, 7).randn("noise", 5)
    assert torch.equal(a, b)
    assert not torch.equal(a, StepRandom(3, 8).randn("noise", 5))
    assert not torch.equal(a, StepRandom(4, 7).randn("noise", 5))
    assert not torch.equal(a, StepRandom(3, 7).randn("camera", 5))
    assert derive_seed(3, 7, "noise") == derive_seed(3, 7, "noise") < 2**63
    assert torch.equal(
        torch.rand(3, generator=step_generator(1, 2)), torch.rand(3, generator=step_generator(1, 2))
    )


def test_seeded_global_rng_restores_state():
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    with seeded_global_rng(5, 9):
        x = torch.rand(3)
    assert torch.equal(torch.random.get_rng_state(), before)
    with seeded_global_rng(5, 9):
        assert torch.equal(torch.rand(3), x)


def test_map_rows_is_exact_and_carries_displacement():
    before = {"p": torch.tensor([[0.0], [10.0], [20.0]]), "c": torch.tensor(1.0)}
    after = {"p": torch.tensor([[0.0], [20.0], [21.0], [5.0]]), "c": torch.tensor(2.0)}
    guess = {"p": torch.tensor([[1.0], [11.0], [23.0]]), "c": torch.tensor(7.0)}
    m = IndexMap({"p": torch.tensor([0, 2, 2, -1])})
    out = map_rows(guess, before, after, m)
    assert torch.equal(out["p"], torch.tensor([[1.0], [23.0], [24.0], [5.0]]))
    assert out["c"] == 7.0


def test_clone_and_distance():
    x = {"a": torch.ones(3)}
    y = clone_state(x)
    y["a"] += 1
    assert x["a"].sum() == 3
    assert mean_squared_distance(x, y, ["a"]) == 1.0
    assert mean_squared_distance(x, {"a": torch.ones(4)}, ["a"]) == math.inf
