"""The run's progress callback checkpoints the solver state a resume must start from."""

import torch

from dreampropeller.bench.controls import make_control
from dreampropeller.picard.solver import PicardSolver, SolverConfig
from dreampropeller.runs.directory import load_run_checkpoint
from dreampropeller.runs.progress import Progress


def test_periodic_checkpoint_holds_the_threshold_after_its_iteration(tmp_path):
    """With the adaptive rule the threshold changes every iteration: the checkpoint written after
    iteration k must hold the value iteration k+1 judges with (it held the one iteration k used)."""
    control = make_control("noise")
    progress = Progress(tmp_path, total=40, start=0, enabled=False, checkpoint_every_s=-1.0)
    saved = []

    def callback(info):
        progress(info)
        saved.append(load_run_checkpoint(tmp_path))

    result = PicardSolver(control, SolverConfig.paper(window=8), callback=callback).run(
        control.initial_state(), 40
    )
    progress.close()
    thresholds = result.stats.thresholds
    for (_, _, solver), next_threshold in zip(saved, thresholds[1:]):
        assert solver["threshold"] == next_threshold
        assert solver["step_scale"] > 0
    state, step, solver = saved[-1]
    assert step == 40 and torch.equal(state["x"], result.state["x"])
    assert solver == result.solver_state
