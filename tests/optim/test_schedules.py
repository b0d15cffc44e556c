"""Schedules: values at known points and equality with torch's LambdaLR step by step."""

from __future__ import annotations

import math

import pytest
import torch

from dreampropeller.optim import Adam, OptimConfigError, make_schedule

CONFIGS = [
    {"name": "constant"},
    {"name": "linear", "warmup": 10, "total": 100, "min_factor": 0.1},
    {"name": "cosine", "total": 100},
    {"name": "cosine", "warmup": 20, "total": 90, "min_factor": 0.05, "warmup_start": 0.2},
    {"name": "exponential", "gamma": 0.95},
    {"name": "exp_interp", "final_factor": 0.02, "max_steps": 80},
    {"name": "exp_interp", "final_factor": 0.1, "max_steps": 50, "delay_steps": 10, "delay_mult": 0.01},
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c["name"])
def test_lr_equals_lambdalr_over_100_steps(config):
    base = 0.03
    param = torch.zeros(3, requires_grad=True)
    topt = torch.optim.SGD([param], lr=base)
    sched = torch.optim.lr_scheduler.LambdaLR(topt, make_schedule(config).factor)
    opt = Adam(lr=base, schedule=config)
    seen = set()
    for t in range(100):
        lr = opt.lr("p", t)
        assert lr == topt.param_groups[0]["lr"]  # lr of the (t+1)-th optimizer step
        seen.add(lr)
        param.grad = torch.ones(3)
        topt.step()
        sched.step()
    assert (len(seen) == 1) == (config["name"] == "constant")


def test_known_values():
    cos = make_schedule({"name": "cosine", "warmup": 100, "total": 1000, "min_factor": 0.1})
    assert cos.factor(0) == 0.0 and cos.factor(50) == 0.5 and cos.factor(100) == 1.0
    assert cos.factor(550) == pytest.approx(0.55) and cos.factor(1000) == pytest.approx(0.1)
    assert cos.factor(5000) == pytest.approx(0.1)
    lin = make_schedule({"name": "linear", "warmup": 0, "total": 10})
    assert [lin.factor(t) for t in (0, 5, 10, 20)] == [1.0, 0.5, 0.0, 0.0]
    assert make_schedule({"name": "exponential", "gamma": 0.5}).factor(3) == 0.125
    rel = make_schedule({"name": "exp_interp", "final_factor": 0.01, "max_steps": 100})
    assert (
        rel.factor(0) == 1.0
        and rel.factor(50) == pytest.approx(0.1)
        and rel.factor(200) == pytest.approx(0.01)
    )


def test_gaussian_position_schedule_is_absolute():
    """DreamGaussian positions: 1e-3 -> 2e-5 over 500 steps, whatever the group's base lr."""
    s = make_schedule({"name": "exp_interp", "lr_init": 1e-3, "lr_final": 2e-5, "max_steps": 500})
    assert s.lr(123.0, 0) == pytest.approx(1e-3, rel=1e-12)
    assert s.lr(123.0, 250) == pytest.approx(math.sqrt(1e-3 * 2e-5), rel=1e-12)
    assert s.lr(123.0, 500) == pytest.approx(2e-5, rel=1e-12)
    assert s.lr(1e-3, 250) == pytest.approx(1e-3 * s.factor(250), rel=1e-12)
    assert Adam(lr=5.0, schedule=s).lr("xyz", 500) == pytest.approx(2e-5, rel=1e-12)
    delayed = make_schedule(
        {"name": "exp_interp", "final_factor": 1.0, "max_steps": 10, "delay_steps": 4, "delay_mult": 0.5}
    )
    assert delayed.factor(0) == 0.5 and delayed.factor(4) == 1.0
    assert delayed.factor(2) == pytest.approx(0.5 + 0.5 * math.sin(math.pi / 4))


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"name": "step_lr"}, "unknown schedule"),
        ({"warmup": 3}, "unknown schedule"),
        ({"name": "cosine", "total": 10, "warmup": 20}, "total"),
        ({"name": "cosine", "warmup": -1}, "warmup"),
        ({"name": "linear", "min_factor": 1.5}, "min_factor"),
        ({"name": "exponential", "gamma": 0.0}, "gamma"),
        ({"name": "exp_interp", "max_steps": 10}, "final_factor"),
        ({"name": "exp_interp", "final_factor": 0.1, "lr_init": 1e-3, "lr_final": 1e-5}, "not both"),
        ({"name": "exp_interp", "lr_init": 1e-3, "lr_final": -1.0}, "lr_final"),
        ({"name": "cosine", "totl": 10}, "unknown option"),
        (3, "mapping"),
    ],
)
def test_bad_schedule_config(config, fragment):
    with pytest.raises(OptimConfigError, match=fragment):
        make_schedule(config)
    assert issubclass(OptimConfigError, ValueError)
