"""Each optimizer, with several parameter groups and schedules, against torch.optim + LambdaLR."""

from __future__ import annotations

import pytest
import torch

from dreampropeller.optim import SGD, Adam, AdamW, ParamGroup, make_schedule

SHAPES = {"enc.grid": (6, 4), "enc.scale": (), "net.w": (5, 3, 2), "bg": (7,)}
STEPS = 100

COSINE = {"name": "cosine", "warmup": 10, "total": 80, "min_factor": 0.1}
EXP_INTERP = {"name": "exp_interp", "final_factor": 0.02, "max_steps": 60}
LINEAR = {"name": "linear", "warmup": 5, "total": 100, "min_factor": 0.0, "warmup_start": 0.1}
EXPONENTIAL = {"name": "exponential", "gamma": 0.97}

CASES = {
    "sgd": (
        SGD,
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 1e-3, "schedule": LINEAR},
        [
            {
                "names": ["enc.*"],
                "lr": 0.1,
                "momentum": 0.5,
                "dampening": 0.0,
                "nesterov": True,
                "schedule": COSINE,
            },
            {"names": ["net.w"], "momentum": 0.0, "weight_decay": 0.0, "schedule": EXPONENTIAL},
        ],
    ),
    "adam": (
        Adam,
        {"lr": 1e-3, "betas": (0.9, 0.99), "eps": 1e-15, "schedule": EXP_INTERP},
        [
            {"names": ["enc.*"], "lr": 1e-2, "weight_decay": 0.1, "amsgrad": True, "schedule": COSINE},
            {"names": ["net.w", "bg"], "lr": 5e-3, "betas": (0.5, 0.9), "eps": 1e-6},
        ],
    ),
    "adamw": (
        AdamW,
        {"lr": 2e-3, "weight_decay": 0.05, "schedule": COSINE},
        [
            {"names": ["enc.grid"], "weight_decay": 0.0, "amsgrad": True, "schedule": LINEAR},
            {"names": ["net.*"], "lr": 1e-2, "betas": (0.8, 0.95), "schedule": EXPONENTIAL},
        ],
    ),
}
TORCH = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def _torch_groups(params, default, groups):
    """torch param groups mirroring ours: first matching group wins, the rest go to the defaults."""
    opt_groups = [ParamGroup.from_config(g) for g in groups]
    buckets: list[list[str]] = [[] for _ in range(len(groups) + 1)]
    for name in params:
        index = next((i for i, g in enumerate(opt_groups) if g.matches(name)), len(groups))
        buckets[index].append(name)
    torch_groups, lambdas = [], []
    for index, names in enumerate(buckets):
        if not names:
            continue
        spec = {**default, **(groups[index] if index < len(groups) else {})}
        spec.pop("names", None)
        lambdas.append(make_schedule(spec.pop("schedule", None)).factor)
        torch_groups.append({"params": [params[n] for n in names], **spec})
    return torch_groups, lambdas


def _grads(gen, dtype, t):
    """Random grads of step t; 'bg' has none on every third step, 'net.w' none on step 0."""
    grads = {n: torch.randn(s, generator=gen, dtype=dtype) * (1.0 + n.count(".")) for n, s in SHAPES.items()}
    if t % 3 == 2:
        grads["bg"] = None
    if t == 0:
        grads["net.w"] = None
    return grads


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max elementwise relative difference (denominator floored at 1e-30)."""
    a, b = a.double(), b.double()
    return float(((a - b).abs() / b.abs().clamp_min(1e-30)).max()) if a.numel() else 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_torch_over_100_steps(case, dtype):
    cls, default, groups = CASES[case]
    gen = torch.Generator().manual_seed(1234)
    params = {n: torch.randn(s, generator=gen, dtype=dtype) for n, s in SHAPES.items()}

    ref = {n: p.clone().requires_grad_(True) for n, p in params.items()}
    torch_groups, lambdas = _torch_groups(ref, default, groups)
    topt = TORCH[case](torch_groups, foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(topt, lambdas)

    opt = cls(groups, **default)
    state = opt.init(params)
    worst = 0.0
    for t in range(STEPS):
        grads = _grads(gen, dtype, t)
        for n, p in ref.items():
            p.grad = None if grads[n] is None else grads[n].clone()
        for n in ref:
            group = next(g for g in topt.param_groups if any(q is ref[n] for q in g["params"]))
            assert opt.lr(n, t) == group["lr"]
        topt.step()
        sched.step()
        params, state = opt.step(params, grads, state, t)

    for n, p in ref.items():
        worst = max(worst, _rel(params[n], p.detach()))
        tstate = topt.state[p]
        if "step" in tstate:  # torch's SGD keeps no step count; ours does (first-step buffer rule)
            assert float(state[opt.step_key(n)]) == float(tstate["step"])
        slots = opt.slots(n)
        assert set(slots) == {k for k, v in tstate.items() if k != "step" and v is not None}
        for slot, key in zip(slots, opt.state_keys(n)):
            assert state[key].dtype == dtype and state[key].shape == p.shape
            worst = max(worst, _rel(state[key], tstate[slot]))
    assert worst <= 1e-6, worst
    # the trajectories moved: a vacuous comparison would not
    assert float(state[opt.step_key("bg")]) == STEPS - STEPS // 3
    assert float(state[opt.step_key("net.w")]) == STEPS - 1


def test_default_foreach_torch_agrees_too():
    """torch's default implementation choice (foreach or not) agrees as well."""
    gen = torch.Generator().manual_seed(7)
    params = {n: torch.randn(s, generator=gen) for n, s in SHAPES.items()}
    ref = [p.clone().requires_grad_(True) for p in params.values()]
    topt = torch.optim.Adam(ref, lr=1e-2, betas=(0.9, 0.99), eps=1e-15)
    opt = Adam(lr=1e-2, betas=(0.9, 0.99), eps=1e-15)
    state = opt.init(params)
    for t in range(STEPS):
        grads = {n: torch.randn(s, generator=gen) for n, s in SHAPES.items()}
        for p, g in zip(ref, grads.values()):
            p.grad = g.clone()
        topt.step()
        params, state = opt.step(params, grads, state, t)
    for p, q in zip(params.values(), ref):
        assert _rel(p, q.detach()) <= 1e-5
