"""Purity, missing grads, state layout, combined states, row remapping and bad configs."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from dreampropeller.optim import (
    SGD,
    Adam,
    AdamW,
    OptimConfigError,
    ParamGroup,
    make_optimizer,
    managed_params,
    merge_state,
    param_of,
    split_state,
)

OPTIMIZERS = [
    SGD(lr=0.1, momentum=0.9, weight_decay=0.01),
    Adam([ParamGroup(names=["a*"], lr=1e-2, amsgrad=True)], lr=1e-3, weight_decay=0.1),
    AdamW(lr=1e-2),
]


def _params(requires_grad=False):
    gen = torch.Generator().manual_seed(0)
    shapes = {"a.w": (4, 3), "a.s": (), "b": (5,)}
    return {n: torch.randn(s, generator=gen).requires_grad_(requires_grad) for n, s in shapes.items()}


def _ptrs(tensors):
    return {t.untyped_storage().data_ptr() for t in tensors}


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: o.name)
def test_step_is_pure(opt):
    params = _params(requires_grad=True)
    state = opt.init(params)
    grads = {n: torch.ones_like(p) for n, p in params.items()}
    grads["b"] = None
    params, state = opt.step(params, grads, state, 0)  # non-trivial state to start from
    grads = {n: torch.full_like(p, 0.5) for n, p in params.items()}
    grads["a.s"] = None
    before = [{k: v.clone() for k, v in d.items() if v is not None} for d in (params, grads, state)]
    new_params, new_state = opt.step(params, grads, state, 1)
    for snapshot, current in zip(before, (params, grads, state)):
        for k, v in snapshot.items():
            assert torch.equal(current[k], v), k
    inputs = _ptrs([*params.values(), *state.values(), *(g for g in grads.values() if g is not None)])
    outputs = [*new_params.values(), *new_state.values()]
    assert not (_ptrs(outputs) & inputs)
    assert not any(t.requires_grad for t in outputs)
    assert set(new_params) == set(params) and set(new_state) == set(state)
    assert not torch.equal(new_params["a.w"], params["a.w"])


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: o.name)
def test_missing_grad_keeps_param_and_state(opt):
    params = _params()
    state = opt.init(params)
    params, state = opt.step(params, {n: torch.ones_like(p) for n, p in params.items()}, state, 0)
    new_params, new_state = opt.step(params, {"a.w": torch.ones(4, 3), "unknown": torch.ones(2)}, state, 1)
    for name in ("a.s", "b"):
        assert torch.equal(new_params[name], params[name])
        for key in (*opt.state_keys(name), opt.step_key(name)):
            assert torch.equal(new_state[key], state[key])
    assert float(new_state[opt.step_key("a.w")]) == 2.0
    assert float(new_state[opt.step_key("b")]) == 1.0


def test_state_layout_and_keys():
    opt = Adam([{"names": ["a.*"], "amsgrad": True}])
    params = _params()
    state = opt.init(params)
    assert opt.state_keys("a.w") == ["optim/exp_avg/a.w", "optim/exp_avg_sq/a.w", "optim/max_exp_avg_sq/a.w"]
    assert opt.state_keys("b") == ["optim/exp_avg/b", "optim/exp_avg_sq/b"]
    assert opt.step_key("b") == "optim/step/b" and param_of("optim/exp_avg_sq/a.w") == "a.w"
    assert len(state) == 4 + 4 + 3  # a.w and a.s: 3 slots + step; b: 2 slots + step
    assert state["optim/exp_avg/a.s"].shape == () and state["optim/step/b"].dtype == torch.float32
    assert SGD(lr=0.1).state_keys("b") == [] and SGD(lr=0.1, momentum=0.9).state_keys("b") == [
        "optim/momentum_buffer/b"
    ]


def test_combined_state_apply_equals_step():
    opt = AdamW(lr=1e-2, betas=(0.9, 0.99))
    params = _params()
    x = merge_state(opt.init_state(params), {"buffer": torch.arange(3.0)})
    assert sorted(managed_params(x)) == sorted(params)
    grads = {n: torch.ones_like(p) * 0.3 for n, p in params.items()}
    y = opt.apply(x, grads, 0)
    p_ref, s_ref = opt.step(params, grads, opt.init(params), 0)
    ps, ss, rest = split_state(y)
    assert all(torch.equal(ps[k], p_ref[k]) for k in p_ref) and all(
        torch.equal(ss[k], s_ref[k]) for k in s_ref
    )
    assert torch.equal(rest["buffer"], x["buffer"]) and rest["buffer"].data_ptr() != x["buffer"].data_ptr()
    with pytest.raises(OptimConfigError, match="overlap"):
        merge_state(params, {"b": torch.zeros(1)})


def test_remap_rows_after_densification():
    opt = Adam(lr=0.1)
    params = {"xyz": torch.randn(4, 3)}
    params, state = opt.step(params, {"xyz": torch.randn(4, 3)}, opt.init(params), 0)
    sources = torch.tensor([0, 2, -1, 3, 3])
    remapped = opt.remap_rows(state, "xyz", sources)
    m = remapped["optim/exp_avg/xyz"]
    assert m.shape == (5, 3) and torch.equal(m[1], state["optim/exp_avg/xyz"][2])
    assert torch.equal(m[2], torch.zeros(3)) and torch.equal(m[4], state["optim/exp_avg/xyz"][3])
    assert float(remapped["optim/step/xyz"]) == 1.0
    new_params, new_state = opt.step(
        {"xyz": torch.randn(5, 3)}, {"xyz": torch.ones(5, 3)}, {**state, **remapped}, 1
    )
    assert new_params["xyz"].shape == (5, 3) and float(new_state["optim/step/xyz"]) == 2.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes_and_meta_device(dtype):
    opt = Adam(lr=0.1)
    p = {"w": torch.ones(3, dtype=dtype)}
    new, state = opt.step(p, {"w": torch.ones(3, dtype=dtype)}, opt.init(p), 0)
    assert new["w"].dtype == dtype and state["optim/exp_avg/w"].dtype == dtype
    assert torch.allclose(new["w"].double(), torch.full((3,), 0.9, dtype=torch.float64), atol=1e-2)
    meta = {"w": torch.empty(2, 2, device="meta")}
    meta_state = opt.init(meta)
    assert all(v.device.type == "meta" for v in meta_state.values())


def test_make_optimizer_and_groups():
    opt = make_optimizer(
        {
            "name": "Adam",
            "lr": 0.01,
            "betas": [0.9, 0.99],
            "eps": 1e-15,
            "groups": [
                {"names": ["background.*"], "lr": 0.001},
                {"names": ["background.mlp", "x"], "lr": 5.0},
            ],
        }
    )
    assert isinstance(opt, Adam) and not isinstance(opt, AdamW)
    assert opt.lr("background.mlp", 0) == 0.001  # first matching group wins
    assert opt.lr("x", 7) == 5.0 and opt.lr("geometry", 0) == 0.01
    assert opt.hyper("geometry")["betas"] == (0.9, 0.99) and opt.hyper("x")["eps"] == 1e-15
    assert isinstance(make_optimizer({"name": "adamw"}), AdamW)
    yaml = OmegaConf.create(
        "name: adamw\nlr: 1e-3\nbetas: [0.9, 0.99]\ngroups:\n  - {names: [enc*], lr: '1e-2'}\n"
    )
    from_yaml = make_optimizer(yaml)
    assert (
        isinstance(from_yaml, AdamW)
        and from_yaml.lr("enc.grid", 0) == 0.01
        and from_yaml.lr("bg", 0) == 0.001
    )
    strict = Adam([{"names": ["a.*"]}], strict=True)
    with pytest.raises(OptimConfigError, match="matches no parameter group"):
        strict.init(_params())


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"name": "rmsprop"}, "unknown optimizer"),
        ({"lr": 0.1}, "unknown optimizer"),
        ({"name": "adam", "lr": -0.1}, "lr must be >= 0"),
        ({"name": "adam", "groups": [{"names": ["a"], "lr": -1.0}]}, "group 0: lr must be >= 0"),
        ({"name": "adam", "betas": [0.9, 1.0]}, r"betas must lie in \[0, 1\)"),
        ({"name": "adamw", "betas": [-0.1, 0.9]}, "betas must lie"),
        ({"name": "adam", "groups": [{"names": ["a"], "betas": [1.5, 0.9]}]}, "betas must lie"),
        ({"name": "adam", "betas": [0.9]}, "two numbers"),
        ({"name": "adam", "eps": -1.0}, "eps"),
        ({"name": "adam", "weight_decay": -1.0}, "weight_decay"),
        ({"name": "adam", "momentum": 0.9}, "unknown option"),
        ({"name": "adam", "groups": [{"names": ["a"], "momentum": 0.9}]}, "does not have"),
        ({"name": "adam", "groups": [{"lr": 0.1}]}, "needs 'names'"),
        ({"name": "adam", "groups": [{"names": []}]}, "non-empty"),
        ({"name": "adam", "groups": [{"names": ["a"], "lrr": 0.1}]}, "unknown parameter-group option"),
        ({"name": "adam", "schedule": {"name": "warp"}}, "unknown schedule"),
        ({"name": "sgd", "nesterov": True}, "nesterov"),
        ({"name": "sgd", "momentum": -0.5}, "momentum"),
        ({"name": "adam", "lr": "fast"}, "lr must be a number"),
        ({"name": "adam", "lr": float("nan")}, "lr must be >= 0"),
    ],
)
def test_bad_optimizer_config(config, fragment):
    with pytest.raises(OptimConfigError, match=fragment):
        make_optimizer(config)


def test_bad_step_inputs():
    opt = Adam()
    params = _params()
    with pytest.raises(OptimConfigError, match=r"opt\.init"):
        opt.step(params, {"b": torch.ones(5)}, {}, 0)
    with pytest.raises(OptimConfigError, match="shape"):
        opt.step(params, {"b": torch.ones(4)}, opt.init(params), 0)
    with pytest.raises(OptimConfigError, match="reserved prefix"):
        opt.init({"optim/x": torch.ones(1)})
