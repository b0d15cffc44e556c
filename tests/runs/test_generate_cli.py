"""`dreampropeller generate`: outputs, bad input (one line, exit 2, nothing written), NaN, Ctrl-C + resume."""

import json

import pytest
import torch

from dreampropeller.bench.picard import states_equal
from dreampropeller.cli import main
from dreampropeller.runs.directory import load_run_checkpoint as load_checkpoint
from dreampropeller.runs.progress import Progress

from .conftest import TINY_OVERRIDES


def gen(tmp_path, prior_dir, *extra, out="run", steps=6):
    return main(
        [
            "generate",
            "a red cube",
            "--out",
            str(tmp_path / out),
            "--steps",
            str(steps),
            "--quiet",
            "--prior-path",
            str(prior_dir),
            *TINY_OVERRIDES,
            *extra,
        ]
    )


@pytest.mark.slow
def test_generate_writes_a_complete_run(tmp_path, random_prior_dir):
    assert gen(tmp_path, random_prior_dir, "--window", "4") == 0
    out = tmp_path / "run"
    for name in (
        "config.yaml",
        "checkpoint.safetensors",
        "turntable.mp4",
        "views.png",
        "mesh.obj",
        "mesh.glb",
        "metrics.json",
        "log.txt",
    ):
        assert (out / name).is_file(), name
    assert not (out / "INCOMPLETE").exists()
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 6 and m["window"] == 4
    assert m["rounds_speedup"] == pytest.approx(6 / m["iterations"], abs=1e-3)
    assert m["unit_evals"] >= 6
    assert m["acceptance_rule"] == "tol=0.15"
    assert m["units_per_step"] == pytest.approx(m["unit_evals"] / 6, abs=1e-3)
    assert sum(m["accepted_trace"]) == 6
    assert set(m["wall_clock_split"]) >= {"units_s", "rollout_s", "bookkeeping_s", "export_s"}
    assert len(m["threshold_trace"]) == m["iterations"]
    import imageio.v3 as iio

    assert iio.imread(out / "turntable.mp4").shape[0] == 4
    scores = json.loads((out / "eval.json").read_text())  # a library prompt with the embedded prior
    assert scores["prompt"] == "a red cube" and scores["mesh"]["faces"] == m["mesh"]["faces"]
    assert (
        "colour spread" in (out / "report.html").read_text().lower()
        or "colour_spread" in (out / "report.html").read_text()
    )
    mesh = m["mesh"]  # the exported mesh's pieces, as the glb holds them
    import trimesh

    glb = trimesh.load(out / "mesh.glb", force="mesh")
    assert mesh["faces"] == len(glb.faces) and mesh["pieces"] >= 1
    assert 0.0 < mesh["largest_piece_fraction"] <= 1.0 and mesh["pieces_removed"] >= 0


def test_eval_prints_a_table_and_writes_json_only_when_asked(tmp_path, capsys, random_prior_dir):
    assert gen(tmp_path, random_prior_dir, "--window", "2", steps=2) == 0
    capsys.readouterr()
    run = tmp_path / "run"
    before = sorted(p.name for p in run.iterdir())
    assert main(["eval", str(run)]) == 0
    text = capsys.readouterr().out
    for label in ("shape R-precision", "silhouette IoU", "colour accuracy", "colour spread", "chamfer"):
        assert label in text
    assert sorted(p.name for p in run.iterdir()) == before  # no file without --json
    assert main(["eval", str(run), "--json", str(tmp_path / "scores" / "eval.json")]) == 0
    scores = json.loads((tmp_path / "scores" / "eval.json").read_text())
    assert scores["prompt"] == "a red cube" and f"{scores['silhouette_iou']:.3f}" in text
    assert scores["colour_spread"] >= 0.0 and scores["mesh"]["faces"] > 0
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "", "--out", "{out}"], "prompt is empty"),
        (
            ["generate", "a red cube", "--out", "{out}", "nerf.no_such_key=1"],
            "unknown config key 'nerf.no_such_key'",
        ),
        (["generate", "a red cube", "--out", "{out}", "--steps", "0"], "steps must be a positive integer"),
        (["generate", "a red cube", "--out", "{out}", "--config", "{missing}"], "not found"),
        (["generate", "a red cube", "--out", "{out}", "--config", "{bad}"], "cannot read config file"),
        (["generate", "a red cube", "--out", "{out}", "--prior", "nope"], "unknown prior"),
        (["generate", "a red cube", "--out", "{out}", "--prior-path", "{missing}"], "cannot load prior"),
        (["generate", "a red cube", "--out", "{out}", "--fixed-threshold"], "give --threshold too"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text("render: [unclosed\n")
    out = tmp_path / "out"
    subs = {"{out}": str(out), "{missing}": str(tmp_path / "missing.yaml"), "{bad}": str(bad)}
    code = main([subs.get(a, a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err
    assert len(err.splitlines()) == 1
    assert not out.exists()


def test_existing_output_is_refused_without_overwrite(tmp_path, capsys, random_prior_dir):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert gen(tmp_path, random_prior_dir) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path, capsys, random_prior_dir):
    # an infinite learning rate makes the first update diverge: the run must stop at step 0
    code = gen(tmp_path, random_prior_dir, "optimizer.lr=inf", "--window", "1")
    assert code == 1
    assert "NaN" in capsys.readouterr().err
    out = tmp_path / "run"
    state, step, _ = load_checkpoint(out)
    assert step == 0 and all(torch.isfinite(v).all() for v in state.values())
    assert (out / "INCOMPLETE").exists() and not (out / "metrics.json").exists()


def test_interrupt_then_resume_equals_uninterrupted(tmp_path, monkeypatch, random_prior_dir):
    exact = ["--threshold", "0", "--fixed-threshold", "--window", "3"]
    assert gen(tmp_path, random_prior_dir, *exact, out="full", steps=7) == 0
    full, _, _ = load_checkpoint(tmp_path / "full")

    calls = {"n": 0}
    original = Progress.__call__

    def interrupting(self, info):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        original(self, info)

    monkeypatch.setattr(Progress, "__call__", interrupting)
    assert gen(tmp_path, random_prior_dir, *exact, out="cut", steps=7) == 130
    monkeypatch.setattr(Progress, "__call__", original)
    cut = tmp_path / "cut"
    _, step, solver_state = load_checkpoint(cut)
    assert 0 < step < 7 and (cut / "INCOMPLETE").exists()
    assert "threshold" in solver_state  # the solver's resumable state travels in the checkpoint
    assert main(["generate", "--resume", str(cut), "--quiet"]) == 0
    resumed, step, _ = load_checkpoint(cut)
    assert step == 7 and states_equal(resumed, full)
    assert not (cut / "INCOMPLETE").exists()


@pytest.mark.parametrize(
    "flags, adaptive, threshold",
    [
        ([], False, 0.15),
        (["--threshold", "0.3"], False, 0.3),
        (["--rule", "ema"], True, None),
        (["--rule", "ema", "--threshold", "2"], True, 2.0),
        (["--threshold", "0", "--fixed-threshold"], False, 0.0),
    ],
)
def test_acceptance_rule_flags(tmp_path, capsys, flags, adaptive, threshold):
    """The sound tolerance rule by default; the authors' EMA rule only when asked for."""
    import yaml

    code = main(["generate", "a red cube", "--out", str(tmp_path / "o"), *flags, "--print-config"])
    assert code == 0
    picard = yaml.safe_load(capsys.readouterr().out)["picard"]
    assert picard["adaptive"] is adaptive and picard["threshold"] == threshold
