"""Functional optimizers whose state lives in a flat Picard state: SGD, Adam, AdamW.

``opt.init(params)`` creates the state, ``opt.step(params, grads, opt_state, t)`` returns new
parameters and new state and never touches its inputs. Per parameter the state holds row-shaped
slots (moments, shaped like the parameter) and a scalar step count (float32, like torch), so
rows added by densification start with zero moments under the parameter's running step count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from .errors import OptimConfigError
from .functional import adam_update, sgd_update
from .groups import ParamGroup, first_match
from .schedules import Schedule, make_schedule
from .state import STEP, is_optim_key, merge_state, split_state, state_key

Hyper = dict[str, Any]
_FLOAT_KEYS = {"lr", "weight_decay", "eps", "momentum", "dampening"}


class Optimizer:
    """Base class: parameter groups, lr schedules, state layout; subclasses supply the math."""

    name: ClassVar[str] = ""
    defaults: ClassVar[Hyper] = {}  # hyper-parameters besides lr and schedule, with torch's defaults

    def __init__(
        self,
        groups: Sequence[ParamGroup | Mapping[str, Any]] = (),
        *,
        lr: float = 1e-3,
        schedule: Schedule | Mapping[str, Any] | str | None = None,
        strict: bool = False,
        **hyper: Any,
    ) -> None:
        unknown = sorted(set(hyper) - set(self.defaults))
        if unknown:
            raise OptimConfigError(
                f"unknown option(s) {unknown} for optimizer {self.name!r}; allowed: {sorted(self.defaults)}"
            )
        base = {**self.defaults, **hyper, "lr": lr, "schedule": make_schedule(schedule)}
        self._default = self._resolve(base, "defaults")
        self.groups = tuple(ParamGroup.from_config(g) for g in groups)
        self._group_hyper = tuple(
            self._resolve({**self._default, **self._overrides(g, i)}, f"group {i}")
            for i, g in enumerate(self.groups)
        )
        self.strict = strict
        self._cache: dict[str, Hyper] = {}

    # ---- configuration -------------------------------------------------------------------------

    def _overrides(self, group: ParamGroup, index: int) -> Hyper:
        overrides = group.overrides()
        bad = sorted(set(overrides) - set(self.defaults) - {"lr", "schedule"})
        if bad:
            raise OptimConfigError(f"group {index} sets {bad}, which optimizer {self.name!r} does not have")
        return overrides

    def _resolve(self, hyper: Hyper, where: str) -> Hyper:
        for key in _FLOAT_KEYS & set(hyper):
            try:
                hyper[key] = float(hyper[key])
            except (TypeError, ValueError):
                raise OptimConfigError(
                    f"{self.name} {where}: {key} must be a number, got {hyper[key]!r}"
                ) from None
        for key in ("lr", "weight_decay", "eps", "momentum"):
            if key in hyper and not hyper[key] >= 0:
                raise OptimConfigError(f"{self.name} {where}: {key} must be >= 0, got {hyper[key]}")
        self._validate(hyper, where)
        return hyper

    def _validate(self, hyper: Hyper, where: str) -> None:
        """Check optimizer-specific hyper-parameters (raise :class:`OptimConfigError`)."""

    def hyper(self, name: str) -> Hyper:
        """The resolved hyper-parameters (lr, schedule, ...) of parameter ``name``."""
        found = self._cache.get(name)
        if found is None:
            index = first_match(self.groups, name)
            if index < 0 and self.strict:
                raise OptimConfigError(
                    f"parameter {name!r} matches no parameter group and the optimizer is strict; "
                    "add a group for it or set strict=False"
                )
            found = self._group_hyper[index] if index >= 0 else self._default
            self._cache[name] = found
        return found

    def lr(self, name: str, t: int) -> float:
        """Learning rate of parameter ``name`` at Picard step ``t``."""
        h = self.hyper(name)
        return h["schedule"].lr(h["lr"], t)

    # ---- state layout --------------------------------------------------------------------------

    def slots(self, name: str) -> tuple[str, ...]:
        """Names of the row-shaped state slots of parameter ``name``."""
        raise NotImplementedError

    def state_keys(self, name: str) -> list[str]:
        """Optimizer-state keys shaped like parameter ``name`` (they share its leading dimension)."""
        return [state_key(slot, name) for slot in self.slots(name)]

    def step_key(self, name: str) -> str:
        """Key of the scalar step count of parameter ``name``."""
        return state_key(STEP, name)

    def init(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Fresh optimizer state for ``params``: zero slots and zero step counts."""
        out: dict[str, Tensor] = {}
        for name, p in params.items():
            if is_optim_key(name):
                raise OptimConfigError(
                    f"parameter name {name!r} uses the reserved prefix 'optim/'; rename it"
                )
            for key in self.state_keys(name):
                out[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
            out[self.step_key(name)] = torch.zeros((), dtype=torch.float32, device=p.device)
        return out

    def remap_rows(self, opt_state: Mapping[str, Tensor], name: str, sources: Tensor) -> dict[str, Tensor]:
        """Row slots of ``name`` carried through a structure change (new row i <- old row sources[i]).

        Rows with ``sources == -1`` start at zero; the step count is kept. Returns only the remapped
        entries (row slots and step), as new tensors.
        """
        out: dict[str, Tensor] = {}
        valid = sources >= 0
        for key in self.state_keys(name):
            old = opt_state[key]
            new = old.new_zeros((sources.shape[0], *old.shape[1:]))
            new[valid] = old[sources[valid]]
            out[key] = new
        out[self.step_key(name)] = opt_state[self.step_key(name)].clone()
        return out

    # ---- stepping ------------------------------------------------------------------------------

    def _update(
        self, param: Tensor, grad: Tensor, slots: dict[str, Tensor], step: float, lr: float, h: Hyper
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Math of one step for one parameter; ``step`` is the count after this step (1 first)."""
        raise NotImplementedError

    @torch.no_grad()
    def step(
        self,
        params: Mapping[str, Tensor],
        grads: Mapping[str, Tensor | None],
        opt_state: Mapping[str, Tensor],
        t: int,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Step ``t`` (0-based): new parameters and new optimizer state; inputs are left untouched.

        A parameter whose grad is ``None`` or missing keeps its value and state (like torch.optim);
        grads for names not in ``params`` are ignored. Every returned tensor is new storage.
        """
        new_params: dict[str, Tensor] = {}
        new_state: dict[str, Tensor] = {}
        for name, p in params.items():
            grad = grads.get(name)
            if grad is None:
                self.hyper(name)  # a strict optimizer still rejects unmatched names
                new_params[name] = p.detach().clone()
                continue
            if grad.shape != p.shape:
                raise OptimConfigError(
                    f"grad of {name!r} has shape {tuple(grad.shape)}, parameter {tuple(p.shape)}"
                )
            keys = self.state_keys(name)
            step_key = self.step_key(name)
            missing = [k for k in (*keys, step_key) if k not in opt_state]
            if missing:
                raise OptimConfigError(f"optimizer state lacks {missing}; create it with opt.init(params)")
            slots = {slot: opt_state[key] for slot, key in zip(self.slots(name), keys)}
            count = opt_state[step_key]
            h = self.hyper(name)
            new_p, new_slots = self._update(
                p.detach(), grad.detach(), slots, float(count.item()) + 1.0, self.lr(name, t), h
            )
            new_params[name] = new_p
            for slot, key in zip(self.slots(name), keys):
                new_state[key] = new_slots[slot]
            new_state[step_key] = count + 1
        for key, value in opt_state.items():
            if key not in new_state:
                new_state[key] = value.detach().clone()
        return new_params, new_state

    def apply(self, x: Mapping[str, Tensor], grads: Mapping[str, Tensor | None], t: int) -> dict[str, Tensor]:
        """Step a combined flat state (parameters + optimizer state + other entries, all copied).

        The parameters are those with optimizer state (see :func:`managed_params`); other entries
        of ``x`` come back as copies. This is the usual body of a Picard ``update``.
        """
        params, opt_state, rest = split_state(x)
        new_params, new_state = self.step(params, grads, opt_state, t)
        return merge_state(new_params, new_state, {k: v.detach().clone() for k, v in rest.items()})

    def init_state(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """A combined flat state: copies of ``params`` plus fresh optimizer state."""
        return merge_state({k: v.detach().clone() for k, v in params.items()}, self.init(params))


def _check_betas(betas: Any, where: str, name: str) -> tuple[float, float]:
    try:
        b1, b2 = (float(b) for b in betas)
    except (TypeError, ValueError):
        raise OptimConfigError(f"{name} {where}: betas must be two numbers, got {betas!r}") from None
    if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
        raise OptimConfigError(f"{name} {where}: betas must lie in [0, 1), got ({b1}, {b2})")
    return b1, b2


class SGD(Optimizer):
    """SGD with momentum, dampening, Nesterov and L2 weight decay (torch.optim.SGD)."""

    name: ClassVar[str] = "sgd"
    defaults: ClassVar[Hyper] = {"momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0}

    def _validate(self, hyper: Hyper, where: str) -> None:
        if hyper["nesterov"] and (hyper["momentum"] <= 0 or hyper["dampening"] != 0):
            raise OptimConfigError(f"sgd {where}: nesterov needs momentum > 0 and dampening 0")

    def slots(self, name: str) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.hyper(name)["momentum"] != 0 else ()

    def _update(self, param, grad, slots, step, lr, h):
        new_p, buf = sgd_update(
            param,
            grad,
            slots.get("momentum_buffer"),
            first=step == 1.0,
            lr=lr,
            momentum=h["momentum"],
            dampening=h["dampening"],
            nesterov=h["nesterov"],
            weight_decay=h["weight_decay"],
        )
        return new_p, ({"momentum_buffer": buf} if buf is not None else {})


class Adam(Optimizer):
    """Adam with L2 weight decay and optional AMSGrad (torch.optim.Adam)."""

    name: ClassVar[str] = "adam"
    decoupled: ClassVar[bool] = False
    defaults: ClassVar[Hyper] = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False}

    def _validate(self, hyper: Hyper, where: str) -> None:
        hyper["betas"] = _check_betas(hyper["betas"], where, self.name)

    def slots(self, name: str) -> tuple[str, ...]:
        base = ("exp_avg", "exp_avg_sq")
        return (*base, "max_exp_avg_sq") if self.hyper(name)["amsgrad"] else base

    def _update(self, param, grad, slots, step, lr, h):
        beta1, beta2 = h["betas"]
        new_p, m, v, vmax = adam_update(
            param,
            grad,
            slots["exp_avg"],
            slots["exp_avg_sq"],
            slots.get("max_exp_avg_sq") if h["amsgrad"] else None,
            step=step,
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            eps=h["eps"],
            weight_decay=h["weight_decay"],
            decoupled=self.decoupled,
        )
        out = {"exp_avg": m, "exp_avg_sq": v}
        if vmax is not None:
            out["max_exp_avg_sq"] = vmax
        return new_p, out


class AdamW(Adam):
    """Adam with decoupled weight decay (torch.optim.AdamW; default weight_decay 1e-2)."""

    name: ClassVar[str] = "adamw"
    decoupled: ClassVar[bool] = True
    defaults: ClassVar[Hyper] = {**Adam.defaults, "weight_decay": 1e-2}


OPTIMIZERS: dict[str, type[Optimizer]] = {cls.name: cls for cls in (SGD, Adam, AdamW)}


def make_optimizer(config: Mapping[str, Any]) -> Optimizer:
    """An optimizer from a config mapping.

    Example: ``{"name": "adam", "lr": 0.01, "betas": [0.9, 0.99], "eps": 1e-15,
    "schedule": {"name": "cosine", "total": 1000}, "groups": [{"names": ["background.*"], "lr": 0.001}]}``.
    """
    if not isinstance(config, Mapping):
        raise OptimConfigError(
            f"optimizer config must be a mapping with a 'name', got {type(config).__name__}"
        )
    options = dict(config)
    name = options.pop("name", None)
    cls = OPTIMIZERS.get(str(name).lower()) if name is not None else None
    if cls is None:
        raise OptimConfigError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}")
    groups = options.pop("groups", None) or ()
    return cls(list(groups), **options)
