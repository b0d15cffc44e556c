"""The Gaussian + SDS Picard process: exactness through densification, index maps, memory checks."""

import math

import pytest
import torch

from dreampropeller.bench.picard import states_equal
from dreampropeller.config.loading import build, merge_config
from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.guidance.tiny.model import TinyPrior, TinyPriorConfig
from dreampropeller.optim import make_optimizer
from dreampropeller.picard.process import Updated
from dreampropeller.picard.solver import PicardSolver, SolverConfig, run_sequential
from dreampropeller.scene.densify import COUNT, GRAD_ACCUM, STAT_KEYS
from dreampropeller.scene.gaussians import MEANS, OPACITIES, SCALES, GaussianError
from dreampropeller.systems.factory import build_process
from dreampropeller.systems.gaussian_memory import check_memory, estimate_memory_bytes
from dreampropeller.systems.gaussians import dreamgaussian_optimizer

# densify after steps 2, 5, 8 (update of t with (t + 1) % 3 == 0), every Gaussian with a gradient
TINY = [
    "prompt=a red cube",
    "representation=gaussians",
    "render.height=16",
    "render.width=16",
    "render.batch_size=2",
    "gaussians.num_points=150",
    "gaussians.densify.start=1",
    "gaussians.densify.interval=3",
    "gaussians.densify.grad_threshold=1.0",
    "gaussians.densify.max_count=2000",
    "gaussians.densify.percent_dense=0.025",
    "steps=9",
]


def make_cfg(*overrides: str) -> TextTo3DConfig:
    data = merge_config(TextTo3DConfig(), overrides=[*TINY, *overrides], free=["optimizer"])
    return build(TextTo3DConfig, data)


@pytest.fixture(scope="module")
def prior():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return TinyPrior(TinyPriorConfig(channels=(16, 32, 32), text_dim=32, pooled_dim=32))


@pytest.fixture(scope="module")
def process(prior):
    return build_process(make_cfg(), prior)


def record(result_states):
    """A solver callback storing the exact state (and its size) at every step it reaches."""

    def callback(info):
        result_states[info.step] = {k: v.clone() for k, v in info.state.items()}

    return callback


def test_unit_returns_grads_and_view_space_stats(process):
    x = process.initial_state()
    d = process.unit(x, 3)
    assert set(d) == set(process.param_keys) | set(STAT_KEYS)
    assert d[MEANS].shape == (150, 3) and d[COUNT].shape == (150,)
    assert float(d[MEANS].abs().sum()) > 0 and float(d[GRAD_ACCUM].sum()) > 0
    assert float(d[COUNT].max()) <= 2  # visible in at most the batch's 2 views
    again = process.unit(x, 3)
    assert all(torch.equal(d[k], again[k]) for k in d)
    assert not torch.equal(d[MEANS], process.unit(x, 4)[MEANS])


def test_unit_batch_with_different_counts_equals_per_slot_units(process):
    x0 = process.initial_state()
    x3 = run_sequential(process, x0, 3).state  # densified after step 2
    assert x3[MEANS].shape[0] > x0[MEANS].shape[0]
    xs, ts = [x0, x3, x0], [0, 3, 5]
    batched = process.unit_batch(xs, ts)
    for x, t, d in zip(xs, ts, batched):
        single = process.unit(x, t)
        for k in single:
            scale = single[k].abs().max().clamp_min(1e-8)
            assert float((d[k] - single[k]).abs().max() / scale) < 1e-4, (t, k)


def test_densify_update_reports_an_exact_index_map(process):
    x = run_sequential(process, process.initial_state(), 2).state
    d = process.unit(x, 2)
    stepped = process.optimizer.apply(x, {k: d[k] for k in process.param_keys}, 2)
    out = process.update(x, d, 2)
    assert isinstance(out, Updated) and out.index_map
    new, sources = out.state, out.index_map.sources
    n_new = new[MEANS].shape[0]
    assert n_new > x[MEANS].shape[0]
    for k in process.param_keys:
        src = sources[k]
        assert src.shape == (n_new,) and bool((src >= 0).all())
        for slot in ("exp_avg", "exp_avg_sq"):
            key = f"optim/{slot}/{k}"
            msrc = sources[key]
            kept = msrc >= 0
            assert torch.equal(new[key][kept], stepped[key][msrc[kept]])
            assert float(new[key][~kept].abs().sum()) == 0  # clones / split copies start at zero
            assert bool((msrc[kept] == src[kept]).all())
        assert torch.equal(new[f"optim/step/{k}"], stepped[f"optim/step/{k}"])
    # kept originals are exactly their sources' stepped rows; clones copy them; split copies shrink
    orig = sources[f"optim/exp_avg/{MEANS}"] >= 0
    for k in process.param_keys:
        assert torch.equal(new[k][orig], stepped[k][sources[k][orig]])
    shrink = stepped[SCALES][sources[SCALES]] - new[SCALES]
    assert bool((shrink[orig] == 0).all())
    fresh_shrink = shrink[~orig][:, 0]
    clone = fresh_shrink == 0
    assert torch.allclose(fresh_shrink[~clone], torch.tensor(math.log(1.6)))
    assert int(clone.sum()) > 0 and int((~clone).sum()) > 0
    assert torch.equal(new[OPACITIES], stepped[OPACITIES][sources[OPACITIES]])
    for k in STAT_KEYS:
        assert float(new[k].abs().sum()) == 0 and bool((sources[k] == -1).all())


def test_zero_threshold_reproduces_sequential_through_densification(process):
    x0 = process.initial_state()
    steps = 9
    seq_states, prop_states = {}, {}
    seq = PicardSolver(
        process, SolverConfig(window=1, threshold=0.0, adaptive=False), callback=record(seq_states)
    )
    seq = seq.run(x0, steps)
    prop = PicardSolver(
        process, SolverConfig(window=4, threshold=0.0, adaptive=False), callback=record(prop_states)
    ).run(x0, steps)
    assert states_equal(prop.state, seq.state)
    assert states_equal(prop.state, run_sequential(process, x0, steps).state)
    sizes = [seq_states[t][MEANS].shape[0] for t in range(1, steps + 1)]
    assert sizes[2] > sizes[1] and sizes[5] > sizes[4] and sizes[8] >= sizes[7]  # grew after 2, 5, 8
    for t, state in prop_states.items():  # every exact state, moments and counts included
        assert states_equal(state, seq_states[t]), t


def test_window_accepts_through_a_mid_window_densification(prior):
    """With lr 0 the guesses are exact, so acceptance only stops where the structure changes; the
    guesses after it, carried through the index map, must then be exact too (accepted next time)."""
    proc = build_process(make_cfg("gaussians.optimizer={name: adam, lr: 0.0}"), prior)
    x0 = proc.initial_state()
    steps = 9
    seq_states, prop_states = {}, {}
    seq = PicardSolver(
        proc, SolverConfig(window=1, threshold=0.0, adaptive=False), callback=record(seq_states)
    )
    seq = seq.run(x0, steps)
    prop = PicardSolver(
        proc, SolverConfig(window=6, threshold=0.0, adaptive=False), callback=record(prop_states)
    ).run(x0, steps)
    assert states_equal(prop.state, seq.state)
    assert prop.state[MEANS].shape[0] > x0[MEANS].shape[0]
    # windows stop right after each densification (after steps 2, 5, 8) and nowhere else
    assert prop.stats.accepted == [3, 3, 3]
    for t, state in prop_states.items():
        assert states_equal(state, seq_states[t]), t


def test_dreamgaussian_learning_rates():
    opt = make_optimizer(dreamgaussian_optimizer(500))
    assert opt.lr("gaussians.means", 0) == pytest.approx(1e-3)
    assert opt.lr("gaussians.means", 500) == pytest.approx(2e-5)
    assert opt.lr("gaussians.means", 250) == pytest.approx((1e-3 * 2e-5) ** 0.5)
    assert opt.lr("gaussians.colors", 300) == 0.01 and opt.lr("gaussians.opacities", 0) == 0.05
    assert opt.lr("gaussians.scales", 0) == 0.005 and opt.lr("gaussians.quats", 0) == 0.005


def test_memory_estimate_and_clear_error():
    cfg = make_cfg("gaussians.num_points=1000", "gaussians.densify.max_count=1000")
    small = estimate_memory_bytes(cfg, 1)
    assert estimate_memory_bytes(cfg, 8) > 4 * small
    big = make_cfg("gaussians.num_points=1000000", "gaussians.densify.max_count=1000000")
    assert estimate_memory_bytes(big, 8) > 500 * estimate_memory_bytes(cfg, 8)
    tight = make_cfg(
        "gaussians.num_points=1000000", "gaussians.densify.max_count=1000000", "gaussians.memory_limit_gb=1"
    )
    with pytest.raises(GaussianError, match=r"1000000 Gaussians x 16x16 px x batch 2 x window 8 need about"):
        check_memory(tight, 8, torch.device("cpu"))
    assert check_memory(make_cfg("gaussians.memory_limit_gb=1"), 8, torch.device("cpu")) < 2**30


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("gaussians.background=green", "gaussians.background must be one of"),
        ("gaussians.num_points=0", "number of Gaussians must be >= 1"),
        ("gaussians.num_points=5000", "exceeds the limit of 2000"),
        ("gaussians.backend=cuda", "gaussians.backend must be one of"),
    ],
)
def test_bad_config_is_one_clear_line(prior, override, message):
    with pytest.raises(GaussianError, match=message) as err:
        build_process(make_cfg(override), prior)
    assert "\n" not in str(err.value)


def test_opacity_entropy_term_adds_its_own_gradient(prior):
    """``gaussians.lambda_opaque`` adds the gradient of lambda x the mean binary entropy of the rendered
    alphas of the step's views (written out here, rendered with the rasterizer directly)."""
    from dreampropeller.scene.gaussian_raster import rasterize_gaussians

    plain = build_process(make_cfg(), prior)
    reg = build_process(make_cfg("gaussians.lambda_opaque=3.0"), prior)
    x = plain.initial_state()
    extra = {k: reg.unit(x, 4)[k] - plain.unit(x, 4)[k] for k in plain.param_keys}
    draws = plain._draws(4)
    leaves = {k: x[k].detach().requires_grad_(True) for k in plain.param_keys}
    out = rasterize_gaussians(leaves, draws["cameras"], 16, 16, draws["background"], backend="torch")
    a = out["alpha"].clamp(1e-5, 1 - 1e-5)
    entropy = -(a * a.log() + (1 - a) * (1 - a).log()).mean()
    ref = torch.autograd.grad(3.0 * entropy, [leaves[k] for k in plain.param_keys], allow_unused=True)
    for k, r in zip(plain.param_keys, ref):
        r = torch.zeros_like(x[k]) if r is None else r
        assert float(r.abs().max()) > 0 or k != OPACITIES
        assert torch.allclose(extra[k], r, atol=1e-6 + 1e-4 * float(r.abs().max())), k
