"""3DGS / DreamGaussian densification and pruning as pure functions on a flat state, with exact index maps.

Statistics live in the state (one row per Gaussian): ``densify.grad_accum`` (sum over views of the
norm of the view-space positional gradient, in 3DGS's NDC units: pixel gradient times ``(W/2, H/2)``),
``densify.count`` (views in which the Gaussian was visible) and ``densify.max_radii`` (largest screen
radius seen, pixels).

:func:`densify_and_prune` follows 3DGS's ``densify_and_prune`` step by step: clone small Gaussians
with a large mean gradient, split large ones into two (positions sampled from the Gaussian, scales
/ 1.6; the original is dropped), then prune transparent (and, optionally, too large) ones among the
result; statistics restart at zero. New rows are ordered as in 3DGS: kept originals, clones, first
split copies, second split copies.

Optimizer state, as 3DGS with ``torch.optim.Adam`` handles it: pruning drops the rows of the moments;
new rows get zero moments (``exp_avg``, ``exp_avg_sq``; 3DGS concatenates zeros); the step count is
kept. torch.optim keeps one scalar ``step`` per parameter tensor, so new rows share it: a scalar step
key is left untouched here, and a per-row step key copies the step of the row's source (the same
thing). The returned :class:`~dreampropeller.picard.process.IndexMap` says, per key whose leading
dimension changed, which old row every new row derives its value from (``-1``: none, the value is a
fresh zero): parameters and step counts map every row to its source; moments map kept rows only;
statistics map no row (reset).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..picard.process import IndexMap
from .gaussians import (
    DEFAULT_MAX_COUNT,
    MEANS,
    OPACITIES,
    QUATS,
    SCALES,
    GaussianError,
    gaussian_keys,
    num_gaussians,
    quat_to_rotmat,
)

GRAD_ACCUM = "densify.grad_accum"
COUNT = "densify.count"
MAX_RADII = "densify.max_radii"
STAT_KEYS: tuple[str, ...] = (GRAD_ACCUM, COUNT, MAX_RADII)
#: Optimizer slots whose per-row values new rows copy from their source (the rest start at zero).
COPY_SLOTS: tuple[str, ...] = ("step",)

State = dict[str, Tensor]
StateKeys = Callable[[str], Sequence[str]]


def default_state_keys(param: str) -> list[str]:
    """Optimizer-state keys of ``param`` in the flat-state convention of :mod:`dreampropeller.optim`."""
    return [f"optim/exp_avg/{param}", f"optim/exp_avg_sq/{param}", f"optim/step/{param}"]


@dataclass(frozen=True)
class DensifyConfig:
    """When and how to densify. Steps count completed optimizer steps: step ``t`` (0-based) is ``t + 1``.

    Defaults are DreamGaussian's text-to-3D settings (densify every 50 steps, gradient threshold 0.01,
    ``percent_dense`` 0.01 of an extent of 4, prune opacity < 0.01 and largest scale > 0.1 * extent,
    opacity reset every 700 steps; start at step 100 as in DreamPropeller's DreamGaussian runs).
    """

    start: int = 100
    end: int = 3000
    interval: int = 50
    grad_threshold: float = 0.01
    percent_dense: float = 0.01
    scene_extent: float = 4.0
    min_opacity: float = 0.01
    max_count: int = DEFAULT_MAX_COUNT
    max_world_scale: float | None = 0.4
    max_screen_radius: float | None = None
    split_factor: float = 1.6
    opacity_reset_interval: int | None = 700
    opacity_reset_value: float = 0.01
    #: Adam moments of new rows (clones, split copies): ``zero`` (3DGS, DreamGaussian) or ``copy`` (the
    #: source row's, so a new row keeps moving like its source instead of taking a first, lr-sized step)
    fresh_moments: str = "zero"

    def __post_init__(self) -> None:
        if self.interval < 1 or self.start < 0 or self.end < self.start:
            raise GaussianError(
                f"densify schedule needs interval >= 1 and 0 <= start <= end, got "
                f"start={self.start}, end={self.end}, interval={self.interval}"
            )
        if self.max_count < 1 or self.split_factor <= 0 or self.grad_threshold < 0:
            raise GaussianError(
                f"need max_count >= 1, split_factor > 0, grad_threshold >= 0, got {self.max_count}, "
                f"{self.split_factor}, {self.grad_threshold}"
            )
        if self.fresh_moments not in ("zero", "copy"):
            raise GaussianError(f"fresh_moments must be 'zero' or 'copy', got {self.fresh_moments!r}")
        if self.opacity_reset_interval is not None and self.opacity_reset_interval < 1:
            raise GaussianError(
                f"opacity_reset_interval must be >= 1 or None, got {self.opacity_reset_interval}"
            )


def stats_due(cfg: DensifyConfig, t: int) -> bool:
    """Whether step ``t`` accumulates densification statistics (``start <= t + 1 <= end``)."""
    return cfg.start <= t + 1 <= cfg.end


def densify_due(cfg: DensifyConfig, t: int) -> bool:
    """Whether the update of step ``t`` densifies and prunes (DreamGaussian: ``step % interval == 0``)."""
    return stats_due(cfg, t) and (t + 1) % cfg.interval == 0


def opacity_reset_due(cfg: DensifyConfig, t: int) -> bool:
    """Whether the update of step ``t`` resets opacities."""
    k = cfg.opacity_reset_interval
    return k is not None and stats_due(cfg, t) and (t + 1) % k == 0


# ------------------------------------------------------------------------------------------ statistics


def init_stats(n: int, like: Tensor) -> State:
    """Zero statistics for ``n`` Gaussians (dtype and device of ``like``)."""
    return {k: like.new_zeros(n) for k in STAT_KEYS}


def view_space_stats(grad_means2d: Tensor, radii: Tensor, height: int, width: int) -> State:
    """Per-Gaussian statistics of one render: gradient-norm sum, visible-view count, max radius, [N] each.

    ``grad_means2d`` [B, N, 2] is the gradient of the loss with respect to the rasterizer's ``means2d``
    (pixels); it is converted to 3DGS's NDC units (times ``W/2``, ``H/2``). ``radii`` [B, N, 2]: a
    Gaussian counts as visible in a view where a radius is positive. Each view adds its own norm (3DGS
    with one image per step; gsplat's default strategy for batches).
    """
    if grad_means2d.shape != radii.shape or grad_means2d.dim() != 3 or grad_means2d.shape[-1] != 2:
        raise GaussianError(
            f"need grad_means2d and radii of shape [B, N, 2], "
            f"got {tuple(grad_means2d.shape)} and {tuple(radii.shape)}"
        )
    scale = grad_means2d.new_tensor([0.5 * width, 0.5 * height])
    visible = (radii > 0).any(-1)
    norms = (grad_means2d.detach() * scale).norm(dim=-1) * visible
    rad = radii.max(-1).values.to(grad_means2d.dtype) * visible
    return {
        GRAD_ACCUM: norms.sum(0),
        COUNT: visible.sum(0).to(grad_means2d.dtype),
        MAX_RADII: rad.max(0).values,
    }


def accumulate_stats(state: State, stats: State) -> State:
    """A new state with ``stats`` (from :func:`view_space_stats`, maybe summed over renders) added in."""
    n = num_gaussians(state)
    out = dict(state)
    for key in STAT_KEYS:
        old = state.get(key)
        old = old if old is not None else state[MEANS].new_zeros(n)
        new = stats[key].to(old)
        if new.shape != old.shape:
            raise GaussianError(f"statistic {key} has shape {tuple(new.shape)}, expected {tuple(old.shape)}")
        out[key] = torch.maximum(old, new) if key == MAX_RADII else old + new
    return out


# -------------------------------------------------------------------------------------- restructuring


def _optim_keys(state: State, param: str, state_keys: StateKeys, n: int) -> list[str]:
    """Per-row optimizer keys of ``param`` present in ``state`` (leading dimension ``n``)."""
    return [k for k in state_keys(param) if k in state and state[k].dim() > 0 and state[k].shape[0] == n]


def _slot(key: str) -> str:
    """The slot of ``optim/<slot>/<param>`` (the key itself otherwise)."""
    parts = key.split("/", 2)
    return parts[1] if len(parts) == 3 else key


def restructure(
    state: State,
    src: Tensor,
    fresh: Tensor,
    params: dict[str, Tensor],
    state_keys: StateKeys = default_state_keys,
) -> tuple[State, IndexMap]:
    """A new state whose Gaussian rows derive from old rows ``src`` [M] (the core of densify and prune).

    ``fresh`` [M] marks new rows (clones / split copies): their moments start at zero. ``params`` holds
    the new parameter tensors (rows already gathered and modified). Step counts copy the source row;
    statistics restart at zero.
    """
    n = num_gaussians(state)
    m = src.shape[0]
    out = dict(state)
    sources: dict[str, Tensor] = {}
    moment_src = torch.where(fresh, torch.full_like(src, -1), src)
    for param in gaussian_keys(state):
        out[param] = params[param]
        sources[param] = src.clone()
        for key in _optim_keys(state, param, state_keys, n):
            old = state[key]
            if _slot(key) in COPY_SLOTS:
                out[key] = old[src].clone()
                sources[key] = src.clone()
            else:
                value = old.new_zeros((m, *old.shape[1:]))
                keep = ~fresh
                value[keep] = old[src[keep]]
                out[key] = value
                sources[key] = moment_src.clone()
    for key in STAT_KEYS:
        if key in state:
            out[key] = state[key].new_zeros(m)
            sources[key] = torch.full_like(src, -1)
    return out, IndexMap(sources)


def prune_gaussians(
    state: State, keep: Tensor, state_keys: StateKeys = default_state_keys
) -> tuple[State, IndexMap]:
    """Keep the rows where ``keep`` [N] is true (parameters, moments, statistics alike)."""
    n = num_gaussians(state)
    if keep.shape != (n,) or keep.dtype != torch.bool:
        raise GaussianError(
            f"keep must be a bool tensor of shape [{n}], got {keep.dtype} {tuple(keep.shape)}"
        )
    src = torch.nonzero(keep).squeeze(-1)
    params = {k: state[k][src] for k in gaussian_keys(state)}
    new, index_map = restructure(state, src, torch.zeros_like(src, dtype=torch.bool), params, state_keys)
    for key in STAT_KEYS:  # plain pruning keeps the statistics of the kept rows
        if key in state:
            new[key] = state[key][src]
            index_map.sources[key] = src.clone()
    return new, index_map


def _limit_growth(grads: Tensor, clone: Tensor, split: Tensor, budget: int) -> tuple[Tensor, Tensor]:
    """Restrict clone / split candidates to the ``budget`` with the largest gradients (each adds one row)."""
    cand = torch.nonzero(clone | split).squeeze(-1)
    if cand.numel() <= budget:
        return clone, split
    order = torch.argsort(grads[cand], descending=True, stable=True)
    chosen = torch.zeros_like(clone)
    chosen[cand[order[: max(budget, 0)]]] = True
    return clone & chosen, split & chosen


def densify_and_prune(
    state: State,
    cfg: DensifyConfig,
    generator: torch.Generator,
    *,
    state_keys: StateKeys = default_state_keys,
) -> tuple[State, IndexMap]:
    """Clone, split and prune Gaussians (3DGS's ``densify_and_prune``); returns ``(new_state, index_map)``.

    The positions of split copies are drawn from ``generator`` (normal with the Gaussian's covariance),
    so the result is a pure function of ``(state, generator seed)``. The number of Gaussians never
    exceeds ``cfg.max_count``: when it would, the candidates with the largest gradients go first.
    """
    n = num_gaussians(state)
    missing = [k for k in (GRAD_ACCUM, COUNT) if k not in state]
    if missing:
        raise GaussianError(f"state lacks densification statistics {missing}; accumulate_stats() first")
    with torch.no_grad():
        grads = torch.nan_to_num(state[GRAD_ACCUM] / state[COUNT], nan=0.0, posinf=0.0)
        max_scale = torch.exp(state[SCALES]).max(-1).values
        dense_limit = cfg.percent_dense * cfg.scene_extent
        big_grad = grads >= cfg.grad_threshold
        clone = big_grad & (max_scale <= dense_limit)
        split = big_grad & (max_scale > dense_limit)
        clone, split = _limit_growth(grads, clone, split, cfg.max_count - n)
        clone_idx = torch.nonzero(clone).squeeze(-1)
        split_idx = torch.nonzero(split).squeeze(-1)
        split_src = torch.cat([split_idx, split_idx])
        src = torch.cat([torch.arange(n, device=clone.device), clone_idx, split_src])
        kind = torch.cat([  # 0 original, 1 clone, 2 split copy
            torch.zeros(n, dtype=torch.long, device=src.device),
            torch.ones_like(clone_idx),
            torch.full_like(split_src, 2),
        ])  # fmt: skip
        alive = torch.cat([~split, torch.ones(src.shape[0] - n, dtype=torch.bool, device=src.device)])
        params = {k: state[k][src] for k in gaussian_keys(state)}
        if split_src.numel():
            is_split = kind == 2
            std = torch.exp(state[SCALES][split_src])
            noise = torch.randn(split_src.shape[0], 3, generator=generator, device=generator.device)
            offset = (quat_to_rotmat(state[QUATS][split_src]) @ (noise.to(std) * std)[..., None]).squeeze(-1)
            params[MEANS][is_split] = state[MEANS][split_src] + offset
            params[SCALES][is_split] = state[SCALES][split_src] - math.log(cfg.split_factor)
        drop = torch.sigmoid(params[OPACITIES]) < cfg.min_opacity
        if cfg.max_world_scale is not None:
            drop |= torch.exp(params[SCALES]).max(-1).values > cfg.max_world_scale
        if cfg.max_screen_radius is not None and MAX_RADII in state:
            drop |= state[MAX_RADII][src] > cfg.max_screen_radius
        rows = torch.nonzero(alive & ~drop).squeeze(-1)
        params = {k: v[rows].contiguous() for k, v in params.items()}
        fresh = kind[rows] > 0 if cfg.fresh_moments == "zero" else torch.zeros_like(rows, dtype=torch.bool)
        return restructure(state, src[rows], fresh, params, state_keys)


def reset_opacity(state: State, value: float = 0.01, state_keys: StateKeys = default_state_keys) -> State:
    """Clamp opacities to at most ``value`` and zero their moments (3DGS's ``reset_opacity``; steps kept)."""
    if not 0 < value < 1:
        raise GaussianError(f"opacity reset value must be in (0, 1), got {value}")
    out = dict(state)
    logit = math.log(value / (1 - value))
    out[OPACITIES] = torch.clamp_max(state[OPACITIES], logit)
    for key in _optim_keys(state, OPACITIES, state_keys, num_gaussians(state)):
        if _slot(key) not in COPY_SLOTS:
            out[key] = torch.zeros_like(state[key])
    return out


# -------------------------------------------------------------------------------------------- strategy


@dataclass
class DensifyStrategy:
    """3DGS's adaptive density control as one object (after gsplat's ``Strategy``): the schedule of
    ``cfg`` and the functions above behind one call a process makes after its optimizer step.

    ``state_keys`` names the optimizer entries that follow each parameter's rows (the optimizer's own
    ``state_keys``), so moments and step counts are carried through every structure change.
    """

    cfg: DensifyConfig
    state_keys: StateKeys = default_state_keys

    def step(self, state: State, stats: State, t: int, gen: torch.Generator) -> tuple[State, IndexMap | None]:
        """After step ``t``: accumulate ``stats``, then densify / prune and reset opacities when due.

        Returns the new state and, when the rows changed, the exact map from new rows to old ones.
        """
        cfg = self.cfg
        if not stats_due(cfg, t):
            return state, None
        state = accumulate_stats(state, stats)
        index_map = None
        if densify_due(cfg, t):
            state, index_map = densify_and_prune(state, cfg, gen, state_keys=self.state_keys)
        if opacity_reset_due(cfg, t):
            state = reset_opacity(state, cfg.opacity_reset_value, state_keys=self.state_keys)
        return state, index_map
