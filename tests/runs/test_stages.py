"""Staged runs (`--config magic3d`): a NeRF coarse stage, then a DMTet refined from it, in one directory;
the plan's config precedence, its refusals, and `--resume` of an interrupted stage."""

import json
import os

import pytest
import torch
import trimesh

from dreampropeller.cli import main
from dreampropeller.config.loading import ConfigError
from dreampropeller.runs.assets import TexturedMeshAsset
from dreampropeller.runs.directory import INCOMPLETE
from dreampropeller.runs.loading import load_run
from dreampropeller.runs.stages import STAGES_FILE, load_plan, plan_stages, run_stages

from .conftest import TINY_OVERRIDES
from .test_dmtet_run import DMTET_TINY

MAGIC3D = [{"name": "coarse", "representation": "nerf"}, {"name": "refine", "representation": "dmtet"}]


def test_plan_puts_stage_settings_between_config_files_and_overrides(tmp_path):
    stages = [{"name": "coarse", "representation": "nerf", "steps": 7, "seed": 3}, MAGIC3D[1]]
    overrides = ["seed=5", "picard.window=4"]
    plan = plan_stages(stages, tmp_path / "out", overrides=overrides, extra={"prompt": "p"})
    coarse, refine = plan
    assert (coarse.name, coarse.out) == ("coarse", tmp_path / "out" / "stages" / "1-coarse")
    assert refine.out == tmp_path / "out"  # the last stage is the run directory itself
    assert coarse.cfg.steps == 7 and refine.cfg.steps == 600  # a stage's own setting, else the default
    assert coarse.cfg.seed == refine.cfg.seed == 5  # the command line wins over a stage's setting
    assert coarse.cfg.picard.window == refine.cfg.picard.window == 4 and coarse.cfg.prompt == "p"
    assert refine.cfg.representation == "dmtet" and refine.cfg.dmtet.init_from == str(coarse.out.resolve())
    assert coarse.cfg.stages == refine.cfg.stages == []
    one = plan_stages(
        stages, tmp_path, overrides=["prompt=p", "steps=9", "stages.refine.steps=4", "stages.0.seed=2"]
    )
    assert [(s.cfg.steps, s.cfg.seed) for s in one] == [(9, 2), (4, 0)]  # one stage's override wins there
    with pytest.raises(ConfigError, match="no stage 'fine'"):
        plan_stages(stages, tmp_path, overrides=["stages.fine.steps=4"])


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ([{"name": "mesh", "representation": "dmtet"}], "put a stage before it"),
        ([{"name": "a"}, {"name": "a"}], "used twice"),
        ([{"representation": "nerf"}], "a name and config keys"),
        ([{"name": "../x"}], "plain name"),
        ([{"name": "a", "nerf": {"no_such_key": 1}}], "stage 'a'.*no_such_key"),
        ([{"name": "g", "representation": "gaussians"}, {"name": "m", "representation": "dmtet"}], "not one"),
        ([], "empty"),
    ],
)
def test_bad_plans_are_one_clear_line(tmp_path, stages, message):
    with pytest.raises(ConfigError, match=message):
        plan_stages(stages, tmp_path, extra={"prompt": "a red cube"})


@pytest.mark.slow
def test_magic3d_runs_both_stages_and_resumes_the_unfinished_one(tmp_path, random_prior_dir):
    torch.set_num_threads(1)
    out = tmp_path / "m3d"
    args = ["generate", "a red cube", "--out", str(out), "--config", "magic3d", "--steps", "2"]
    args += ["--window", "2", "--quiet", "--prior-path", str(random_prior_dir), *TINY_OVERRIDES, *DMTET_TINY]
    assert main(args) == 0
    coarse = out / "stages" / "1-coarse"
    for run_dir in (coarse, out):
        for name in ("mesh.glb", "turntable.mp4", "metrics.json", "checkpoint.safetensors", "report.html"):
            assert (run_dir / name).is_file(), (run_dir, name)
        assert not (run_dir / INCOMPLETE).exists()
    nerf, mesh = load_run(coarse), load_run(out)  # eval / report read the final stage where a run has it
    assert (nerf.cfg.representation, mesh.cfg.representation) == ("nerf", "dmtet")
    assert mesh.cfg.dmtet.init_from == str(coarse.resolve()) and nerf.step == mesh.step == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert [(s["name"], s["dir"], s["steps"]) for s in metrics["stages"]] == [
        ("coarse", "stages/1-coarse", 2),
        ("refine", ".", 2),
    ]
    assert [s.name for s in load_plan(out)] == ["coarse", "refine"] and (out / STAGES_FILE).is_file()

    # interrupted in the refine stage: its checkpoint is there, its outputs are not
    before = os.stat(coarse / "metrics.json").st_mtime_ns
    (out / "metrics.json").unlink()
    (out / INCOMPLETE).write_text("interrupted\n")
    assert main(["generate", "--resume", str(out), "--quiet"]) == 0
    assert os.stat(coarse / "metrics.json").st_mtime_ns == before  # the finished stage is not run again
    assert not (out / INCOMPLETE).exists()
    again = json.loads((out / "metrics.json").read_text())
    assert [s["name"] for s in again["stages"]] == ["coarse", "refine"] and again["steps"] == 2


@pytest.mark.slow
def test_dreamgaussian_second_stage_writes_a_uv_textured_glb(tmp_path, random_prior_dir):
    torch.set_num_threads(1)
    out = tmp_path / "dg"
    args = ["generate", "a red cube", "--out", str(out), "--config", "dreamgaussian", "--steps", "2"]
    args += ["--quiet", "--prior-path", str(random_prior_dir), *TINY_OVERRIDES, "gaussians.num_points=300"]
    args += ["gaussians.init_opacity=0.9", "stages.texture.texture.size=16"]
    assert main(args) == 0
    assert (out / "stages" / "1-gaussians" / "gaussians.ply").is_file()
    run = load_run(out)
    assert run.cfg.representation == "texture" and isinstance(run.asset, TexturedMeshAsset)
    glb = trimesh.load(out / "mesh.glb", force="mesh")
    assert glb.visual.kind == "texture" and glb.visual.material.baseColorTexture.size == (16, 16)
    assert (out / "texture.png").is_file() and (out / "report.html").is_file()
    # the texture stage's mesh is the Gaussian stage's export, unwrapped (seams copied, faces kept)
    first = trimesh.load(out / "stages" / "1-gaussians" / "mesh.glb", force="mesh")
    assert len(glb.faces) == len(first.faces) and len(glb.vertices) >= len(first.vertices)
    assert json.loads((out / "metrics.json").read_text())["mesh"]["pieces"] == 1


def test_a_staged_run_refuses_a_non_empty_directory(tmp_path):
    out = tmp_path / "x"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    plan = plan_stages(MAGIC3D, out, extra={"prompt": "a red cube"})
    with pytest.raises(ConfigError, match="not empty"):
        run_stages(plan, out)
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_bench_quality_runs_every_stage_of_a_staged_config_without_exports(tmp_path, random_prior_dir):
    from dreampropeller.bench.quality import generate_unscored

    torch.set_num_threads(1)
    out = tmp_path / "q"
    overrides = ["steps=2", "picard.window=1", f"prior_path={random_prior_dir}", *TINY_OVERRIDES, *DMTET_TINY]
    metrics = generate_unscored("a red cube", out, ["magic3d"], [*overrides, "stages.refine.steps=3"])
    assert load_run(out).cfg.representation == "dmtet" and load_run(out).step == 3  # the last stage scored
    assert load_run(out / "stages" / "1-coarse").step == 2
    assert [s["name"] for s in metrics["stages"]] == ["coarse", "refine"]
    assert metrics["wall_clock_s"] == pytest.approx(sum(s["wall_clock_s"] for s in metrics["stages"]))
    assert not list(out.rglob("mesh.glb")) and not list(out.rglob("turntable.mp4"))  # nothing exported
    with pytest.raises(ConfigError, match="staged config"):
        generate_unscored("a red cube", tmp_path / "p", [], ["stages.refine.steps=3"])


def test_generate_refuses_one_stage_overrides_without_stages(tmp_path, capsys):
    assert main(["generate", "a red cube", "--out", str(tmp_path / "x"), "stages.refine.steps=3"]) == 2
    assert "need a staged config" in capsys.readouterr().err and not (tmp_path / "x").exists()
