"""The Process protocol: what the Picard solver accelerates.

A sequential run is ``x[t+1] = update(x[t], unit(x[t], t), t)`` for ``t = 0 .. T-1``:

* ``State``: a flat mapping name -> tensor holding parameters, optimizer state (moments, step
  counts) and any buffer ``update`` changes. Copies are deep (:func:`clone_state`).
* ``unit(x, t)``: the expensive, deterministic part (render, prior, backward). Returns the drift, a
  flat mapping name -> tensor (usually gradients). Every random draw comes from ``(seed, t)``.
* ``update(x, drift, t)``: the cheap part (optimizer step, bookkeeping). It may change the
  structure of the state (rows added / removed); then it returns :class:`Updated` with an
  :class:`IndexMap` from new rows to old rows.
* ``distance(a, b)``: how far a guess is from the rolled-out state; default mean squared
  difference per element over ``param_keys``.

Optional hooks for state a process keeps OUTSIDE the fixed point (e.g. a VSD LoRA trained per worker,
or on accepted steps only): ``accept(first, count)`` is called after each iteration with the steps
that became exact; ``worker_state()`` / ``load_worker_state(state)`` let checkpoints save and restore
it (executors with replicas save every replica's: :meth:`Executor.worker_states`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

State = dict[str, torch.Tensor]
Drift = dict[str, torch.Tensor]


class PicardError(ValueError):
    """Bad input to the Picard engine (the message says what was wrong and what to do)."""


@dataclass(frozen=True)
class IndexMap:
    """Where the rows of a re-structured state came from.

    ``sources[key]`` is a long tensor with one entry per row of the new ``key`` tensor: the row of the
    old tensor it derives from, or ``-1`` for a row with no source. Keys not listed kept their shape.
    """

    sources: dict[str, torch.Tensor] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.sources)


class Updated(NamedTuple):
    """Result of an ``update`` that may change structure."""

    state: State
    index_map: IndexMap | None = None


def clone_state(x: Mapping[str, torch.Tensor]) -> State:
    """A deep copy of a state (no tensor shared with ``x``)."""
    return {k: v.detach().clone() for k, v in x.items()}


def shapes_of(x: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Shape of every entry of a state."""
    return {k: tuple(v.shape) for k, v in x.items()}


def mean_squared_distance(
    a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], keys: Sequence[str]
) -> float:
    """Mean squared difference per element over ``keys`` (``inf`` where shapes disagree)."""
    total = 0.0
    count = 0
    for k in keys:
        va, vb = a[k], b[k]
        if va.shape != vb.shape:
            return float("inf")
        total += float((va.detach().double() - vb.detach().double()).square().sum())
        count += va.numel()
    return total / max(count, 1)


class Process:
    """Base class of a Picard process. Subclasses implement ``unit`` and ``update``.

    ``param_keys`` names the entries the default ``distance`` compares (the parameters); the rest of
    the state (optimizer moments, buffers) is carried along and mapped but not compared.
    """

    param_keys: tuple[str, ...] = ()

    def unit(self, x: State, t: int) -> Drift:
        """The expensive deterministic part of step ``t``: returns the drift (gradients)."""
        raise NotImplementedError

    def update(self, x: State, drift: Drift, t: int) -> State | Updated:
        """The cheap part of step ``t``: a new state (never modify ``x`` in place)."""
        raise NotImplementedError

    def distance(self, a: State, b: State) -> float:
        """How far guess ``b`` is from rolled-out ``a``."""
        return mean_squared_distance(a, b, self.param_keys or tuple(a.keys()))

    def unit_batch(self, xs: Sequence[State], ts: Sequence[int]) -> list[Drift]:
        """Units of a window in one call; the default loops. Override to batch on one device."""
        return [self.unit(x, t) for x, t in zip(xs, ts, strict=True)]

    def accept(self, first: int, count: int) -> None:
        """Called by the solver after each iteration: steps ``[first, first + count)`` were accepted."""

    def worker_state(self) -> State:
        """State kept outside the Picard state by this worker (copied; empty by default)."""
        return {}

    def load_worker_state(self, state: State) -> None:
        """Restore :meth:`worker_state` (from a checkpoint)."""

    def replicate(self, device: torch.device) -> Process:
        """A copy of this process whose static parts (e.g. prior weights) live on ``device``.

        Used by the ``devices`` executor: one replica per worker thread. The default deep-copies the
        process and moves every ``torch.nn.Module`` attribute to ``device``.
        """
        clone = copy.copy(self)
        for name, value in vars(self).items():
            if isinstance(value, torch.nn.Module):
                setattr(clone, name, copy.deepcopy(value).to(device))
        clone.device = device  # type: ignore[attr-defined]
        return clone

    @property
    def has_unit_batch(self) -> bool:
        """True when the subclass overrides ``unit_batch`` with a real batched implementation."""
        return type(self).unit_batch is not Process.unit_batch


def as_updated(result: State | Updated | tuple[Any, Any]) -> Updated:
    """Normalize what ``update`` returned to :class:`Updated`."""
    if isinstance(result, Updated):
        return result
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], Mapping):
        return Updated(dict(result[0]), result[1])
    if isinstance(result, Mapping):
        return Updated(dict(result), None)
    raise PicardError(
        f"update must return a state mapping or Updated(state, index_map), got {type(result).__name__}"
    )


def map_rows(guess: State, before: State, after: State, index_map: IndexMap) -> State:
    """Carry ``guess`` (shaped like ``before``) through a structure change into ``after``'s shape.

    Rows are mapped exactly by ``index_map``; the value of a mapped row is ``after``'s row plus the
    displacement the guess had from ``before`` on its source row (zero for rows with no source).
    Keys the map does not name keep the guess's values.
    """
    out: State = {}
    for key, value in after.items():
        src = index_map.sources.get(key)
        g = guess.get(key)
        if src is None:
            out[key] = g.clone() if g is not None and g.shape == value.shape else value.clone()
            continue
        disp = torch.zeros_like(value)
        if g is not None and key in before and g.shape == before[key].shape:
            valid = src >= 0
            delta = g - before[key]
            disp[valid] = delta[src[valid]]
        out[key] = value + disp
    return out


def matched_rows(before: State, after: State, index_map: IndexMap) -> tuple[State, State]:
    """``after`` and ``before`` restricted to the rows they share through ``index_map``, aligned.

    Each new row with a source is paired with that source row; new rows without one are left out.
    Keys the map does not name are returned whole. Used to measure a structure-changing step.
    """
    new: State = {}
    old: State = {}
    for key, value in after.items():
        src = index_map.sources.get(key)
        if src is None:
            new[key], old[key] = value, before[key]
            continue
        valid = src >= 0
        new[key], old[key] = value[valid], before[key][src[valid]]
    return new, old


def _ranked(src: torch.Tensor, base: int) -> torch.Tensor:
    """Per row, the key ``source * base + rank among the rows with that source`` (in order; ``base`` above
    every rank); ``-1`` for a row without a source."""
    n = src.shape[0]
    order = torch.argsort(src, stable=True)
    sorted_src = src[order]
    first = torch.searchsorted(sorted_src, sorted_src, right=False)
    rank = torch.empty_like(src)
    rank[order] = torch.arange(n, device=src.device) - first
    key = src * base + rank
    return torch.where(src >= 0, key, torch.full_like(key, -1))


def match_changes(new: IndexMap, old: IndexMap) -> IndexMap:
    """Rows of one structure change matched to the rows of another made from the same structure.

    ``new`` and ``old`` map their rows to rows of one common earlier state (two densifications of it that
    chose differently). A row of ``new`` is matched to the row of ``old`` with the same source and the same
    rank among that source's rows (a kept original to a kept original, a first copy to a first copy);
    ``-1`` where ``old`` has no such row. The result maps ``new``'s rows to ``old``'s, so
    :func:`map_rows` can carry a guess made after ``old`` into ``new``'s structure.
    """
    sources: dict[str, torch.Tensor] = {}
    for key, src_new in new.sources.items():
        src_old = old.sources.get(key)
        if src_old is None:
            continue
        base = max(src_old.numel(), src_new.numel()) + 1
        k_old, k_new = _ranked(src_old, base), _ranked(src_new, base)
        if k_old.numel() == 0:
            sources[key] = torch.full_like(src_new, -1)
            continue
        order = torch.argsort(k_old)
        pos = torch.searchsorted(k_old[order], k_new).clamp_max(k_old.numel() - 1)
        hit = (k_new >= 0) & (k_old[order][pos] == k_new)
        sources[key] = torch.where(hit, order[pos], torch.full_like(src_new, -1))
    return IndexMap(sources)
