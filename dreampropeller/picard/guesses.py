"""Guess generators for the next Picard window (``SolverConfig.guesses``).

``plain`` (the default) is the solver's own: the rollout from the new start on, new slots by ``init``.
``secant`` (:class:`MultiSecantGuesses`) rolls a *model* of the next window out from the new exact
state, with every drift moved to the model state by a multi-secant Jacobian shared by all steps.
Only guesses change: acceptance and every accepted step stay plain Picard, so threshold 0 is exact.

The model, after each iteration whose window had no structure change and no NaN:

1. per step ``t``, the evaluation ``(g_t, d_t, e_t)`` (flattened guess parameters, drift, the guess's
   error in step^2 units). A re-evaluated step gives a same-step pair ``s = g_t - g_t', y = d_t - d_t'``
   (same minibatch / noise, so it cancels). Only *local* pairs (both errors <= ``pair_cap``) are kept,
   the last ``memory`` of them;
2. ``J v = Y a + c (v - S a)``, ``a = (S^T S + ridge)^-1 S^T v`` (Broyden type II on the pairs' span);
   the complement term ``c`` (the pairs' Rayleigh quotient) only while it predicts new pairs better
   than without it (``complement="auto"``);
3. ``z_{i+1} = update(z_i, d_t + J (z_i - g_t), t)`` for steps with a trusted evaluation (error <=
   ``trust``), else from the last trusted step before it; a step whose error grew since its previous
   evaluation keeps its plain drift (``guard``);
4. validation: each re-evaluation scores ``log |d' + J s - d| / |d' - d|``; while its EMA is > 0 the
   solver's plain guesses are used (``validate``).

Cost per iteration: an m x m solve plus O(m N) per slot (N parameters, m <= ``memory``), no units;
the history holds 2 (m + window) float64 vectors of N numbers.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch

from dreampropeller.picard.process import Drift, State, as_updated

GUESSES = ("plain", "secant")


class SecantJacobian:
    """The multi-secant model ``J v = Y a (+ c (v - S a))``, ``a = (S^T S + ridge * mean diag)^-1 S^T v``.

    ``S``, ``Y``: ``[N, m]`` columns of pairs. With ``ridge=0``, ``a`` is the least-squares solution of
    ``S a = v``; ``c = max(0, <S, Y> / <S, S>)`` is the scalar slope used on the complement of span(S).
    """

    def __init__(
        self, S: torch.Tensor, Y: torch.Tensor, ridge: float = 1e-3, complement: bool = False
    ) -> None:
        self.S, self.Y, self.complement = S, Y, complement
        G = S.T @ S
        eye = torch.eye(G.shape[0], dtype=G.dtype)
        self.K = torch.linalg.inv(G + ridge * float(G.diagonal().mean()) * eye)
        self.c = max(0.0, float((S * Y).sum() / (S * S).sum()))

    def coefficients(self, v: torch.Tensor) -> torch.Tensor:
        """``a``: the (regularized) least-squares coordinates of ``v`` in the span of ``S``."""
        return self.K @ (self.S.T @ v)

    def apply(self, v: torch.Tensor, complement: bool) -> torch.Tensor:
        """``J v``, with or without the complement term."""
        a = self.coefficients(v)
        out = self.Y @ a
        return out + self.c * (v - self.S @ a) if complement else out

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return self.apply(v, self.complement)


class MultiSecantGuesses:
    """``guesses="secant"``: :meth:`record` each iteration's evaluations, then :meth:`next_guesses`."""

    def __init__(
        self,
        param_keys: Sequence[str],
        update: Callable[[State, Drift, int], Any],
        memory: int = 32,
        pair_cap: float = 0.3,
        trust: float = 100.0,
        ridge: float = 1e-3,
        complement: str | bool = "auto",
        guard: bool = True,
        validate: bool = True,
    ) -> None:
        self.param_keys = tuple(param_keys)
        self.update = update
        self.memory, self.pair_cap, self.trust, self.ridge = memory, pair_cap, trust, ridge
        self.complement, self.guard, self.validate = complement, guard, validate
        self.c_score = 0.0
        self.j_score = 0.0
        self.reset()

    def reset(self, scores: bool = True) -> None:
        """Forget the history and pairs (a new trajectory, a structure change, a NaN).

        ``scores=False`` keeps the validation scores: they judge the model on this process.
        """
        # step -> (guess vector, drift vector, drift dict, error, previous error at that step)
        self.hist: dict[int, tuple[torch.Tensor, torch.Tensor, Drift, float, float | None]] = {}
        self.pairs: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=self.memory)
        self.keys: tuple[str, ...] = ()
        self.sig: tuple | None = None
        self.J: SecantJacobian | None = None
        if scores:
            self.c_score = 0.0
            self.j_score = 0.0

    # -- flat vectors -------------------------------------------------------------------------------
    def _vec(self, x: State | Drift) -> torch.Tensor:
        return torch.cat([x[k].detach().reshape(-1).double() for k in self.keys])

    def _drift(self, v: torch.Tensor, like: State, base: Drift) -> Drift:
        out, i = dict(base), 0
        for k in self.keys:
            n = like[k].numel()
            out[k] = v[i : i + n].reshape(like[k].shape).to(like[k].dtype)
            i += n
        return out

    # -- 1. history and pairs -----------------------------------------------------------------------
    def record(
        self,
        guesses: Sequence[State],
        drifts: Sequence[Drift],
        rolled: Sequence[State],
        errors: Sequence[float],
        b: int,
    ) -> None:
        """Store the evaluations of the window at ``b`` (errors in step^2 units); form same-step pairs."""
        keys = tuple(k for k in self.param_keys if k in drifts[0] and k in guesses[0])
        sig = tuple((k, tuple(guesses[0][k].shape)) for k in keys)
        if sig != self.sig:
            self.reset(scores=False)
            self.keys, self.sig = keys, sig
        new_pairs = []
        for j in range(min(len(drifts), len(rolled) - 1)):
            g, d = self._vec(guesses[j]), self._vec(drifts[j])
            err = 0.0 if j == 0 else errors[j - 1]
            old = self.hist.get(b + j)
            if old is not None and old[0].shape == g.shape:
                g0, d0, _, e0, _ = old
                s, y = g - g0, d - d0
                finite = bool(torch.isfinite(y).all())
                if self.validate and self.J is not None and e0 <= self.trust and finite:
                    # did the model predict this re-evaluation better than the plain drift?
                    pe, pp = float((self.J(s) - y).norm()), float(y.norm())
                    if pp > 0 and math.isfinite(pe):
                        score = max(min(math.log(pe + 1e-300) - math.log(pp), 5.0), -5.0)
                        self.j_score = 0.9 * self.j_score + 0.1 * score
                if float(s.norm()) > 0 and max(e0, err) <= self.pair_cap and finite:
                    new_pairs.append((s, y))
            self.hist[b + j] = (g, d, drifts[j], err, None if old is None else old[3])
        if self.complement == "auto" and len(self.pairs) >= 2 and new_pairs:
            model = self._model(False)
            for s, y in new_pairs:
                off, on = model.apply(s, False), model.apply(s, True)
                score = math.log(float((on - y).norm()) + 1e-300) - math.log(float((off - y).norm()) + 1e-300)
                self.c_score = 0.9 * self.c_score + 0.1 * score
        self.pairs.extend(new_pairs)

    def forget_before(self, b: int) -> None:
        """Drop the history of steps before ``b`` (accepted: never evaluated again)."""
        for t in [t for t in self.hist if t < b]:
            del self.hist[t]

    # -- 2. the Jacobian ----------------------------------------------------------------------------
    def _model(self, complement: bool) -> SecantJacobian:
        S = torch.stack([s for s, _ in self.pairs], 1)
        Y = torch.stack([y for _, y in self.pairs], 1)
        return SecantJacobian(S, Y, self.ridge, complement)

    def jacobian(self) -> SecantJacobian | None:
        """The current model (``None`` without pairs)."""
        if not self.pairs:
            return None
        use_c = self.c_score < 0 if self.complement == "auto" else bool(self.complement)
        return self._model(use_c)

    # -- 3. the model rollout -----------------------------------------------------------------------
    def next_guesses(self, rolled: Sequence[State], accepted: int, b: int, n_next: int) -> list[State] | None:
        """Guesses for the window ``[b + accepted, b + accepted + n_next)``; slot 0 is the exact state.

        May be shorter than ``n_next`` (the solver fills it); ``None`` while validation says the model
        predicts worse than the plain drift (the solver then makes its plain guesses).
        """
        J = self.jacobian()
        self.J = J
        if self.validate and self.j_score > 0:
            return None
        start = b + accepted
        trusted = sorted(t for t, h in self.hist.items() if h[3] <= self.trust)
        z = rolled[accepted]
        out = [z]
        last: int | None = None
        for i in range(n_next - 1):
            t = start + i
            h = self.hist.get(t)
            if h is not None and h[3] <= self.trust:
                last = t
                g, dv, base, err, before = h
                guarded = self.guard and before is not None and not err < before
                if J is None or guarded:
                    d = self._drift(dv, z, base)
                else:
                    d = self._drift(dv + J(self._vec(z) - g), z, base)
            else:
                if last is None:
                    last = max((s for s in trusted if s <= t), default=trusted[0] if trusted else None)
                if last is None:
                    break
                g, dv, base, _, _ = self.hist[last]
                d = self._drift(dv if J is None else dv + J(self._vec(z) - g), z, base)
            res = as_updated(self.update(z, d, t))
            if res.index_map or not all(bool(torch.isfinite(res.state[k]).all()) for k in self.keys):
                break  # a structure change or a diverging model: the solver fills the rest
            z = res.state
            out.append(z)
        return out
