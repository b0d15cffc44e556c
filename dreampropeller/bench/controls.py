"""Negative controls for acceptance rules: processes whose speculative guesses are never right.

A sound acceptance rule must give them about one step per Picard iteration (the exact step): any
speedup it reports on them is speedup by construction, not by convergence.

* ``noise``: the drift is Gaussian noise keyed on a hash of the state's bytes and the step, so a
  guess that differs from the rollout in any bit gets an unrelated drift.
* ``chaotic``: the drift is ``sin(k * x)`` with a large ``k`` plus a weak pull to the origin: smooth
  in principle, but a change of one step in ``x`` turns the phase by many radians.

Both step with Adam (momentum shares most of the step between neighbouring drifts, which is what
makes a loose rule accept them) and report the mean squared parameter as their "loss".
"""

from __future__ import annotations

import hashlib

import torch

from dreampropeller.optim import make_optimizer
from dreampropeller.picard.process import Drift, Process, State

CONTROLS = ("noise", "chaotic")


class _AdamControl(Process):
    """Adam on one parameter vector ``x``; subclasses define the drift."""

    param_keys = ("x",)

    def __init__(self, dim: int = 64, seed: int = 0, lr: float = 0.01) -> None:
        self.dim, self.seed = dim, seed
        self.optimizer = make_optimizer({"name": "adam", "lr": lr})

    def initial_state(self) -> State:
        gen = torch.Generator().manual_seed(self.seed)
        return self.optimizer.init_state({"x": torch.randn(self.dim, generator=gen)})

    def update(self, x: State, drift: Drift, t: int) -> State:
        return self.optimizer.apply(x, drift, t)

    @staticmethod
    def report_loss(x: State) -> float:
        return float(x["x"].double().square().mean())


class HashNoise(_AdamControl):
    """Drift = standard normal noise seeded by a hash of ``(x, t)``."""

    def unit(self, x: State, t: int) -> Drift:
        digest = hashlib.blake2b(x["x"].detach().cpu().numpy().tobytes(), digest_size=8)
        digest.update(int(t).to_bytes(8, "little"))
        digest.update(int(self.seed).to_bytes(8, "little"))
        gen = torch.Generator().manual_seed(int.from_bytes(digest.digest(), "little") & (2**63 - 1))
        return {"x": torch.randn(self.dim, generator=gen)}


class Chaotic(_AdamControl):
    """Drift = ``sin(k x) + 0.1 x``: a step of ``lr`` turns the phase by ``k * lr`` radians."""

    def __init__(self, dim: int = 64, seed: int = 0, lr: float = 0.01, k: float = 1e4) -> None:
        super().__init__(dim, seed, lr)
        self.k = k

    def unit(self, x: State, t: int) -> Drift:
        v = x["x"].double()
        return {"x": (torch.sin(self.k * v) + 0.1 * v).to(x["x"].dtype)}


def make_control(name: str, seed: int = 0) -> _AdamControl:
    """A negative control by name (see the module docstring)."""
    if name == "noise":
        return HashNoise(seed=seed)
    if name == "chaotic":
        return Chaotic(seed=seed)
    raise ValueError(f"unknown negative control {name!r}: use one of {', '.join(CONTROLS)}")
