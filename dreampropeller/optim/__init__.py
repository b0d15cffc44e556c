"""Functional optimizers whose state lives inside a flat Picard state.

``opt = make_optimizer({"name": "adam", "lr": 0.01, "groups": [...]})``;
``state = opt.init(params)``; ``params, state = opt.step(params, grads, state, t)`` (pure), or
``x = opt.apply(x, grads, t)`` on a combined state built with ``opt.init_state(params)``.
"""

from .errors import OptimConfigError
from .functional import adam_update, sgd_update
from .groups import ParamGroup
from .optimizers import OPTIMIZERS, SGD, Adam, AdamW, Optimizer, make_optimizer
from .schedules import (
    SCHEDULES,
    Constant,
    Cosine,
    ExpInterp,
    Exponential,
    Linear,
    Schedule,
    make_schedule,
)
from .state import PREFIX, is_optim_key, managed_params, merge_state, param_of, split_state, state_key

__all__ = [
    "OPTIMIZERS",
    "PREFIX",
    "SCHEDULES",
    "SGD",
    "Adam",
    "AdamW",
    "Constant",
    "Cosine",
    "ExpInterp",
    "Exponential",
    "Linear",
    "OptimConfigError",
    "Optimizer",
    "ParamGroup",
    "Schedule",
    "adam_update",
    "is_optim_key",
    "make_optimizer",
    "make_schedule",
    "managed_params",
    "merge_state",
    "param_of",
    "sgd_update",
    "split_state",
    "state_key",
]
