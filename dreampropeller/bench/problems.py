"""Benchmark problems for the Picard engine: each an optimizer-driven process with T >= 1000 steps.

* ``quadratic``: ill-conditioned quadratic (condition number 1e3), Adam.
* ``mlp``: MLP regression of a teacher network, a fresh minibatch every step (seeded per step), Adam.
* ``nonconvex``: chained Rosenbrock function, Adam.
* ``growing``: Fourier-feature regression whose coefficient vector grows every ``k`` steps (the
  optimizer moments grow with it), Adam; exercises index maps inside windows.
* ``mlp-sgd``: the MLP problem with SGD + momentum and a cosine schedule.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from dreampropeller.optim import make_optimizer
from dreampropeller.picard.process import IndexMap, State, Updated
from dreampropeller.picard.rng import StepRandom
from dreampropeller.systems.gradient import DataGradientProcess


@dataclass
class Problem:
    """A process, its start state, its step count and the loss reported for it."""

    name: str
    process: DataGradientProcess
    x0: State
    steps: int
    report_loss: Callable[[State], float]


class Quadratic(DataGradientProcess):
    """``0.5 (x - x*)^T A (x - x*)`` with eigenvalues log-spaced over three decades."""

    def __init__(self, dim: int = 64, seed: int = 0, lr: float = 0.05) -> None:
        gen = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
        eig = torch.logspace(0, 3, dim, dtype=torch.float64)
        self.a = ((q * eig) @ q.T).float()
        self.target = torch.randn(dim, generator=gen)
        opt = {"name": "adam", "lr": lr, "schedule": {"name": "cosine", "total": 1000, "min_factor": 0.01}}
        super().__init__(make_optimizer(opt), ("x",), seed)

    def loss_on(self, params: Mapping[str, torch.Tensor], data: Mapping[str, torch.Tensor]) -> torch.Tensor:
        d = params["x"] - self.target
        return 0.5 * d @ (self.a @ d) / self.a.shape[0]


def _mlp(params: Mapping[str, torch.Tensor], x: torch.Tensor, prefix: str, layers: int) -> torch.Tensor:
    h = x
    for i in range(layers):
        h = h @ params[f"{prefix}{i}.w"] + params[f"{prefix}{i}.b"]
        if i < layers - 1:
            h = torch.tanh(h)
    return h


def _init_mlp(sizes: list[int], gen: torch.Generator, prefix: str) -> dict[str, torch.Tensor]:
    out = {}
    for i, (m, n) in enumerate(itertools.pairwise(sizes)):
        out[f"{prefix}{i}.w"] = torch.randn(m, n, generator=gen) / math.sqrt(m)
        out[f"{prefix}{i}.b"] = torch.zeros(n)
    return out


class MLPRegression(DataGradientProcess):
    """A 2-hidden-layer student fits a random teacher on a fresh minibatch each step."""

    def __init__(self, seed: int = 0, batch: int = 64, optimizer: dict | None = None) -> None:
        gen = torch.Generator().manual_seed(seed + 1)
        self.teacher = _init_mlp([8, 32, 1], gen, "t")
        self.init = _init_mlp([8, 64, 64, 1], gen, "s")
        self.batch = batch
        self.test_x = torch.randn(512, 8, generator=gen)
        opt = optimizer or {
            "name": "adam",
            "lr": 3e-3,
            "schedule": {"name": "cosine", "total": 1000, "min_factor": 0.01},
        }
        super().__init__(make_optimizer(opt), tuple(self.init), seed)

    def data(self, t: int) -> dict[str, torch.Tensor]:
        x = StepRandom(self.seed, t).randn("batch", self.batch, 8)
        return {"x": x, "y": _mlp(self.teacher, x, "t", 2)}

    def loss_on(self, params: Mapping[str, torch.Tensor], data: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return (_mlp(params, data["x"], "s", 3) - data["y"]).square().mean()

    def test_loss(self, x: State) -> float:
        with torch.no_grad():
            y = _mlp(self.teacher, self.test_x, "t", 2)
            return float((_mlp(x, self.test_x, "s", 3) - y).square().mean())


class Rosenbrock(DataGradientProcess):
    """Chained Rosenbrock ``sum 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2`` from a perturbed start."""

    def __init__(self, dim: int = 16, seed: int = 0, lr: float = 2e-3) -> None:
        gen = torch.Generator().manual_seed(seed + 2)
        self.start = -1.0 + 0.2 * torch.randn(dim, generator=gen)
        super().__init__(make_optimizer({"name": "adam", "lr": lr}), ("x",), seed)

    def loss_on(self, params: Mapping[str, torch.Tensor], data: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = params["x"]
        return (100.0 * (x[1:] - x[:-1].square()).square() + (1.0 - x[:-1]).square()).sum()


class GrowingFourier(DataGradientProcess):
    """Fit ``f(u)`` on [0, 1] with Fourier coefficients; ``grow`` more of them every ``every`` steps."""

    def __init__(
        self, seed: int = 0, start: int = 4, grow: int = 4, every: int = 100, batch: int = 128
    ) -> None:
        self.start, self.grow, self.every, self.batch = start, grow, every, batch
        opt = {"name": "adam", "lr": 0.02, "schedule": {"name": "cosine", "total": 1000, "min_factor": 0.01}}
        super().__init__(make_optimizer(opt), ("coef",), seed)
        gen = torch.Generator().manual_seed(seed + 3)
        self.init = {"coef": 0.01 * torch.randn(start, 2, generator=gen)}
        self.test_u = torch.linspace(0, 1, 257)

    @staticmethod
    def target(u: torch.Tensor) -> torch.Tensor:
        return torch.sign(torch.sin(2 * math.pi * u)) * 0.5 + 0.3 * torch.cos(6 * math.pi * u) + 0.2 * u

    def data(self, t: int) -> dict[str, torch.Tensor]:
        u = StepRandom(self.seed, t).rand("batch", self.batch)
        return {"u": u, "y": self.target(u)}

    def loss_on(self, params: Mapping[str, torch.Tensor], data: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return (self.predict(params["coef"], data["u"]) - data["y"]).square().mean()

    @staticmethod
    def predict(coef: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        k = torch.arange(coef.shape[0], dtype=u.dtype)
        phase = 2 * math.pi * u[..., None] * k
        return (torch.cos(phase) * coef[:, 0] + torch.sin(phase) * coef[:, 1]).sum(-1)

    def update(self, x: State, drift: dict[str, torch.Tensor], t: int) -> State | Updated:
        new = self.optimizer.apply(x, drift, t)
        if (t + 1) % self.every != 0:
            return new
        n = new["coef"].shape[0]
        sources = torch.cat([torch.arange(n), torch.full((self.grow,), -1)])
        grown = dict(new)
        maps: dict[str, torch.Tensor] = {}
        for key in ["coef", *self.optimizer.state_keys("coef")]:
            value = new[key]
            if value.dim() == 0 or value.shape[0] != n:
                continue
            pad = torch.zeros(self.grow, *value.shape[1:], dtype=value.dtype)
            grown[key] = torch.cat([value, pad])
            maps[key] = sources
        return Updated(grown, IndexMap(maps))

    def test_loss(self, x: State) -> float:
        with torch.no_grad():
            return float((self.predict(x["coef"], self.test_u) - self.target(self.test_u)).square().mean())


def make_problem(name: str, seed: int = 0, steps: int | None = None) -> Problem:
    """A benchmark problem by name (see the module docstring)."""
    if name == "quadratic":
        p = Quadratic(seed=seed)
        x0 = p.initial_state({"x": torch.zeros(p.a.shape[0])})
        return Problem(name, p, x0, steps or 1000, lambda x: p.objective(x, 0))
    if name in ("mlp", "mlp-sgd"):
        opt = {
            "name": "sgd",
            "lr": 0.05,
            "momentum": 0.9,
            "schedule": {"name": "cosine", "total": steps or 1000},
        }
        p = MLPRegression(seed=seed, optimizer=opt if name == "mlp-sgd" else None)
        return Problem(name, p, p.initial_state(p.init), steps or 1000, p.test_loss)
    if name == "nonconvex":
        p = Rosenbrock(seed=seed)
        return Problem(name, p, p.initial_state({"x": p.start}), steps or 2000, lambda x: p.objective(x, 0))
    if name == "growing":
        p = GrowingFourier(seed=seed)
        return Problem(name, p, p.initial_state(p.init), steps or 1000, p.test_loss)
    raise ValueError(f"unknown benchmark problem {name!r}: use one of {', '.join(PROBLEMS)}")


PROBLEMS = ("quadratic", "mlp", "nonconvex", "growing", "mlp-sgd")
