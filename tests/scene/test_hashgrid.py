"""Hash-grid encoding: shapes, a slow reference, continuity, sparse gradients, slots, progressive levels."""

import math

import pytest
import torch

from dreampropeller.scene.hashgrid import (
    HASH_PRIMES,
    HashGridConfig,
    SceneError,
    hashgrid_encode,
    init_hashgrid_tables,
    progressive_levels,
)

# 4 levels: 4, 8, 16, 32 cells; with a 2^10 table the first two are dense (125, 729 vertices)
SMALL = HashGridConfig(n_levels=4, n_features=2, log2_table_size=10, base_resolution=4, per_level_scale=2.0)


def _tables(cfg: HashGridConfig, p: int = 1, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # larger than the 1e-4 init so that differences are well above float rounding
    return torch.stack([init_hashgrid_tables(cfg, g) * 1e4 * scale for _ in range(p)])


def _reference(tables: torch.Tensor, x: torch.Tensor, cfg: HashGridConfig) -> torch.Tensor:
    """Point-by-point, corner-by-corner loop (no slots), written independently of the fast path."""
    out = torch.zeros(x.shape[0], cfg.output_dim, dtype=torch.float64)
    for n, pt in enumerate(x.tolist()):
        for level, res in enumerate(cfg.resolutions()):
            side = res + 1
            dense = side**3 <= cfg.table_size
            cell = [min(math.floor(c * res), res - 1) for c in pt]
            frac = [c * res - i for c, i in zip(pt, cell)]
            for dx in (0, 1):
                for dy in (0, 1):
                    for dz in (0, 1):
                        v = (cell[0] + dx, cell[1] + dy, cell[2] + dz)
                        w = 1.0
                        for f, d in zip(frac, (dx, dy, dz)):
                            w *= f if d else 1.0 - f
                        if dense:
                            row = v[0] + side * v[1] + side * side * v[2]
                        else:
                            row = (v[0] * HASH_PRIMES[0]) ^ (v[1] * HASH_PRIMES[1]) ^ (v[2] * HASH_PRIMES[2])
                            row %= cfg.table_size
                        f0 = level * cfg.n_features
                        out[n, f0 : f0 + cfg.n_features] += w * tables[level, row].double()
    return out


def test_config_levels_and_dense_split():
    cfg = HashGridConfig(n_levels=16, base_resolution=16, log2_table_size=15)
    res = cfg.resolutions()
    assert res[0] == 16 and res[-1] == 256
    assert cfg.is_dense() == [r <= 31 for r in res]  # (31 + 1)^3 = 2^15 vertices fit
    assert sum(cfg.is_dense()) == 4
    assert SMALL.is_dense() == [True, True, False, False]
    with pytest.raises(SceneError):
        HashGridConfig(log2_table_size=40)


def test_shapes_and_reference_loop():
    tables = _tables(SMALL)
    x = torch.rand(1, 7, 3, generator=torch.Generator().manual_seed(1))
    x[0, 0] = torch.tensor([1.0, 0.0, 0.5])  # on the boundary of the cube
    y = hashgrid_encode(tables, x, SMALL)
    assert y.shape == (1, 7, SMALL.output_dim)
    ref = _reference(tables[0], x[0], SMALL)
    assert torch.allclose(y[0].double(), ref, atol=1e-5, rtol=1e-5)


def test_vertices_reproduce_table_rows_and_interpolation_is_continuous():
    tables = _tables(SMALL)
    # a lattice vertex of level 0 (4 cells): the encoding equals that row exactly
    v = torch.tensor([[[0.25, 0.5, 0.75]]])
    row = 1 + 5 * 2 + 25 * 3
    assert torch.allclose(hashgrid_encode(tables, v, SMALL)[0, 0, :2], tables[0, 0, row], atol=1e-6)
    # crossing a cell face (x = 0.5 at every level) changes the output by O(step)
    a = torch.tensor([[[0.5 - 1e-5, 0.3, 0.6]]])
    b = torch.tensor([[[0.5 + 1e-5, 0.3, 0.6]]])
    diff = (hashgrid_encode(tables, a, SMALL) - hashgrid_encode(tables, b, SMALL)).abs().max()
    assert diff < 1e-2 * tables.abs().max()


def test_gradient_reaches_only_touched_rows():
    tables = _tables(SMALL).requires_grad_(True)
    x = torch.tensor([[[0.31, 0.62, 0.13]]])
    hashgrid_encode(tables, x, SMALL).sum().backward()
    touched = (tables.grad.abs().sum(-1) > 0).sum(-1)[0]  # rows with gradient per level
    assert touched.tolist() == [8, 8, 8, 8]  # 8 corners each (no hash collision among them here)
    # the gradient of a row is its trilinear weight; the weights of a point sum to one per level
    assert torch.allclose(tables.grad[0].sum(1)[:, 0], torch.ones(4), atol=1e-5)


def test_gradient_flows_to_points():
    tables = _tables(SMALL)
    x = torch.rand(1, 5, 3, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    hashgrid_encode(tables, x, SMALL).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_slots_match_separate_calls():
    tables = _tables(SMALL, p=4)
    x = torch.rand(4, 50, 3, generator=torch.Generator().manual_seed(3))
    y = hashgrid_encode(tables, x, SMALL)
    for k in range(4):
        assert torch.allclose(y[k], hashgrid_encode(tables[k : k + 1], x[k : k + 1], SMALL)[0], atol=1e-6)


def test_progressive_levels_mask():
    tables = _tables(SMALL)
    x = torch.rand(1, 9, 3, generator=torch.Generator().manual_seed(4))
    full = hashgrid_encode(tables, x, SMALL)
    two = hashgrid_encode(tables, x, SMALL, active_levels=2)
    assert torch.equal(two[..., :4], full[..., :4])
    assert torch.count_nonzero(two[..., 4:]) == 0
    assert progressive_levels(0, 4, 16, 100) == 4
    assert progressive_levels(250, 4, 16, 100) == 6
    assert progressive_levels(10_000, 4, 16, 100) == 16
    assert progressive_levels(50, 4, 16, 100, start_step=100) == 4


def test_bad_shapes_raise():
    with pytest.raises(SceneError, match="tables must be"):
        hashgrid_encode(torch.zeros(1, 3, 1024, 2), torch.zeros(1, 2, 3), SMALL)
    with pytest.raises(SceneError, match="points must be"):
        hashgrid_encode(_tables(SMALL), torch.zeros(2, 2, 3), SMALL)
