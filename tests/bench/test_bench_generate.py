"""bench generate's one-ulp control: the nudge is one float ulp, and the control run starts from it."""

import json

import numpy as np
import torch

import dreampropeller.bench.generate as bench_generate_module
from dreampropeller.bench.generate import nudge_one_ulp

from .test_bench_vsd import TINY, spy


def test_nudge_moves_each_named_float_one_ulp_up_and_nothing_else():
    x = {"a": torch.tensor([1.0, -2.0, 0.0, 3e-39]), "b": torch.tensor([5.0]), "n": torch.tensor([3])}
    out = nudge_one_ulp(x, ("a", "n"))
    expected = np.nextafter(x["a"].numpy(), np.float32(np.inf))
    assert np.array_equal(out["a"].numpy(), expected)
    assert (out["a"] > x["a"]).all() and float(out["a"][2]) == float(
        np.nextafter(np.float32(0), np.float32(1))
    )
    assert out["b"] is x["b"] and torch.equal(out["n"], x["n"])  # unnamed and integer entries untouched
    assert torch.equal(x["a"], torch.tensor([1.0, -2.0, 0.0, 3e-39]))  # the input is not modified


def test_ulp_control_reruns_the_sequential_run_from_the_nudged_start(monkeypatch, tmp_path, capsys):
    from dreampropeller.cli import main

    torch.set_num_threads(1)
    built = spy(monkeypatch, bench_generate_module, lambda cfg, process: (cfg.picard.window, process))
    starts = []
    real_solve = bench_generate_module.solve

    def solve(process, cfg, executor, state=None):
        starts.append(process.initial_state() if state is None else state)
        return real_solve(process, cfg, executor, state)

    monkeypatch.setattr(bench_generate_module, "solve", solve)
    args = ["bench", "generate", "--steps", "2", "--window", "2", "--ulp-control"]
    args += ["--json", str(tmp_path / "b.json")]
    assert main([*args, *TINY]) == 0
    assert "one ulp away" in capsys.readouterr().out
    result = json.loads((tmp_path / "b.json").read_text())
    assert [w for w, _ in built] == [1, 2, 1]  # sequential, propelled, the control (sequential)
    plain, nudged = starts[0], starts[2]  # what the sequential run and the control started from
    key = built[0][1].param_keys[0]
    assert torch.equal(nudged[key], torch.nextafter(plain[key], torch.full_like(plain[key], float("inf"))))
    run = result["runs"][0]
    assert run["ulp_control"]["iterations"] == 2 and "_views" not in run["ulp_control"]
    assert result["noise"]["psnr_sequential_vs_one_ulp"] == [run["psnr_ulp_control"]]
    assert run["psnr_ulp_control"] > 20.0  # one ulp, two steps: the turntables nearly agree
