"""Multi-resolution hash-grid encoding (Instant-NGP) in pure PyTorch, functional over slots.

Every function takes tables with a leading slot dimension ``P``: slot ``k`` holds the parameters of
one optimization step of a Picard window, so a whole window encodes in one call and a single run is
``P = 1``. Level ``l`` has a lattice of ``res_l = floor(base * scale**l)`` cells per axis; a coarse
level whose ``(res_l + 1)**3`` vertices fit in the table is indexed densely (no collisions), a finer
one by the Instant-NGP spatial hash. Features of the 8 surrounding vertices are blended trilinearly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Instant-NGP's hash primes (the first is 1 so that neighbouring x stay coherent in memory).
HASH_PRIMES = (1, 2654435761, 805459861)


class SceneError(ValueError):
    """Bad input to a scene representation or renderer (the message says what was wrong and what to do)."""


@dataclass(frozen=True)
class HashGridConfig:
    """Sizes of a hash grid: ``n_levels`` levels of ``n_features`` each, tables of ``2**log2_table_size``."""

    n_levels: int = 16
    n_features: int = 2
    log2_table_size: int = 15
    base_resolution: int = 16
    per_level_scale: float = 2.0 ** (4.0 / 15.0)  # 16 levels from 16 to 256 cells per axis

    def __post_init__(self) -> None:
        if self.n_levels < 1 or self.n_features < 1:
            raise SceneError(
                f"hash grid needs n_levels >= 1 and n_features >= 1, got {self.n_levels}, {self.n_features}"
            )
        if not 4 <= self.log2_table_size <= 24:
            raise SceneError(f"log2_table_size must be in [4, 24], got {self.log2_table_size}")
        if self.base_resolution < 1 or self.per_level_scale < 1.0:
            raise SceneError(
                f"base_resolution must be >= 1 and per_level_scale >= 1, got {self.base_resolution}, "
                f"{self.per_level_scale}"
            )

    @staticmethod
    def scale_for(base_resolution: int, finest_resolution: int, n_levels: int) -> float:
        """The per-level scale that makes the finest level ``finest_resolution`` cells wide."""
        if n_levels == 1:
            return 1.0
        return math.exp((math.log(finest_resolution) - math.log(base_resolution)) / (n_levels - 1))

    @classmethod
    def spanning(
        cls,
        n_levels: int,
        n_features: int,
        log2_table_size: int,
        base_resolution: int,
        finest_resolution: int,
    ) -> HashGridConfig:
        """A grid whose ``n_levels`` levels go from ``base_resolution`` to ``finest_resolution`` cells."""
        return cls(
            n_levels=n_levels,
            n_features=n_features,
            log2_table_size=log2_table_size,
            base_resolution=base_resolution,
            per_level_scale=cls.scale_for(base_resolution, finest_resolution, n_levels),
        )

    @property
    def table_size(self) -> int:
        return 1 << self.log2_table_size

    @property
    def output_dim(self) -> int:
        return self.n_levels * self.n_features

    def resolutions(self) -> list[int]:
        """Cells per axis of each level (vertices per axis are one more)."""
        # the small epsilon keeps exact powers (16 * 2**(4/15)**15 = 256) from rounding down
        return [
            math.floor(self.base_resolution * self.per_level_scale**l + 1e-6) for l in range(self.n_levels)
        ]

    def is_dense(self) -> list[bool]:
        """Whether each level is indexed densely (its whole lattice fits in the table)."""
        return [(r + 1) ** 3 <= self.table_size for r in self.resolutions()]


def init_hashgrid_tables(cfg: HashGridConfig, generator: torch.Generator) -> torch.Tensor:
    """Feature tables ``[L, T, F]`` drawn uniform in (-1e-4, 1e-4) from ``generator`` (no slot dim)."""
    u = torch.rand(cfg.n_levels, cfg.table_size, cfg.n_features, generator=generator)
    return (u * 2.0 - 1.0) * 1e-4


def level_indices(corner: torch.Tensor, resolution: int, table_size: int, dense: bool) -> torch.Tensor:
    """Table rows of integer lattice vertices ``corner`` [..., 3] (dense or hashed)."""
    if dense:
        side = resolution + 1
        return corner[..., 0] + side * (corner[..., 1] + side * corner[..., 2])
    h = corner[..., 0] * HASH_PRIMES[0]
    h = torch.bitwise_xor(h, corner[..., 1] * HASH_PRIMES[1])
    h = torch.bitwise_xor(h, corner[..., 2] * HASH_PRIMES[2])
    return torch.bitwise_and(h, table_size - 1)


def _check(tables: torch.Tensor, x: torch.Tensor, cfg: HashGridConfig) -> None:
    want = (cfg.n_levels, cfg.table_size, cfg.n_features)
    if tables.dim() != 4 or tuple(tables.shape[1:]) != want:
        raise SceneError(f"tables must be [P, {want[0]}, {want[1]}, {want[2]}], got {list(tables.shape)}")
    if x.dim() != 3 or x.shape[-1] != 3 or x.shape[0] != tables.shape[0]:
        raise SceneError(f"points must be [P={tables.shape[0]}, N, 3], got {list(x.shape)}")


def _level_rows_and_weights(
    x: torch.Tensor, resolution: int, table_size: int, dense: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Table rows [P, N, 8] and trilinear weights [P, N, 8] of the cell around each point of one level.

    Separable: per-axis corner indices / weights [P, N, 3, 2] combined by broadcasting, which costs
    far less than building the 8 corners explicitly. Hashing uses ``(a ^ b ^ c) & m ==
    (a & m) ^ (b & m) ^ (c & m)``, so it can mask per axis first.
    """
    pos = x * resolution
    base = pos.detach().floor().clamp(max=resolution - 1)
    frac = pos - base  # carries the gradient w.r.t. x
    i0 = base.long()
    idx = torch.stack([i0, i0 + 1], dim=-1)  # [P, N, 3, 2]
    w = torch.stack([1.0 - frac, frac], dim=-1)  # [P, N, 3, 2]
    if dense:
        side = resolution + 1
        ix, iy, iz = idx[..., 0, :], idx[..., 1, :] * side, idx[..., 2, :] * (side * side)
        rows = ix[..., :, None, None] + iy[..., None, :, None] + iz[..., None, None, :]
    else:
        m = table_size - 1
        ix = (idx[..., 0, :] * HASH_PRIMES[0]) & m
        iy = (idx[..., 1, :] * HASH_PRIMES[1]) & m
        iz = (idx[..., 2, :] * HASH_PRIMES[2]) & m
        rows = torch.bitwise_xor(
            torch.bitwise_xor(ix[..., :, None, None], iy[..., None, :, None]), iz[..., None, None, :]
        )
    weights = w[..., 0, :, None, None] * w[..., 1, None, :, None] * w[..., 2, None, None, :]
    p, n = x.shape[:2]
    # corners ordered [x bit][y bit][z bit], the same for rows and weights
    return rows.reshape(p, n, 8), weights.reshape(p, n, 8)


def hashgrid_encode(
    tables: torch.Tensor, x: torch.Tensor, cfg: HashGridConfig, active_levels: int | None = None
) -> torch.Tensor:
    """Encode points ``x`` [P, N, 3] in [0, 1]^3 with per-slot ``tables`` [P, L, T, F] -> [P, N, L*F].

    Only the first ``active_levels`` levels are computed (progressive schedule, chosen by the
    caller); the others are zeros, so the output width never changes. Points outside the unit cube
    are clamped onto it. Differentiable in ``tables`` (only the touched rows get gradient) and in
    ``x`` through the trilinear weights (twice, for autograd normals).
    """
    _check(tables, x, cfg)
    p, n, _ = x.shape
    n_active = cfg.n_levels if active_levels is None else max(0, min(int(active_levels), cfg.n_levels))
    x = x.clamp(0.0, 1.0)
    t_size, f = cfg.table_size, cfg.n_features
    slot_offset = (torch.arange(p, device=x.device) * t_size).view(p, 1, 1)
    feats = []
    for level, (res, dense) in enumerate(zip(cfg.resolutions()[:n_active], cfg.is_dense()[:n_active])):
        rows, w = _level_rows_and_weights(x, res, t_size, dense)
        table = tables[:, level].reshape(p * t_size, f)
        # index_select (its backward is index_add) is about 2x faster on the CPU than advanced indexing
        emb = table.index_select(0, (rows + slot_offset).reshape(-1)).view(p, n, 8, f)
        feats.append((emb * w.unsqueeze(-1)).sum(2))  # not einsum: it becomes a slow [1x8]@[8xF] bmm
    if n_active < cfg.n_levels:
        feats.append(x.new_zeros(p, n, (cfg.n_levels - n_active) * f))
    return torch.cat(feats, dim=-1) if len(feats) > 1 else feats[0]


def progressive_levels(
    step: int, start_levels: int, n_levels: int, update_steps: int, start_step: int = 0
) -> int:
    """Active levels at ``step``: ``start_levels`` until ``start_step``, then +1 every ``update_steps``."""
    if update_steps <= 0:
        return n_levels
    grown = max(0, (int(step) - int(start_step)) // int(update_steps))
    return int(min(n_levels, start_levels + grown))
