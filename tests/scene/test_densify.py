import math

import pytest
import torch

from dreampropeller.picard.process import map_rows
from dreampropeller.scene.densify import (
    COUNT,
    GRAD_ACCUM,
    MAX_RADII,
    DensifyConfig,
    DensifyStrategy,
    accumulate_stats,
    densify_and_prune,
    densify_due,
    init_stats,
    opacity_reset_due,
    prune_gaussians,
    reset_opacity,
    view_space_stats,
)
from dreampropeller.scene.gaussians import (
    MEANS,
    OPACITIES,
    PARAM_KEYS,
    QUATS,
    SCALES,
    GaussianError,
    covariance_3d,
    init_gaussians,
)

CFG = DensifyConfig(
    grad_threshold=0.5, percent_dense=0.01, scene_extent=4.0, min_opacity=0.01, max_world_scale=0.4
)
LIMIT = CFG.percent_dense * CFG.scene_extent  # 0.04


def make_state(n=10, seed=0):
    """Gaussians with Adam-like state; per-row steps for the means, scalar steps for the rest."""
    g = torch.Generator().manual_seed(seed)
    s = init_gaussians(n, 0.5, g, sh_degree=1)
    s[QUATS] = torch.randn(n, 4, generator=g)
    s[OPACITIES] = torch.full((n,), 1.0)
    for k in [k for k in PARAM_KEYS if k in s]:
        s[f"optim/exp_avg/{k}"] = torch.randn(s[k].shape, generator=g)
        s[f"optim/exp_avg_sq/{k}"] = torch.rand(s[k].shape, generator=g)
        s[f"optim/step/{k}"] = torch.arange(n, dtype=torch.float32) + 7 if k == MEANS else torch.tensor(7.0)
    s.update(init_stats(n, s[MEANS]))
    s["other.buffer"] = torch.arange(n, dtype=torch.float32)  # not per-Gaussian: untouched
    return s


def scenario():
    """rows 1, 2: clone (small, big gradient); 3, 5: split (large); 4: pruned (transparent); rest kept."""
    s = make_state()
    log_small, log_large = math.log(0.5 * LIMIT), math.log(2.0 * LIMIT)
    s[SCALES][:] = log_small
    s[SCALES][[3, 5], 1] = log_large
    s[OPACITIES][4] = math.log(0.005 / 0.995)
    s[COUNT] = torch.full((10,), 2.0)
    s[GRAD_ACCUM] = torch.full((10,), 0.1)
    s[GRAD_ACCUM][[1, 2, 3, 5]] = 2.0
    s[COUNT][7] = 0.0  # never seen: gradient 0, not nan
    return s


def test_view_space_stats_and_accumulation():
    grad = torch.tensor([[[1.0, 2.0], [3.0, 0.0], [5.0, 5.0]], [[0.0, 1.0], [1.0, 1.0], [9.0, 9.0]]])
    radii = torch.tensor([[[2, 3], [1, 1], [0, 0]], [[4, 1], [0, 0], [0, 0]]], dtype=torch.int32)
    st = view_space_stats(grad, radii, height=20, width=10)
    e0 = math.hypot(1 * 5, 2 * 10) + math.hypot(0, 1 * 10)
    assert torch.allclose(st[GRAD_ACCUM], torch.tensor([e0, 15.0, 0.0]))
    assert st[COUNT].tolist() == [2.0, 1.0, 0.0]
    assert st[MAX_RADII].tolist() == [4.0, 1.0, 0.0]
    s = make_state(3)
    s2 = accumulate_stats(accumulate_stats(s, st), st)
    assert torch.allclose(s2[GRAD_ACCUM], 2 * st[GRAD_ACCUM]) and s2[COUNT].tolist() == [4.0, 2.0, 0.0]
    assert s2[MAX_RADII].tolist() == [4.0, 1.0, 0.0]
    assert s[COUNT].sum() == 0  # the input state is not modified


def test_densify_and_prune_index_map_is_exact():
    s = scenario()
    new, imap = densify_and_prune(s, CFG, torch.Generator().manual_seed(0))
    # originals minus splits (3, 5) minus pruned (4); clones of 1, 2; split copies of 3, 5 twice
    expected_src = [0, 1, 2, 6, 7, 8, 9, 1, 2, 3, 5, 3, 5]
    assert imap.sources[MEANS].tolist() == expected_src
    assert new[MEANS].shape == (13, 3) and new["gaussians.sh_rest"].shape == (13, 3, 3)
    src = torch.tensor(expected_src)
    fresh = torch.arange(13) >= 7
    split_rows = torch.arange(13) >= 9
    for k in [k for k in PARAM_KEYS if k in s]:
        assert imap.sources[k].tolist() == expected_src
        same = ~split_rows if k in (MEANS, SCALES) else torch.ones(13, dtype=torch.bool)
        assert torch.equal(new[k][same], s[k][src[same]]), k
        # moments: kept rows carry theirs, new rows start at zero (3DGS concatenates zeros)
        for slot in ("exp_avg", "exp_avg_sq"):
            key = f"optim/{slot}/{k}"
            assert torch.equal(new[key][~fresh], s[key][src[~fresh]])
            assert new[key][fresh].abs().sum() == 0
            assert imap.sources[key].tolist() == [*expected_src[:7], *[-1] * 6]
    # step counts: per-row copies the source (torch.optim's shared step); scalar ones are untouched
    assert torch.equal(new[f"optim/step/{MEANS}"], s[f"optim/step/{MEANS}"][src])
    assert imap.sources[f"optim/step/{MEANS}"].tolist() == expected_src
    assert f"optim/step/{SCALES}" not in imap.sources and new[f"optim/step/{SCALES}"] == 7.0
    # split copies: scales / 1.6, positions moved; statistics restart; unrelated keys untouched
    assert torch.allclose(new[SCALES][split_rows], s[SCALES][src[split_rows]] - math.log(1.6))
    assert (new[MEANS][split_rows] - s[MEANS][src[split_rows]]).norm(dim=-1).min() > 0
    for key in (GRAD_ACCUM, COUNT, MAX_RADII):
        assert new[key].shape == (13,) and new[key].abs().sum() == 0 and imap.sources[key].eq(-1).all()
    assert new["other.buffer"] is s["other.buffer"] and "other.buffer" not in imap.sources
    # every key whose leading dimension changed is in the map, and the solver's row mapping is exact
    changed = {k for k in s if s[k].dim() and new[k].shape != s[k].shape}
    assert changed == set(imap.sources)
    mapped = map_rows(s, s, new, imap)
    assert all(torch.equal(mapped[k], new[k]) for k in new)


def test_split_samples_from_the_gaussian_deterministically():
    n = 4000
    s = make_state(n, seed=1)
    s[MEANS][:] = torch.tensor([0.1, -0.2, 0.3])
    s[QUATS][:] = torch.tensor([0.9, 0.3, -0.2, 0.1])
    s[SCALES][:] = torch.log(torch.tensor([0.3, 0.1, 0.05]))
    s[GRAD_ACCUM][:] = 1.0
    s[COUNT][:] = 1.0
    cfg = DensifyConfig(grad_threshold=0.5, max_world_scale=None, max_count=3 * n)
    a, _ = densify_and_prune(s, cfg, torch.Generator().manual_seed(11))
    b, _ = densify_and_prune(s, cfg, torch.Generator().manual_seed(11))
    c, _ = densify_and_prune(s, cfg, torch.Generator().manual_seed(12))
    assert a[MEANS].shape == (2 * n, 3)
    assert torch.equal(a[MEANS], b[MEANS]) and not torch.equal(a[MEANS], c[MEANS])
    d = a[MEANS] - torch.tensor([0.1, -0.2, 0.3])
    expected = covariance_3d(torch.tensor([0.3, 0.1, 0.05]), s[QUATS][0])
    assert d.mean(0).abs().max() < 0.02
    assert torch.allclose(d.T @ d / d.shape[0], expected, atol=3e-3)


def test_max_count_keeps_the_largest_gradients():
    s = scenario()
    s[GRAD_ACCUM][[1, 2, 3, 5]] = torch.tensor([2.0, 5.0, 3.0, 4.0])
    new, imap = densify_and_prune(s, DensifyConfig(**{**CFG.__dict__, "max_count": 12}), torch.Generator())
    # budget 2 new rows: row 2 (clone, grad 2.5) and row 5 (split, grad 2.0) win; row 4 still pruned
    assert imap.sources[MEANS].tolist() == [0, 1, 2, 3, 6, 7, 8, 9, 2, 5, 5]
    assert new[MEANS].shape[0] <= 12


def test_prune_world_scale_and_screen_radius():
    s = scenario()
    s[SCALES][0] = math.log(0.5)  # larger than max_world_scale 0.4: pruned (and not split)
    s[GRAD_ACCUM][0] = 0.0
    s[MAX_RADII][8] = 50.0
    _, imap = densify_and_prune(
        s, DensifyConfig(**{**CFG.__dict__, "max_screen_radius": 20.0}), torch.Generator()
    )
    assert imap.sources[MEANS].tolist() == [1, 2, 6, 7, 9, 1, 2, 3, 5, 3, 5]


def test_prune_gaussians_keeps_stats_of_kept_rows():
    s = scenario()
    keep = torch.ones(10, dtype=torch.bool)
    keep[[0, 9]] = False
    new, imap = prune_gaussians(s, keep)
    assert imap.sources[MEANS].tolist() == list(range(1, 9))
    assert torch.equal(new[GRAD_ACCUM], s[GRAD_ACCUM][1:9])
    assert torch.equal(new["optim/exp_avg/gaussians.colors"], s["optim/exp_avg/gaussians.colors"][1:9])
    with pytest.raises(GaussianError, match="bool tensor"):
        prune_gaussians(s, keep[:5])


def test_reset_opacity_clamps_and_zeroes_moments():
    s = scenario()
    new = reset_opacity(s, 0.01)
    assert torch.allclose(torch.sigmoid(new[OPACITIES]).max(), torch.tensor(0.01))
    assert new[OPACITIES][4] == s[OPACITIES][4]  # already below: unchanged
    assert new[f"optim/exp_avg/{OPACITIES}"].abs().sum() == 0
    assert new[f"optim/step/{OPACITIES}"] == 7.0
    assert torch.equal(new[f"optim/exp_avg/{MEANS}"], s[f"optim/exp_avg/{MEANS}"])


def test_schedule():
    cfg = DensifyConfig(start=100, end=300, interval=50, opacity_reset_interval=200)
    due = [t for t in range(500) if densify_due(cfg, t)]
    assert due == [99, 149, 199, 249, 299]  # after 100, 150, ... completed steps
    assert [t for t in range(500) if opacity_reset_due(cfg, t)] == [199]
    with pytest.raises(GaussianError, match="interval"):
        DensifyConfig(interval=0)


def test_missing_stats_is_a_clear_error():
    s = make_state(3)
    del s[COUNT]
    with pytest.raises(GaussianError, match="accumulate_stats"):
        densify_and_prune(s, CFG, torch.Generator())


def test_strategy_step_matches_the_functions_it_schedules():
    """``DensifyStrategy.step`` = accumulate, then densify / prune when due, with the same index map."""
    cfg = DensifyConfig(start=0, interval=1, grad_threshold=0.5, percent_dense=0.01, max_count=100)
    strategy = DensifyStrategy(cfg)
    stats = {k: v for k, v in scenario().items() if k in (COUNT, GRAD_ACCUM, MAX_RADII)}
    base = {**scenario(), **{k: torch.zeros_like(v) for k, v in stats.items()}}
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    got, got_map = strategy.step(base, stats, 0, gen_a)
    want, want_map = densify_and_prune(accumulate_stats(base, stats), cfg, gen_b)
    assert got_map is not None and set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert all(torch.equal(got_map.sources[k], want_map.sources[k]) for k in want_map.sources)
    idle = DensifyStrategy(DensifyConfig(start=50, interval=10))
    same, none = idle.step(base, stats, 0, gen_a)
    assert none is None and same is base


def test_fresh_moments_copy_gives_new_rows_their_sources_moments():
    """``fresh_moments="copy"``: clones and split copies take the Adam moments of their source row (and the
    map says so); everything else is as with ``zero``."""
    s = scenario()
    cfg = DensifyConfig(**{**CFG.__dict__, "fresh_moments": "copy"})
    new, imap = densify_and_prune(s, cfg, torch.Generator().manual_seed(0))
    zero, _ = densify_and_prune(s, CFG, torch.Generator().manual_seed(0))
    src = torch.tensor([0, 1, 2, 6, 7, 8, 9, 1, 2, 3, 5, 3, 5])
    for k in [k for k in PARAM_KEYS if k in s]:
        assert torch.equal(new[k], zero[k])
        for slot in ("exp_avg", "exp_avg_sq"):
            key = f"optim/{slot}/{k}"
            assert torch.equal(new[key], s[key][src]) and imap.sources[key].tolist() == src.tolist()
    with pytest.raises(GaussianError, match="fresh_moments"):
        DensifyConfig(fresh_moments="mean")
