"""The sound default acceptance rule: negative controls, step scale through structure changes,
buffers a unit reads, and the resumable solver state."""

import math

import pytest
import torch

from dreampropeller.bench.controls import CONTROLS, make_control
from dreampropeller.bench.picard import states_equal
from dreampropeller.picard.process import IndexMap, Process, Updated, matched_rows
from dreampropeller.picard.solver import DEFAULT_TOLERANCE, PicardSolver, SolverConfig, run_sequential


@pytest.mark.parametrize("name", CONTROLS)
@pytest.mark.parametrize("window", [4, 8, 16])
def test_negative_controls_get_no_speedup_under_the_default_rule(name, window):
    control = make_control(name)
    result = PicardSolver(control, SolverConfig(window=window)).run(control.initial_state(), 200)
    assert 1.0 <= result.stats.rounds_speedup <= 1.1


@pytest.mark.parametrize("name", CONTROLS)
def test_the_authors_rule_accepts_negative_controls_by_construction(name):
    """The control has teeth: the adaptive window-middle rule reports a speedup on guesses never right."""
    control = make_control(name)
    result = PicardSolver(control, SolverConfig.paper(window=8)).run(control.initial_state(), 200)
    assert result.stats.rounds_speedup > 3.0


@pytest.mark.parametrize("name", CONTROLS)
def test_control_drift_changes_with_any_change_of_state(name):
    control = make_control(name)
    x = control.initial_state()
    nudged = dict(x, x=x["x"] + 1e-3)  # a tenth of one Adam step (lr 0.01)
    a, b = control.unit(x, 5)["x"], control.unit(nudged, 5)["x"]
    assert torch.equal(control.unit(x, 5)["x"], a)  # deterministic in (x, t)
    # unrelated drifts: the difference is as large as the drifts themselves
    assert float((a - b).norm()) > 0.5 * float(a.norm())


def test_default_is_the_sound_rule():
    cfg = SolverConfig()
    assert not cfg.adaptive and cfg.threshold == DEFAULT_TOLERANCE and cfg.scale == "step"
    assert cfg.rule == f"tol={DEFAULT_TOLERANCE:g}"
    paper = SolverConfig.paper()
    assert paper.adaptive and paper.threshold is None and paper.aggregate == "middle"
    assert paper.rule == "ema-middle"


def test_matched_rows_pairs_new_rows_with_their_sources():
    before = {"x": torch.tensor([[1.0], [2.0], [3.0]]), "s": torch.tensor(4.0)}
    after = {"x": torch.tensor([[3.5], [0.0], [1.5]]), "s": torch.tensor(5.0)}
    new, old = matched_rows(before, after, IndexMap({"x": torch.tensor([2, -1, 0])}))
    assert torch.equal(new["x"], torch.tensor([[3.5], [1.5]]))
    assert torch.equal(old["x"], torch.tensor([[3.0], [1.0]]))
    assert torch.equal(new["s"], after["s"]) and torch.equal(old["s"], before["s"])


class GrowingNoise(Process):
    """Noise drift keyed on (x, t), plain SGD, and one new row every ``every`` steps."""

    param_keys = ("x",)

    def __init__(self, every: int = 3, lr: float = 1e-3) -> None:
        self.every, self.lr = every, lr

    def unit(self, x, t):
        key = hash((x["x"].numpy().tobytes(), t)) & (2**62 - 1)
        return {"x": torch.randn(x["x"].shape, generator=torch.Generator().manual_seed(key))}

    def update(self, x, drift, t):
        new = x["x"] - self.lr * drift["x"]
        if (t + 1) % self.every:
            return {"x": new}
        n = new.shape[0]
        grown = torch.cat([new, torch.zeros(1, new.shape[1])])
        return Updated({"x": grown}, IndexMap({"x": torch.cat([torch.arange(n), torch.tensor([-1])])}))


def test_errors_keep_their_unit_when_the_exact_step_changes_structure():
    """Windows starting at a growth step used to compare raw errors (~lr^2) with a threshold in step^2
    units and accepted whole windows of noise; measured on matched rows they are rejected."""
    proc = GrowingNoise()
    x0 = {"x": torch.randn(4, 2, generator=torch.Generator().manual_seed(0))}
    starts = []
    result = PicardSolver(
        proc, SolverConfig(window=6, threshold=0.1), callback=lambda i: starts.append(i.step)
    ).run(x0, 30)
    assert result.stats.accepted == [1] * 30
    # raw errors of the speculative guesses are ~1e-6, far below the threshold in the wrong unit
    assert max(e for row in result.stats.errors for e in row if math.isfinite(e)) > 0.1


class GridProcess(Process):
    """Drift = the value of a buffer ``grid`` that the update refreshes every 4 steps (x never matters)."""

    param_keys = ("x",)
    unit_keys = ("grid",)

    def unit(self, x, t):
        return {"x": torch.full_like(x["x"], float(x["grid"]))}

    def update(self, x, drift, t):
        return {"x": x["x"] - 0.01 * drift["x"], "grid": torch.tensor(float((t + 1) // 4))}


def test_a_guess_whose_unit_read_other_buffers_is_not_accepted():
    proc = GridProcess()
    x0 = {"x": torch.zeros(3), "grid": torch.tensor(0.0)}
    seq = run_sequential(proc, x0, 40)
    # a tolerance that accepts any parameter error: only the grid can tell the guesses apart
    result = PicardSolver(proc, SolverConfig(window=8, threshold=1e9)).run(x0, 40)
    assert states_equal(result.state, seq.state)
    assert result.stats.rounds_speedup > 1.5  # windows still run on between refreshes


def test_iteration_reports_the_threshold_a_resume_must_start_from():
    control = make_control("noise")
    seen = []
    solver = PicardSolver(
        control, SolverConfig.paper(window=8), callback=lambda i: seen.append(i.solver_state)
    )
    result = solver.run(control.initial_state(), 60)
    # the state after iteration k holds the threshold iteration k+1 judged with
    assert [s["threshold"] for s in seen[:-1]] == result.stats.thresholds[1:]
    assert result.solver_state == seen[-1] and result.solver_state["step_scale"] > 0
    resumed = PicardSolver(control, SolverConfig.paper(window=8))
    resumed.load_state_dict(seen[3])
    assert resumed.state_dict() == seen[3]


def test_a_fixed_tolerance_is_configuration_not_resumed_state():
    """Resuming with another fixed tolerance uses the one given (the checkpoint's is ignored); the
    adaptive rule's threshold is state and is restored."""
    saved = {"threshold": 0.15, "step_scale": 2.0}
    fixed = PicardSolver(make_control("noise"), SolverConfig(threshold=0.0))
    fixed.load_state_dict(saved)
    assert fixed.state_dict() == {"threshold": 0.0, "step_scale": 2.0}
    adaptive = PicardSolver(make_control("noise"), SolverConfig.paper())
    adaptive.load_state_dict(saved)
    assert adaptive.state_dict() == saved
