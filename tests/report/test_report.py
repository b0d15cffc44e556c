"""report.html of a run: written by generate, self-contained (every file embedded, nothing fetched),
under 5 MB, every plot present; `dreampropeller report` rebuilds it with scores or compares runs;
trace.jsonl and the TensorBoard logs are written as the run goes."""

import base64
import json
import os
import re

import pytest

from dreampropeller.cli import main
from dreampropeller.report.data import load_run_data
from dreampropeller.report.plots import PLOTS
from dreampropeller.report.splats import pack_splats
from dreampropeller.report.trace import TRACE

from .conftest import STEPS, WINDOW, copy_run, write_splats

PLOT_KEYS = ("accepted", "threshold", "units", "wall", "signal")


def embedded(html: str, element_id: str) -> bytes:
    match = re.search(rf'<script type="application/octet-stream" id="{element_id}">([^<]*)</script>', html)
    assert match, element_id
    return base64.b64decode(match.group(1))


def test_generate_writes_a_self_contained_report(tiny_run):
    path = tiny_run / "report.html"
    html = path.read_text()
    assert path.stat().st_size < 5_000_000
    # nothing from the network: no external script, stylesheet, image, video or font
    assert not re.search(r'(src|href)="(?!data:|#)', html), "an external reference"
    assert not re.search(
        r"https?://", re.sub(r'xmlns(:\w+)?="[^"]*"', "", html)
    )  # (SVG namespaces are names)
    assert "<link" not in html and "@import" not in html
    # the run's files are embedded as they are
    assert embedded(html, "glb-0") == (tiny_run / "mesh.glb").read_bytes()
    video = base64.b64encode((tiny_run / "turntable.mp4").read_bytes()).decode()
    assert f"data:video/mp4;base64,{video}" in html
    assert "data:image/png;base64," in html
    for key in PLOT_KEYS:
        assert f'data-plot="{key}"' in html
    assert len(PLOTS) == len(PLOT_KEYS)
    assert "a red cube" in html and "tol=0.15" in html
    # a library prompt with the embedded prior: generate scored it (eval.json) and the report shows it
    assert "shape R-precision (1 best)" in html and "not scored" not in html
    assert (tiny_run / "eval.json").is_file()


def test_trace_has_one_row_per_iteration(tiny_run):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    rows = [json.loads(line) for line in (tiny_run / TRACE).read_text().splitlines()]
    assert [r["iteration"] for r in rows] == list(range(1, metrics["iterations"] + 1))
    assert [r["accepted"] for r in rows] == metrics["accepted_trace"]
    assert [r["threshold"] for r in rows] == pytest.approx(metrics["threshold_trace"], rel=1e-5)
    assert rows[-1]["step"] == STEPS and all(r["step"] - r["start"] == r["accepted"] for r in rows)
    assert sum(r["units"] for r in rows) == metrics["unit_evals"]
    assert all(1 <= r["units"] <= WINDOW and len(r["errors"]) <= WINDOW - 1 for r in rows)
    assert all(r["grad_ema_rms"] > 0 and r["step_scale"] > 0 for r in rows)


def test_tensorboard_logs_scalars_and_renders(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = EventAccumulator(str(tiny_run / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = logs.Tags()
    for tag in ("picard/accepted_steps", "picard/threshold", "optim/gradient_ema_rms", "time/units_s"):
        assert tag in tags["scalars"], tag
    accepted = logs.Scalars("picard/accepted_steps")
    assert sum(e.value for e in accepted) == STEPS and accepted[-1].step == STEPS
    renders = logs.Images("render/turntable")
    assert renders and renders[-1].step == STEPS
    assert renders[-1].width == 4 * renders[-1].height  # four views side by side


def test_report_command_rebuilds_a_runs_report_with_its_scores(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    assert main(["report", str(run)]) == 0
    assert f"report written to {run / 'report.html'}" in capsys.readouterr().out
    html = (run / "report.html").read_text()
    assert "silhouette IoU" in html and "chamfer" in html and "not scored" not in html


def test_report_command_compares_runs(tiny_run, tmp_path):
    other = copy_run(tiny_run, tmp_path / "sequential")
    (other / TRACE).unlink()  # a run from before trace.jsonl: the plots fall back to metrics.json
    write_splats(other / "gaussians.ply")
    out = tmp_path / "compare.html"
    assert main(["report", str(other), str(tiny_run), "--no-eval", "--out", str(out)]) == 0
    html = out.read_text()
    assert 'id="compare"' in html and "wall-clock speedup vs sequential" in html
    assert html.index(">sequential<") < html.index(">propelled<")  # in the order given
    assert embedded(html, "splats-0") == pack_splats(other / "gaussians.ply")
    assert 'data-viewer-mode="splats"' in html and 'data-viewer-mode="mesh"' in html
    assert all(f'data-plot="{key}"' in html for key in PLOT_KEYS)


def test_splats_keep_the_most_opaque_gaussians(tmp_path):
    ply = write_splats(tmp_path / "gaussians.ply", n=50, rgb=(0.1, 0.8, 0.2))
    packed = pack_splats(ply, limit=20)
    n = int.from_bytes(packed[:4], "little")
    assert n == 20 and len(packed) == 4 + n * 20
    rgba = packed[4 + n * 16 :]
    assert list(rgba[:3]) == pytest.approx([25.5, 204, 51], abs=1) and rgba[3] > 240  # colour, opacity


def test_eval_json_newer_than_the_checkpoint_is_shown(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    (run / "eval.json").write_text(json.dumps({"silhouette_iou": 0.5}))
    assert load_run_data(run).scores == {"silhouette_iou": 0.5}
    stale = (run / "checkpoint.safetensors").stat().st_mtime - 10  # scored before the run was resumed
    os.utime(run / "eval.json", (stale, stale))
    assert load_run_data(run).scores is None


@pytest.mark.parametrize(
    "argv, message",
    [
        (["report", "{missing}"], "does not exist"),
        (["report", "{empty}"], "has no metrics.json"),
    ],
)
def test_report_of_no_run_is_one_line(tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    subs = {"{missing}": str(tmp_path / "missing"), "{empty}": str(tmp_path / "empty")}
    assert main([subs.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_unknown_logger_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["generate", "a red cube", "--out", str(out), "logger=wandb"]) == 2
    assert "logger must be one of none, tensorboard" in capsys.readouterr().err
    assert not out.exists()


def test_a_resumed_run_drops_the_trace_rows_after_its_checkpoint(tmp_path):
    from dreampropeller.report.trace import append_row, read_trace
    from dreampropeller.runs.progress import Progress

    for start, step in ((0, 3), (3, 5), (5, 8)):
        append_row(tmp_path, {"iteration": 1, "start": start, "step": step, "accepted": step - start})
    with (tmp_path / TRACE).open("a") as f:
        f.write('{"iteration": 4, "st')  # a run killed mid-line
    assert [r["step"] for r in read_trace(tmp_path)] == [3, 5, 8]
    Progress(tmp_path, total=10, start=5, enabled=False).close()  # resumed from the checkpoint of step 5
    assert [r["step"] for r in read_trace(tmp_path)] == [3, 5]


def test_a_report_that_fails_is_a_warning_not_a_failed_run(tmp_path, capsys):
    from dreampropeller.report import write_run_report

    (tmp_path / "config.yaml").write_text("prompt: a red cube\n")  # no metrics.json
    assert write_run_report(tmp_path) is None
    assert "warning: report.html not written" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()


def test_the_viewer_gets_a_textured_glb_as_vertex_colours(tmp_path):
    import io

    import numpy as np
    import trimesh
    from PIL import Image

    from dreampropeller.report.data import viewer_glb

    texels = np.zeros((4, 4, 3), np.uint8)
    texels[:, :2] = (255, 0, 0)  # u < 0.5: red
    texels[:, 2:] = (0, 0, 255)  # u > 0.5: blue
    uv = np.array([[0.1, 0.5], [0.9, 0.5], [0.1, 0.9]])
    visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(texels))
    textured = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]], visual=visual, process=False)
    out = trimesh.load(
        io.BytesIO(viewer_glb(textured.export(file_type="glb"))), file_type="glb", force="mesh"
    )
    assert out.visual.kind == "vertex"
    assert out.visual.vertex_colors[:, :3].tolist() == [[255, 0, 0], [0, 0, 255], [255, 0, 0]]
    plain = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]], process=False).export(
        file_type="glb"
    )
    assert viewer_glb(plain) == plain  # a vertex-coloured (or plain) glb goes in unchanged
