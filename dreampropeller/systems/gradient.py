"""A Picard process for gradient-based optimization: unit = gradients, update = optimizer step.

Subclasses define ``loss(params, t)`` (every random draw from ``StepRandom(seed, t)``); the state holds
the parameters and the functional optimizer's state, so a Picard rollout replays the optimizer exactly.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from dreampropeller.optim import Optimizer
from dreampropeller.picard.process import Drift, Process, State


class GradientProcess(Process):
    """``x[t+1] = optimizer.step(x[t], grad loss(x[t], t), t)``."""

    def __init__(self, optimizer: Optimizer, param_keys: tuple[str, ...], seed: int = 0) -> None:
        self.optimizer = optimizer
        self.param_keys = tuple(param_keys)
        self.seed = seed

    def loss(self, params: Mapping[str, torch.Tensor], t: int) -> torch.Tensor:
        """The scalar objective of step ``t`` (override)."""
        raise NotImplementedError

    def initial_state(self, params: Mapping[str, torch.Tensor]) -> State:
        """Parameters plus a fresh optimizer state."""
        return self.optimizer.init_state({k: v.detach().clone() for k, v in params.items()})

    def unit(self, x: State, t: int) -> Drift:
        leaves = {k: x[k].detach().requires_grad_(True) for k in self.param_keys}
        with torch.enable_grad():
            loss = self.loss(leaves, t)
            grads = torch.autograd.grad(loss, list(leaves.values()))
        return dict(zip(leaves, grads, strict=True))

    def update(self, x: State, drift: Drift, t: int) -> State:
        return self.optimizer.apply(x, drift, t)

    def objective(self, x: State, t: int) -> float:
        """The loss at state ``x`` for step ``t`` (no gradient), for reports."""
        with torch.no_grad():
            return float(self.loss({k: x[k] for k in self.param_keys}, t))


class DataGradientProcess(GradientProcess):
    """A gradient process whose per-step randomness is a data batch: ``loss = loss_on(params, data(t))``.

    Splitting the draw from the math lets ``unit_batch`` stack the window's parameters and batches and
    compute every slot's gradient in one vectorized call (``torch.func.vmap``).
    """

    def data(self, t: int) -> dict[str, torch.Tensor]:
        """The random inputs of step ``t`` (override; draw only from ``StepRandom(self.seed, t)``)."""
        return {}

    def loss_on(self, params: Mapping[str, torch.Tensor], data: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The objective on one batch (override; pure tensor math, vmappable)."""
        raise NotImplementedError

    def loss(self, params: Mapping[str, torch.Tensor], t: int) -> torch.Tensor:
        return self.loss_on(params, self.data(t))

    def unit_batch(self, xs: list[State], ts: list[int]) -> list[Drift]:
        if len({tuple(x[k].shape for k in self.param_keys) for x in xs}) > 1:
            return [self.unit(x, t) for x, t in zip(xs, ts, strict=True)]
        params = {k: torch.stack([x[k].detach() for x in xs]) for k in self.param_keys}
        batches = [self.data(t) for t in ts]
        data = {k: torch.stack([b[k] for b in batches]) for k in batches[0]} if batches[0] else {}
        grads = torch.func.vmap(torch.func.grad(self.loss_on))(params, data)
        return [{k: grads[k][i] for k in self.param_keys} for i in range(len(xs))]
