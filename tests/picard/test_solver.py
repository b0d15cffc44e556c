"""The solver: exactness at threshold 0, progress, structure changes, bad input, NaN handling."""

import math

import pytest
import torch

from dreampropeller.bench.picard import states_equal
from dreampropeller.bench.problems import GrowingFourier, make_problem
from dreampropeller.picard.executors import BatchedExecutor, DevicesExecutor, Executor
from dreampropeller.picard.process import IndexMap, PicardError, Process, Updated
from dreampropeller.picard.solver import PicardSolver, SolverConfig, run_sequential

STEPS = 40


def plain_loop(process, x, steps):
    """The reference: the textbook sequential loop, independent of the solver."""
    from dreampropeller.picard.process import as_updated

    for t in range(steps):
        x = as_updated(process.update(x, process.unit(x, t), t)).state
    return x


@pytest.fixture
def single_thread():
    """CPU BLAS picks its blocking by how many threads it gets; concurrent worker threads get fewer,
    which changes float summation order. Bit-exact comparisons therefore run single-threaded."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def exact_config(window):
    return SolverConfig(window=window, threshold=0.0, adaptive=False)


def small_problem(name):
    if name == "growing":
        p = GrowingFourier(every=7)
        return p, p.initial_state(p.init)
    pr = make_problem(name)
    return pr.process, pr.x0


@pytest.mark.parametrize("name", ["quadratic", "mlp", "nonconvex", "growing", "mlp-sgd"])
@pytest.mark.parametrize("window", [1, 2, 7, 8, STEPS + 5])
@pytest.mark.parametrize("executor", ["sequential", "devices"])
def test_zero_threshold_is_bit_exact(name, window, executor, single_thread):
    process, x0 = small_problem(name)
    ref = plain_loop(process, dict(x0), STEPS)
    ex = Executor() if executor == "sequential" else DevicesExecutor(["cpu", "cpu"])
    result = PicardSolver(process, exact_config(window), executor=ex).run(x0, STEPS)
    ex.close()
    assert result.step == STEPS and result.stats.status == "done"
    # parameters AND optimizer state (moments, step counts): the Adam-aliasing regression test
    assert states_equal(result.state, ref)
    assert any(k.startswith(("optim/exp_avg/", "optim/momentum_buffer/")) for k in ref)
    if name == "growing":
        assert ref["coef"].shape[0] == 4 + 4 * (STEPS // 7)


@pytest.mark.parametrize("name", ["quadratic", "mlp", "growing"])
def test_batched_executor_matches_within_rounding(name):
    process, x0 = small_problem(name)
    ref = plain_loop(process, dict(x0), STEPS)
    assert process.has_unit_batch
    result = PicardSolver(process, exact_config(8), executor=BatchedExecutor()).run(x0, STEPS)
    for k in ref:
        assert result.state[k].shape == ref[k].shape
        scale = ref[k].abs().max().clamp_min(1e-12)
        assert float((result.state[k] - ref[k]).abs().max() / scale) <= 1e-5, k


def test_progress_and_iteration_cap():
    process, x0 = small_problem("mlp")
    result = PicardSolver(process, SolverConfig(window=8)).run(x0, STEPS)
    assert all(a >= 1 for a in result.stats.accepted)
    assert sum(result.stats.accepted) == STEPS
    assert result.stats.iterations <= STEPS
    assert result.stats.unit_evals <= 8 * result.stats.iterations
    # zero threshold: a step is accepted only where its guess was bit-identical to the rollout
    exact = PicardSolver(process, exact_config(4)).run(x0, STEPS)
    assert STEPS / 4 <= exact.stats.iterations <= STEPS
    for row, accepted in zip(exact.stats.errors, exact.stats.accepted, strict=True):
        assert all(e == 0.0 for e in row[: accepted - 1])


def test_default_rule_speeds_up_and_stays_close():
    process, x0 = small_problem("nonconvex")
    seq = run_sequential(process, x0, 400)
    prop = PicardSolver(process, SolverConfig(window=8)).run(x0, 400)
    assert prop.stats.rounds_speedup > 4.0
    assert abs(process.objective(prop.state, 0) / process.objective(seq.state, 0) - 1) < 0.01


@pytest.mark.parametrize("steps", [0, 1])
def test_tiny_horizons(steps):
    process, x0 = small_problem("quadratic")
    ref = plain_loop(process, dict(x0), steps)
    result = PicardSolver(process, SolverConfig(window=8)).run(x0, steps)
    assert result.step == steps and result.stats.iterations == steps
    assert states_equal(result.state, ref)


def test_window_one_is_sequential():
    process, x0 = small_problem("mlp")
    result = PicardSolver(process, SolverConfig(window=1)).run(x0, STEPS)
    assert result.stats.iterations == STEPS and result.stats.unit_evals == STEPS
    assert states_equal(result.state, plain_loop(process, dict(x0), STEPS))


def test_resume_from_a_middle_step_equals_one_run():
    process, x0 = small_problem("growing")
    first = PicardSolver(process, exact_config(8)).run(x0, 20)
    rest = PicardSolver(process, exact_config(8)).run(first.state, STEPS, start=20)
    assert states_equal(rest.state, plain_loop(process, dict(x0), STEPS))


@pytest.mark.parametrize("config", [SolverConfig(window=8), SolverConfig.paper(window=8)])
def test_structure_change_inside_window_with_a_threshold(config):
    process, x0 = small_problem("growing")
    result = PicardSolver(process, config).run(x0, STEPS)
    ref = plain_loop(process, dict(x0), STEPS)
    assert result.state["coef"].shape == ref["coef"].shape
    assert result.state["optim/exp_avg/coef"].shape == ref["coef"].shape
    # a guess that no longer fits the structure counts as an infinite error
    assert any(math.isinf(e) for row in result.stats.errors for e in row)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"window": 0}, "window"),
        ({"threshold": -1.0}, "threshold"),
        ({"ema": 1.0}, "ema"),
        ({"ema": -0.1}, "ema"),
        ({"aggregate": "max"}, "aggregate"),
        ({"init": "zeros"}, "init"),
        ({"threshold": None, "adaptive": False}, "fixed"),
    ],
)
def test_bad_config_is_a_clear_error(kwargs, match):
    with pytest.raises(PicardError, match=match):
        SolverConfig(**kwargs)


def test_bad_steps_and_state():
    process, x0 = small_problem("quadratic")
    solver = PicardSolver(process, SolverConfig())
    with pytest.raises(PicardError, match="steps"):
        solver.run(x0, -1)
    with pytest.raises(PicardError, match="lacks parameter"):
        solver.run({k: v for k, v in x0.items() if k != "x"}, 5)


class ShapeMismatchDistance(Process):
    param_keys = ("w",)

    def distance(self, a, b):
        return float((a["w"] - b["w"].reshape(2, 3)).square().mean())

    def unit(self, x, t):
        return {"w": torch.ones_like(x["w"])}

    def update(self, x, d, t):
        return {"w": x["w"] - 0.1 * d["w"]}


def test_state_shape_disagreeing_with_distance_is_named():
    with pytest.raises(PicardError, match="distance"):
        PicardSolver(ShapeMismatchDistance(), SolverConfig()).run({"w": torch.zeros(4)}, 3)


class NanAt(Process):
    """x <- x - 0.1 * (x - 1); the unit returns NaN once x's step counter reaches ``bad``."""

    param_keys = ("x",)

    def __init__(self, bad):
        self.bad = bad

    def unit(self, x, t):
        g = x["x"] - 1.0
        return {"x": g * float("nan") if t >= self.bad else g}

    def update(self, x, d, t):
        return {"x": x["x"] - 0.1 * d["x"], "n": x["n"] + 1}


@pytest.mark.parametrize("window", [1, 3, 8])
@pytest.mark.parametrize("rule", ["exact", "default", "paper"])
def test_nan_stops_with_last_exact_state(window, rule):
    process = NanAt(bad=10)
    x0 = {"x": torch.zeros(3), "n": torch.zeros(())}
    config = {
        "exact": exact_config(window),
        "default": SolverConfig(window=window),
        "paper": SolverConfig.paper(window=window),
    }[rule]
    result = PicardSolver(process, config).run(x0, 30)
    assert result.stats.status == "nan"
    assert result.step == 10
    assert torch.isfinite(result.state["x"]).all()
    assert int(result.state["n"]) == 10
    if rule == "exact":
        assert states_equal(result.state, plain_loop(process, dict(x0), 10))


class InPlace(Process):
    param_keys = ("x",)

    def unit(self, x, t):
        return {"x": torch.ones_like(x["x"])}

    def update(self, x, d, t):
        x["x"].sub_(d["x"])
        return x


def test_in_place_update_is_refused():
    with pytest.raises(PicardError, match="in place"):
        PicardSolver(InPlace(), SolverConfig()).run({"x": torch.zeros(2)}, 3)


@pytest.mark.parametrize("init", ["extrapolate", "velocity"])
@pytest.mark.parametrize("name", ["quadratic", "growing"])
def test_every_guess_generator_is_exact_at_zero_threshold(name, init, single_thread):
    """Guesses only decide how much is accepted, never what the accepted steps are."""
    process, x0 = small_problem(name)
    ref = plain_loop(process, dict(x0), STEPS)
    cfg = SolverConfig(window=8, threshold=0.0, init=init)
    assert states_equal(PicardSolver(process, cfg).run(x0, STEPS).state, ref)


def test_velocity_guesses_continue_the_last_rolled_step():
    """New slots are the last rolled-out parameters moved on by k times the last step (damped); the
    optimizer state is copied, never extrapolated (hand computation on a two-state rollout)."""
    solver = PicardSolver(Quadratic1D(), SolverConfig(window=4, init="velocity", damping=0.5))
    a = {"x": torch.tensor([1.0]), "m": torch.tensor([7.0])}
    b = {"x": torch.tensor([3.0]), "m": torch.tensor([8.0])}
    velocity = solver._velocity([a, b])
    guesses = solver._fill([b], 4, 0, None, velocity)
    assert [float(g["x"]) for g in guesses] == [3.0, 4.0, 5.0, 6.0]
    assert all(float(g["m"]) == 8.0 for g in guesses)


class Quadratic1D(Process):
    param_keys = ("x",)

    def unit(self, x, t):
        return {"x": x["x"]}

    def update(self, x, drift, t):
        return {"x": x["x"] - 0.1 * drift["x"], "m": x["m"]}


@pytest.mark.parametrize("name", ["quadratic", "growing", "mlp-sgd"])
def test_linearized_rollout_is_exact_at_zero_threshold(name, single_thread):
    process, x0 = small_problem(name)
    cfg = SolverConfig(window=8, threshold=0.0, linearize=True)
    assert states_equal(PicardSolver(process, cfg).run(x0, STEPS).state, plain_loop(process, dict(x0), STEPS))


def test_linearized_rollout_gives_better_guesses_on_a_quadratic():
    """On a quadratic the drift is linear in the state, so the secant slope moves a drift to the rolled
    state almost exactly: more of each window is accepted, at the same tolerance and quality."""
    process, x0 = small_problem("quadratic")
    seq = process.objective(run_sequential(process, x0, 300).state, 0)
    runs = {
        lin: PicardSolver(process, SolverConfig(window=8, init="copy", linearize=lin)).run(x0, 300)
        for lin in (False, True)
    }
    assert runs[True].stats.rounds_speedup > 1.15 * runs[False].stats.rounds_speedup
    for r in runs.values():
        assert abs(process.objective(r.state, 0) / seq - 1) < 0.01


class ChoosyGrowth(Process):
    """Gradient descent towards 1 on every row; every ``every`` steps it appends one or two rows, as
    many as the parity of the state's sum in millionths says, so a guess a little off the rollout
    often grows differently from it (like a densification that picks other Gaussians)."""

    param_keys = ("x",)
    every = 10

    def unit(self, x, t):
        return {"x": x["x"] - 1.0}

    def update(self, x, drift, t):
        new = {"x": x["x"] - 0.05 * drift["x"]}
        if (t + 1) % self.every:
            return new
        k = 1 + int(float(new["x"].sum()) * 1e6) % 2
        n = new["x"].shape[0]
        src = torch.cat([torch.arange(n), torch.full((k,), -1)])
        return Updated({"x": torch.cat([new["x"], torch.zeros(k)])}, IndexMap({"x": src}))


def test_guesses_from_another_structure_change_do_not_stall_later_windows():
    """A guess whose structure came from another growth than the rollout's is dropped, not copied into
    every later window: the run keeps advancing several steps per iteration after such a mismatch."""
    process, x0 = ChoosyGrowth(), {"x": torch.zeros(4)}
    ref = plain_loop(process, dict(x0), 60)
    result = PicardSolver(process, SolverConfig(window=12)).run(x0, 60)
    rows = list(zip(result.stats.accepted, result.stats.errors))
    mismatches = [i for i, (_, errors) in enumerate(rows) if errors and math.isinf(errors[-1])]
    assert mismatches  # the growth did differ between a guess and its rollout
    # kept, the stale guesses made every later window advance one step (1.33x in all)
    assert result.stats.rounds_speedup > 3
    assert max(result.stats.accepted[mismatches[0] + 1 :]) > 2
    exact = PicardSolver(process, exact_config(12)).run(x0, 60)
    assert states_equal(exact.state, ref)


def test_velocity_is_carried_through_a_structure_change():
    """When the last rolled-out step grew the state, new slots move each row like its source row moved
    in the step before (rows without a source stand still); hand values."""
    solver = PicardSolver(Quadratic1D(), SolverConfig(window=4, init="velocity"))
    a0 = {"x": torch.tensor([0.0, 0.0]), "m": torch.tensor([0.0])}
    a1 = {"x": torch.tensor([1.0, 2.0]), "m": torch.tensor([0.0])}
    a2 = {"x": torch.tensor([1.5, 2.5, 9.0]), "m": torch.tensor([0.0])}
    index_map = IndexMap({"x": torch.tensor([1, 0, -1])})
    a2["x"] = torch.tensor([2.5, 1.5, 9.0])  # rows reordered by the map: row 0 comes from old row 1
    velocity = solver._velocity([a0, a1, a2], [(a1, a2, index_map)])
    assert velocity["x"].tolist() == [2.0, 1.0, 0.0]
    # with no step before it in the rollout, the previous window's velocity is carried instead
    carried = solver._velocity([a1, a2], [(a1, a2, index_map)], {"x": torch.tensor([3.0, 4.0])})
    assert carried["x"].tolist() == [4.0, 3.0, 0.0]


def test_match_changes_pairs_rows_by_source_and_rank():
    """Two structure changes of one state: rows pair up when they have the same source and the same rank
    among that source's rows (hand-worked example)."""
    from dreampropeller.picard.process import match_changes

    new = IndexMap({"x": torch.tensor([0, 2, 3, 1, 1, -1])})
    old = IndexMap({"x": torch.tensor([0, 1, 2, 3, 2, -1, -1])})
    # new row 4 is source 1's second copy: old has only one row from source 1
    assert match_changes(new, old).sources["x"].tolist() == [0, 2, 3, 1, -1, -1]
    assert (
        match_changes(new, IndexMap({"x": torch.tensor([], dtype=torch.long)})).sources["x"].tolist()
        == [-1] * 6
    )


def test_guesses_after_another_structure_change_are_carried_onto_the_rollouts():
    """When the rollout's last step grew the state otherwise than the guesses had it (the previous
    iteration's growth), the guesses after it move onto the rollout's rows through the rows both growths
    share; rows they do not share stay at the rollout's value (hand values)."""
    before = {"x": torch.tensor([1.0, 2.0])}
    # the previous rollout grew row 0 once more; this rollout grew row 1 twice
    prev_after = {"x": torch.tensor([1.0, 2.0, 1.0])}
    prev_map = IndexMap({"x": torch.tensor([0, 1, 0])})
    after = {"x": torch.tensor([1.5, 2.5, 2.5, 2.5])}
    this_map = IndexMap({"x": torch.tensor([0, 1, 1, 1])})
    stale = {"x": torch.tensor([1.0, 2.0, 1.0])}  # the guess at the growth, the previous growth's rows
    later = {"x": torch.tensor([1.1, 2.3, 0.6])}  # moved on by (0.1, 0.3, -0.4)
    guesses = [before, stale, later]
    out = PicardSolver._slide(
        guesses, [before, after], 1, [(before, after, this_map)], [(before, prev_after, prev_map)]
    )
    assert len(out) == 2 and out[0] is after
    assert torch.allclose(out[1]["x"], torch.tensor([1.6, 2.8, 2.5, 2.5]))
    # without the previous growth's map the stale guess is dropped (new slots come from the rollout)
    assert len(PicardSolver._slide(guesses, [before, after], 1, [(before, after, this_map)])) == 1
