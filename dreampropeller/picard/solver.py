"""Generalized Picard iteration with a sliding window (DreamPropeller, arXiv 2311.17082).

Window ``[b, b+n)``, ``x[b]`` exact. Each iteration:

1. evaluate the units of every guess in the window (the executor decides how);
2. roll out from the exact ``x[b]``: ``y[t+1] = update(y[t], d[t], t)``;
3. errors ``e[t] = distance(y[t], guess[t])`` for ``t`` in ``(b, b+n)``;
4. the new start is the first ``t`` whose error exceeds the threshold, else ``b+n``; ``y`` there is
   exact because every drift before it came from an accepted guess (so progress >= 1 step);
5. guesses from the new start on become the rollout; new slots move the last rolled-out parameters
   on by the last rolled-out step (``velocity``, the default), copy the last rolled-out state
   (``copy``, the authors' rule) or continue it with the last drift (``extrapolate``).

Acceptance. Errors are measured in units of the window's exact first step (``scale="step"``: the
squared distance of a guess from the rollout divided by the squared length of the step from ``x[b]``
to ``x[b+1]``). The default rule is a fixed tolerance in those units, ODE-solver style
(``error <= threshold + atol / step^2``): its meaning does not depend on the errors it judges, so a
process whose guesses are never right gets ~1 step per iteration. The authors' adaptive rule
(``thr <- ema * thr + (1 - ema) * agg(errors)``, :mod:`dreampropeller.picard.threshold`) is kept as
``SolverConfig.paper()``; it accepts about half of every window whatever the errors are.

Structure changes (``update`` returning an :class:`IndexMap`) stop the rollout where a guess no longer
fits (infinite error); the guesses after it are carried through the map exactly. With a fixed
threshold of 0 the result equals the sequential run bit for bit, optimizer state included, with the
sequential, devices and distributed executors; the batched executor's one call per window sums in
another order and agrees within 1e-5.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from dreampropeller.picard.executors import Executor
from dreampropeller.picard.guesses import GUESSES, MultiSecantGuesses
from dreampropeller.picard.process import (
    Drift,
    IndexMap,
    PicardError,
    Process,
    State,
    as_updated,
    clone_state,
    map_rows,
    match_changes,
    matched_rows,
    shapes_of,
)
from dreampropeller.picard.threshold import AGGREGATES, AdaptiveThreshold

INITS = ("copy", "extrapolate", "velocity")
SCALES = ("none", "step")

DEFAULT_TOLERANCE = 0.15
"""The sound default: a guess is accepted when its squared distance from the rollout is at most 0.15
of the exact step's squared length (0.39 of a step). The largest tolerance at which the negative
controls accept no speculative step (0.2 lets a few through, 0.25 gives 1.25x); every bench problem
stays within 1% of its sequential loss (docs/acceptance.md)."""

PAPER_RULE: dict[str, Any] = {"threshold": None, "adaptive": True, "aggregate": "middle", "init": "copy"}
"""The DreamPropeller authors' rule: adaptive EMA of the window-middle error started from the first
window, new slots copied from the last rolled-out state. Kept to reproduce the paper, never the default."""


@dataclass
class SolverConfig:
    """Knobs of the solver.

    The default is the sound rule: a fixed tolerance ``threshold`` in units of the exact step's squared
    length, plus ``atol`` in the process's own distance units (``error <= threshold + atol / step^2``).
    ``adaptive=True`` switches to the authors' EMA rule (``threshold`` is then its start value;
    ``None`` starts from the first window's aggregated error); :meth:`paper` builds that rule.
    ``init`` makes the guesses of new slots; ``linearize=True`` re-rolls the rejected part of each
    window with secant-linearized drifts (quasi-DEER / Parareal style, no extra units), for better
    guesses in the next window; accepted steps are never changed by it. ``guesses`` makes the next
    window's guesses: ``plain`` (the rollout, new slots by ``init``) or ``secant`` (a model rollout
    with a multi-secant drift Jacobian, :class:`~dreampropeller.picard.guesses.MultiSecantGuesses`;
    it contains ``linearize``, so the two are exclusive).
    """

    window: int = 8
    threshold: float | None = DEFAULT_TOLERANCE
    adaptive: bool = False
    ema: float = 0.9
    aggregate: str = "middle"
    init: str = "velocity"
    scale: str = "step"
    max_threshold: float = math.inf
    atol: float = 0.0
    damping: float = 1.0
    linearize: bool = False
    guesses: str = "plain"

    @classmethod
    def paper(cls, window: int = 8, **kwargs: Any) -> SolverConfig:
        """The DreamPropeller authors' rule (:data:`PAPER_RULE`); ``kwargs`` override its knobs."""
        return cls(window=window, **{**PAPER_RULE, **kwargs})

    @property
    def rule(self) -> str:
        """A short name of the acceptance rule (for reports)."""
        if self.adaptive:
            return f"ema-{self.aggregate}"
        return f"tol={self.threshold:g}" + (f"+atol={self.atol:g}" if self.atol else "")

    def __post_init__(self) -> None:
        if not isinstance(self.window, int) or self.window < 1:
            raise PicardError(f"window must be an integer >= 1, got {self.window!r}")
        if self.threshold is not None and (not math.isfinite(self.threshold) or self.threshold < 0):
            raise PicardError(f"threshold must be a finite number >= 0, got {self.threshold!r}")
        if not 0.0 <= self.ema < 1.0:
            raise PicardError(f"ema must be in [0, 1), got {self.ema!r}")
        if self.aggregate not in AGGREGATES:
            raise PicardError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {self.aggregate!r}")
        if self.init not in INITS:
            raise PicardError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.scale not in SCALES:
            raise PicardError(f"scale must be one of {', '.join(SCALES)}, got {self.scale!r}")
        if self.threshold is None and not self.adaptive:
            raise PicardError("a fixed threshold (adaptive=False) needs a threshold value, e.g. 0")
        if not math.isfinite(self.atol) or self.atol < 0:
            raise PicardError(f"atol must be a finite number >= 0, got {self.atol!r}")
        if self.guesses not in GUESSES:
            raise PicardError(f"guesses must be one of {', '.join(GUESSES)}, got {self.guesses!r}")
        if self.guesses != "plain" and self.linearize:
            raise PicardError(f"linearize applies to guesses='plain' ({self.guesses!r} contains it)")


@dataclass
class SolverStats:
    """What a run did and where its time went."""

    steps: int = 0
    start: int = 0
    iterations: int = 0
    unit_evals: int = 0
    units_s: float = 0.0
    rollout_s: float = 0.0
    bookkeeping_s: float = 0.0
    comm_s: float = 0.0
    wall_s: float = 0.0
    status: str = "running"
    accepted: list[int] = field(default_factory=list)
    thresholds: list[float] = field(default_factory=list)
    errors: list[list[float]] = field(default_factory=list)

    @property
    def rounds_speedup(self) -> float:
        """Steps advanced per Picard iteration (the machine-independent speedup)."""
        done = sum(self.accepted)
        return done / self.iterations if self.iterations else 1.0

    def to_dict(self, traces: bool = True) -> dict[str, Any]:
        """JSON-ready summary (errors as ``None`` where infinite)."""
        out = asdict(self)
        out["rounds_speedup"] = self.rounds_speedup
        if traces:
            out["errors"] = [[e if math.isfinite(e) else None for e in row] for row in self.errors]
        else:
            for key in ("accepted", "thresholds", "errors"):
                out.pop(key)
        return out


@dataclass
class IterationInfo:
    """Passed to the solver's callback after each iteration (``state`` is the exact state at ``step``)."""

    iteration: int
    step: int
    steps: int
    accepted: int
    threshold: float
    errors: list[float]
    state: State
    stats: SolverStats
    solver_state: dict[str, Any] = field(default_factory=dict)
    """What a checkpoint taken now must store to resume exactly (see :meth:`PicardSolver.state_dict`)."""


@dataclass
class SolverResult:
    """The exact state reached, its step, and the run's stats.

    ``stats.status`` is ``done``, ``nan`` (a unit at an exact step returned NaN/Inf: ``state`` is the last
    exact state before it), ``interrupted`` (Ctrl-C: ``state`` is the last exact state) or ``fault``
    (the executor raised an exception marked ``resumable``, e.g. a lost rank: ``state`` is the last
    exact state and ``fault`` the message; resume with ``run(state, steps, start=step)``).
    """

    state: State
    step: int
    stats: SolverStats
    fault: str | None = None
    solver_state: dict[str, Any] = field(default_factory=dict)
    """The solver's resumable state at the end (:meth:`PicardSolver.state_dict`: the threshold)."""


def _finite(d: Drift) -> bool:
    if not d:
        return True
    return bool(torch.stack([torch.isfinite(v).all() for v in d.values()]).all())


class PicardSolver:
    """Runs a :class:`Process` for ``steps`` steps with a sliding Picard window."""

    def __init__(
        self,
        process: Process,
        config: SolverConfig | None = None,
        executor: Executor | None = None,
        callback: Callable[[IterationInfo], None] | None = None,
    ) -> None:
        self.process = process
        self.config = config or SolverConfig()
        self.executor = executor or Executor()
        self.callback = callback
        self.threshold = AdaptiveThreshold(
            self.config.threshold,
            self.config.adaptive,
            self.config.ema,
            self.config.aggregate,
            self.config.max_threshold,
        )
        self._step2: float | None = None
        self._secants: dict[int, tuple[State, Drift, float]] = {}
        keys = getattr(process, "unit_keys", ()) or ()
        self._unit_buffers = tuple(k for k in keys if k not in set(process.param_keys))
        self._guesser = (
            MultiSecantGuesses(process.param_keys, process.update)
            if self.config.guesses == "secant"
            else None
        )

    # -- validation -------------------------------------------------------------------------------
    def _check_initial(self, x0: State) -> None:
        if not isinstance(x0, dict) or not all(isinstance(v, torch.Tensor) for v in x0.values()):
            raise PicardError("the initial state must be a dict of name -> torch.Tensor")
        missing = [k for k in self.process.param_keys if k not in x0]
        if missing:
            raise PicardError(f"the state lacks parameter(s) {missing} named by the process's param_keys")
        try:
            d0 = self.process.distance(x0, x0)
        except Exception as err:
            raise PicardError(
                f"distance() cannot compare the initial state with itself ({type(err).__name__}: {err}); "
                "make the state's keys and shapes agree with the distance function"
            ) from err
        if not isinstance(d0, float | int) or not math.isfinite(d0) or d0 != 0:
            raise PicardError(f"distance(x0, x0) must be 0.0, got {d0!r}: check the distance function")

    def _distance(self, rolled: State, guess: State, t: int) -> float:
        if shapes_of(rolled) != shapes_of(guess):
            return math.inf
        # buffers a unit reads besides the parameters (e.g. an occupancy grid): a guess whose unit saw
        # other buffers than the rollout's computed another function, however close its parameters
        for k in self._unit_buffers:
            if k in rolled and not torch.equal(rolled[k], guess[k]):
                return math.inf
        try:
            return float(self.process.distance(rolled, guess))
        except Exception as err:
            raise PicardError(
                f"distance() failed comparing the guess for step {t} with the rollout "
                f"({type(err).__name__}: {err})"
            ) from err

    def _exact_step(self, rolled: list[State], maps: list[tuple[State, State, IndexMap]]) -> float | None:
        """Squared length of the exact first step ``x[b] -> x[b+1]``; ``None`` when it has none.

        When that step changed structure, it is measured on the matched rows (each new row against
        its source row; rows with no source left out), so the scale keeps its unit.
        """
        if len(rolled) < 2:
            return None
        before, after = rolled[0], rolled[1]
        try:
            if shapes_of(before) == shapes_of(after):
                return float(self.process.distance(after, before))
            index_map = next((m for b, a, m in maps if b is before and a is after), None)
            if index_map is None:
                return None
            return float(self.process.distance(*matched_rows(before, after, index_map)))
        except Exception:  # a custom distance that cannot compare row subsets: no scale this window
            return None

    def _scaled(
        self, errors: list[float], rolled: list[State], maps: list[tuple[State, State, IndexMap]]
    ) -> tuple[list[float], float]:
        """Errors in units of the exact first step's squared length (``scale="step"``), or as measured.

        Returns the errors and the extra allowance ``atol`` in the same unit. Only the exact step sets
        the scale: speculative steps can be arbitrarily large (a guess far off). A window whose exact
        step has no usable length (zero, or a structure change the distance cannot match) takes the
        last usable one; with none known yet its guesses are judged as infinitely far (never accepted).
        """
        if self.config.scale == "none":
            return errors, self.config.atol
        step2 = self._exact_step(rolled, maps)
        if step2 is not None and math.isfinite(step2) and step2 > 0:
            self._step2 = step2
        scale = self._step2
        if scale is None:
            return [0.0 if e == 0 else math.inf for e in errors], 0.0
        return [e / scale for e in errors], self.config.atol / scale

    # -- resumable state --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The solver's own resumable state (JSON-ready): the threshold and the last step scale."""
        return {"threshold": self.threshold.value, "step_scale": self._step2}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (missing entries keep their configured values).

        Only the adaptive rule's threshold is state; a fixed tolerance is configuration, so a run
        resumed with another ``--threshold`` uses the one it is given.
        """
        if self.config.adaptive and state.get("threshold") is not None:
            self.threshold.value = float(state["threshold"])
        if state.get("step_scale") is not None:
            self._step2 = float(state["step_scale"])

    def _update(self, x: State, d: Drift, t: int, check_inplace: bool) -> tuple[State, IndexMap | None]:
        versions = {k: v._version for k, v in x.items()} if check_inplace else None
        result = as_updated(self.process.update(x, d, t))
        if versions is not None:
            changed = [k for k, v in x.items() if v._version != versions[k]]
            if changed:
                raise PicardError(
                    f"update() modified its input state in place (keys {changed[:3]}): return new tensors"
                )
        return result.state, (result.index_map or None)

    # -- the iteration ----------------------------------------------------------------------------
    def run(self, x0: State, steps: int, start: int = 0) -> SolverResult:
        """Advance the exact state ``x0`` at step ``start`` to step ``steps``."""
        if not isinstance(steps, int) or steps < 0:
            raise PicardError(f"steps must be an integer >= 0, got {steps!r}")
        if not 0 <= start <= steps:
            raise PicardError(f"start must be in [0, steps], got {start} for {steps} steps")
        self._check_initial(x0)
        self._secants = {}  # secants belong to one trajectory
        if self._guesser is not None:
            self._guesser.reset()  # so does the guess model
        stats = SolverStats(steps=steps, start=start)
        p = self.config.window
        self.executor.bind(self.process)
        comm0 = self.executor.comm_seconds
        exact = clone_state(x0)
        b = start
        guesses: list[State] = [exact]
        last_drift: Drift | None = None
        velocity: State | None = None
        previous_maps: list[tuple[State, State, IndexMap]] = []
        fault: str | None = None
        t_wall = time.perf_counter()
        try:
            while b < steps:
                n = min(p, steps - b)
                t0 = time.perf_counter()
                guesses = self._fill(guesses, n, b, last_drift, velocity)
                t1 = time.perf_counter()
                drifts = self.executor.evaluate(self.process, guesses[:n], list(range(b, b + n)))
                t2 = time.perf_counter()
                stats.units_s += t2 - t1
                stats.unit_evals += n
                rolled, errors, bad_at, maps = self._rollout(guesses, drifts, b, check=stats.iterations == 0)
                t3 = time.perf_counter()
                stats.rollout_s += t3 - t2
                errors, allowance = self._scaled(errors, rolled, maps)
                thr = self.threshold.current(errors) + allowance
                accepted = len(rolled) - 1
                for j, e in enumerate(errors, start=1):
                    if e > thr:
                        accepted = j
                        break
                if bad_at is not None and all(e <= thr for e in errors[:bad_at]):
                    # the unit at an exact step returned NaN/Inf: the sequential run fails here too
                    exact, b = rolled[bad_at], b + bad_at
                    stats.accepted.append(bad_at)
                    stats.iterations += 1
                    stats.status = "nan"
                    break
                self.threshold.observe(errors)
                stats.iterations += 1
                stats.accepted.append(accepted)
                stats.thresholds.append(thr)
                stats.errors.append(errors)
                exact = rolled[accepted]
                accept = getattr(self.process, "accept", None)
                if accept is not None:
                    accept(b, accepted)  # state kept outside the fixed point learns which steps count
                t4 = time.perf_counter()
                modelled = None
                if self._guesser is not None:
                    modelled = self._model_guesses(
                        guesses, drifts, rolled, errors, b, accepted, steps, maps, bad_at
                    )
                elif self.config.linearize and not maps and bad_at is None:
                    rolled = self._relinearize(rolled, guesses, drifts, errors, b, accepted)
                guess_s = time.perf_counter() - t4
                stats.rollout_s += guess_s
                t3 += guess_s  # counted as rollout, not bookkeeping
                last_drift = drifts[len(rolled) - 2] if len(rolled) >= 2 else None
                velocity = self._velocity(rolled, maps, velocity)
                if modelled is not None:
                    guesses = modelled  # _fill completes a short one
                else:
                    guesses = self._slide(guesses, rolled, accepted, maps, previous_maps)
                previous_maps = maps
                b += accepted
                if self._guesser is not None:
                    self._guesser.forget_before(b)
                self._secants = {t: v for t, v in self._secants.items() if t > b}
                stats.bookkeeping_s += (t1 - t0) + (time.perf_counter() - t3)
                if stats.iterations > steps - start + 1:  # cannot happen: progress >= 1 per iteration
                    raise RuntimeError("Picard solver exceeded its iteration cap")
                if self.callback is not None:
                    self.callback(
                        IterationInfo(
                            stats.iterations, b, steps, accepted, thr, errors, exact, stats, self.state_dict()
                        )
                    )
            else:
                stats.status = "done"
        except KeyboardInterrupt:
            stats.status = "interrupted"
        except Exception as err:
            if not getattr(err, "resumable", False):
                raise
            # an executor fault (a lost rank): the last exact state is intact and resumable
            stats.status = "fault"
            fault = f"{type(err).__name__}: {err}"
        stats.wall_s = time.perf_counter() - t_wall
        stats.comm_s = self.executor.comm_seconds - comm0
        return SolverResult(exact, b, stats, fault, self.state_dict())

    def _rollout(
        self, guesses: list[State], drifts: list[Drift], b: int, check: bool
    ) -> tuple[list[State], list[float], int | None, list[tuple[State, State, IndexMap]]]:
        """Roll out from the exact ``guesses[0]``; stop at a non-finite drift or a misfit guess."""
        rolled = [guesses[0]]
        errors: list[float] = []
        maps: list[tuple[State, State, IndexMap]] = []
        for j, d in enumerate(drifts):
            if j > 0:
                e = self._distance(rolled[j], guesses[j], b + j)
                errors.append(e)
                if e == math.inf and shapes_of(rolled[j]) != shapes_of(guesses[j]):
                    return rolled, errors, None, maps  # its drift no longer fits the rolled structure
            if not _finite(d):
                return rolled, errors, j, maps
            nxt, index_map = self._update(rolled[j], d, b + j, check and j == 0)
            if not _finite({k: nxt[k] for k in self.process.param_keys if k in nxt}):
                return rolled, errors, j, maps  # the update diverged: rolled[j] is the last good state
            if index_map:
                maps.append((rolled[j], nxt, index_map))
            rolled.append(nxt)
        return rolled, errors, None, maps

    def _model_guesses(
        self,
        guesses: list[State],
        drifts: list[Drift],
        rolled: list[State],
        errors: list[float],
        b: int,
        accepted: int,
        steps: int,
        maps: list[tuple[State, State, IndexMap]],
        bad_at: int | None,
    ) -> list[State] | None:
        """The guess model's next window (``guesses="secant"``); ``None``: make plain guesses.

        A window with a structure change or a NaN resets the model (its history no longer fits).
        """
        assert self._guesser is not None
        if maps or bad_at is not None:
            self._guesser.reset(scores=False)
            return None
        self._guesser.record(guesses, drifts, rolled, errors, b)
        n_next = min(self.config.window, steps - b - accepted)
        return self._guesser.next_guesses(rolled, accepted, b, n_next) if n_next > 0 else None

    def _relinearize(
        self,
        rolled: list[State],
        guesses: list[State],
        drifts: list[Drift],
        errors: list[float],
        b: int,
        accepted: int,
    ) -> list[State]:
        """Roll out the rejected part of the window again with linearized drifts (``linearize=True``).

        The accepted prefix is plain Picard (its drifts were evaluated at accepted guesses). From the
        new exact state on, each step's drift is moved to the rolled state to first order:
        ``d + c (y - g)`` per parameter tensor, ``c`` the secant slope of that step's drift between its
        last two evaluations (same step, same seed: the step's noise cancels). Where there is no
        secant yet, or the guess's error did not shrink since the last evaluation, the plain drift is
        used (damping). Only the next window's guesses change, never an accepted step.
        """
        previous = {j: self._secants.get(b + j) for j in range(1, len(errors) + 1)}
        for j in range(1, len(errors) + 1):
            keys = [k for k in self.process.param_keys if k in drifts[j] and k in guesses[j]]
            self._secants[b + j] = ({k: guesses[j][k] for k in keys}, drifts[j], errors[j - 1])
        out = rolled[: accepted + 1]
        for j in range(accepted, len(rolled) - 1):
            d, before = drifts[j], previous.get(j)
            if before is not None:
                d = self._secant_drift(out[j], guesses[j], d, before, errors[j - 1])
            nxt, index_map = self._update(out[j], d, b + j, False)
            if index_map or not _finite({k: nxt[k] for k in self.process.param_keys if k in nxt}):
                return rolled  # a structure change or a diverging correction: keep the plain rollout
            out.append(nxt)
        return out

    @staticmethod
    def _secant_drift(
        y: State, g: State, d: Drift, previous: tuple[State, Drift, float], error: float
    ) -> Drift:
        """``d + c (y - g)`` per tensor, ``c`` the secant slope against ``previous`` (guess, drift, error)."""
        g_prev, d_prev, e_prev = previous
        if error == 0 or not math.isfinite(error) or (math.isfinite(e_prev) and error >= e_prev):
            return d
        out = dict(d)
        for k in g_prev:  # the parameters that have a drift
            if not g[k].shape == g_prev[k].shape == d[k].shape == d_prev[k].shape == y[k].shape:
                continue
            dg = (g[k] - g_prev[k]).double()
            den = float(dg.square().sum())
            if den == 0:
                continue
            c = float(((d[k] - d_prev[k]).double() * dg).sum()) / den
            out[k] = d[k] + (c * (y[k] - g[k]).double()).to(d[k].dtype)
        return out

    @staticmethod
    def _slide(
        guesses: list[State],
        rolled: list[State],
        accepted: int,
        maps: list[tuple[State, State, IndexMap]],
        previous: list[tuple[State, State, IndexMap]] | None = None,
    ) -> list[State]:
        """Next window's guesses: the rollout from the new start on, then old guesses carried through maps.

        Old guesses past the rollout exist only when it stopped early. When it stopped because its last
        step changed the structure otherwise than the guesses had it (a densification that picked other
        Gaussians than the one in the previous iteration's rollout, ``previous``), the guesses are carried
        onto the rollout's structure through the rows the two changes share (:func:`match_changes`: same
        source, same rank). A guess that no map carries into the structure of the guess before it is
        dropped with every guess after it, and ``_fill`` makes new slots from the rollout instead: kept,
        a stale structure would be copied into every later window and each would stop after one step.
        """
        new = rolled[accepted:]
        old = guesses[len(rolled) :]
        stale = guesses[len(rolled) - 1] if len(guesses) >= len(rolled) else None
        if old and stale is not None and len(rolled) >= 2 and shapes_of(stale) != shapes_of(rolled[-1]):
            before, after = rolled[-2], rolled[-1]
            change = next((m for b, a, m in maps if b is before and a is after), None)
            theirs = next(
                (
                    m
                    for b, a, m in previous or ()
                    if shapes_of(a) == shapes_of(stale) and shapes_of(b) == shapes_of(before)
                ),
                None,
            )
            if change is not None and theirs is not None:
                match = match_changes(change, theirs)
                fits = shapes_of(stale)
                old = [map_rows(g, stale, after, match) if shapes_of(g) == fits else g for g in old]
        for g in old:
            for before, after, index_map in maps:
                if shapes_of(g) == shapes_of(before):
                    g = map_rows(g, before, after, index_map)
            if shapes_of(g) != shapes_of(new[-1]):
                break
            new.append(g)
        return new

    def _velocity(
        self,
        rolled: list[State],
        maps: list[tuple[State, State, IndexMap]] | None = None,
        previous: State | None = None,
    ) -> State | None:
        """The last rolled-out step of the parameters (``None`` when there is none to carry on).

        When that step changed the structure, the step before it (or, with none in this rollout,
        ``previous``, the last window's velocity) is carried through the step's index map: each new row
        moves like its source row, rows without a source stand still.
        """
        if self.config.init != "velocity" or len(rolled) < 2:
            return None
        a, b = rolled[-2], rolled[-1]
        keys = self.process.param_keys or tuple(b)
        if all(a[k].shape == b[k].shape for k in keys):
            return {k: b[k] - a[k] for k in keys}
        index_map = next((m for before, after, m in maps or () if before is a and after is b), None)
        if index_map is None:
            return None
        before = {k: a[k] - rolled[-3][k] for k in keys} if len(rolled) >= 3 else previous
        if before is None or any(k not in before or before[k].shape != a[k].shape for k in keys):
            return None
        out: State = {}
        for k in keys:
            src = index_map.sources.get(k)
            if src is None:
                if before[k].shape != b[k].shape:
                    return None
                out[k] = before[k]
                continue
            moved = torch.zeros_like(b[k])
            valid = src >= 0
            moved[valid] = before[k][src[valid]]
            out[k] = moved
        return out

    def _fill(
        self, guesses: list[State], n: int, b: int, last_drift: Drift | None, velocity: State | None = None
    ) -> list[State]:
        """Extend the guesses to ``n`` slots: copy the last one (``copy``), step it with the last drift
        (``extrapolate``), or move its parameters on by the last rolled-out step (``velocity``: constant
        velocity, times ``damping``; optimizer state and buffers are copied, never extrapolated)."""
        guesses = guesses[:n]
        while len(guesses) < n:
            prev = guesses[-1]
            if velocity is not None and all(prev[k].shape == v.shape for k, v in velocity.items()):
                nxt = dict(prev)
                for k, v in velocity.items():
                    nxt[k] = prev[k] + self.config.damping * v
                guesses.append(nxt)
            elif self.config.init == "extrapolate" and last_drift is not None:
                t = b + len(guesses) - 1
                try:
                    nxt, index_map = self._update(prev, last_drift, t, False)
                except Exception:  # a drift that no longer fits the structure: fall back to a copy
                    nxt, index_map = prev, None
                guesses.append(prev if index_map else nxt)
            else:
                guesses.append(prev)
        return guesses


def run_sequential(
    process: Process,
    x0: State,
    steps: int,
    start: int = 0,
    callback: Callable[[IterationInfo], None] | None = None,
) -> SolverResult:
    """The baseline: one unit after another (a window of 1)."""
    return PicardSolver(
        process, SolverConfig(window=1, threshold=0.0, adaptive=False), callback=callback
    ).run(x0, steps, start)
