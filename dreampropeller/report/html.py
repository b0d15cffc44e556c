"""The report as one self-contained HTML page: every file embedded (base64), the viewer's JavaScript
inline, the plots as inline SVG, so it opens from the file system with no network.

Runs sit side by side in columns; their 3D viewers share one camera, and with two or more runs a
comparison table leads the page.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

from dreampropeller.report.data import MESH, VIDEO, VIEWS, RunData
from dreampropeller.report.plots import Plot, colour
from dreampropeller.version import __version__

#: (key, label, format) of the run facts shown under each viewer
FACTS = (
    ("prompt", "prompt", "{}"),
    ("seed", "seed", "{}"),
    ("prior", "prior", "{}"),
    ("device", "device", "{}"),
    ("representation", "representation", "{}"),
    ("guidance", "guidance", "{}"),
    ("steps", "steps", "{}"),
    ("window", "window", "{}"),
    ("executor", "executor", "{}"),
    ("acceptance_rule", "acceptance rule", "{}"),
)
#: (key, label, format) of metrics.json's numbers
METRICS = (
    ("iterations", "Picard iterations", "{}"),
    ("unit_evals", "unit evaluations", "{}"),
    ("rounds_speedup", "rounds speedup", "{:.2f}x"),
    ("units_per_step", "units per accepted step", "{:.2f}"),
    ("wall_clock_s", "training wall clock", "{:.1f} s"),
    ("comm_share_of_wall", "communication share", "{:.1%}"),
)
#: (key, label, format) of the eval scores (dreampropeller eval)
SCORES = (
    ("shape_r_precision", "shape R-precision (1 best)", "{:.0f}"),
    ("silhouette_iou", "silhouette IoU (1 best)", "{:.3f}"),
    ("colour_accuracy", "colour accuracy (1 best)", "{:.0f}"),
    ("colour_spread", "colour spread (0 = uniform)", "{:.4f}"),
    ("clf_r_precision", "classifier R-precision (1 best)", "{:.0f}"),
    ("feature_distance", "feature distance (0 best)", "{:.3f}"),
    ("chamfer", "chamfer (0 best)", "{:.4f}"),
)

CSS = """
:root { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2430; background: #fff; }
body { margin: 0 auto; padding: 1rem 1.5rem 3rem; max-width: 1400px; line-height: 1.4; }
h1 { font-size: 1.5rem; margin: 0.2rem 0; } h2 { font-size: 1.15rem; margin: 1.6rem 0 0.6rem; }
h3 { font-size: 0.95rem; margin: 1rem 0 0.3rem; }
.sub, .hint, figcaption, .note { color: #5b6475; font-size: 0.85rem; }
.runs { display: grid; gap: 1.5rem; grid-template-columns: repeat(var(--n), minmax(0, 1fr)); }
.run { border-top: 4px solid var(--run-colour); padding-top: 0.4rem; min-width: 0; }
.run h2 { margin-top: 0.2rem; color: var(--run-colour); }
.runs.single .run-body { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); gap: 1.5rem; }
.facts th { width: 45%; font-weight: 600; }
.badge { font-size: 0.75rem; padding: 0.1rem 0.45rem; border-radius: 0.6rem; background: #e9edf3; }
.badge.bad { background: #fde2e2; color: #9b1c1c; }
canvas.dp-viewer { width: 100%; height: 380px; display: block; border-radius: 6px; cursor: grab;
  background: rgb(237, 240, 245); touch-action: none; }
canvas.dp-viewer:active { cursor: grabbing; }
.modes button { font: inherit; font-size: 0.8rem; border: 1px solid #c5ccd8; background: #fff;
  border-radius: 4px; padding: 0.1rem 0.6rem; cursor: pointer; }
.modes button.active { background: #1d2430; color: #fff; }
.media { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 2fr); gap: 0.6rem; margin-top: 0.6rem;
  align-items: start; }
.media video, .media img { width: 100%; border-radius: 6px; background: #f3f4f6; }
table { border-collapse: collapse; font-size: 0.85rem; width: 100%; }
td, th { padding: 0.2rem 0.5rem; border-bottom: 1px solid #eceff4; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f8fa; padding: 0.6rem; overflow: auto; font-size: 0.75rem; max-height: 28rem; }
.plots { display: grid; gap: 1.2rem; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); }
#compare table { max-width: 820px; }
figure.plot { margin: 0; min-width: 0; } figure.plot h3 { margin-top: 0; }
svg.plot-svg { width: 100%; height: auto; display: block; }
.viewer-error { padding: 2rem; background: #fdf2e2; border-radius: 6px; }
"""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _fmt(fmt: str, value: Any) -> str:
    if value is None:
        return "–"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def _table(rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def viewer_js() -> str:
    """The viewer's JavaScript (package data ``viewer.js``)."""
    text = resources.files("dreampropeller.report").joinpath("viewer.js").read_text(encoding="utf-8")
    if "</script" in text.lower():
        raise ValueError("viewer.js must not contain '</script'")
    return text


def _viewer(run: RunData, i: int, blobs: list[str]) -> str:
    """The viewer of run ``i`` (its embedded data appended to ``blobs``)."""
    attrs, modes = [], []
    if "splats" in run.files:
        blobs.append(
            f'<script type="application/octet-stream" id="splats-{i}">{_b64(run.files["splats"])}</script>'
        )
        attrs.append(f'data-splats="splats-{i}"')
        modes.append(("splats", "Gaussian splats"))
    if MESH in run.files:
        blobs.append(f'<script type="application/octet-stream" id="glb-{i}">{_b64(run.files[MESH])}</script>')
        attrs.append(f'data-glb="glb-{i}"')
        modes.append(("mesh", "mesh.glb"))
    if not modes:
        return '<p class="viewer-error">no mesh.glb in this run directory</p>'
    buttons = ""
    if len(modes) > 1:
        buttons = '<div class="modes">' + "".join(
            f'<button type="button" data-viewer="viewer-{i}" data-viewer-mode="{m}"'
            f"{' class=active' if j == 0 else ''}>{label}</button>"
            for j, (m, label) in enumerate(modes)
        )
        buttons += "</div>"
    canvas = (
        f'<canvas class="dp-viewer" id="viewer-{i}" data-group="runs" data-mode="{modes[0][0]}" '
        f'{" ".join(attrs)} aria-label="3D view of {html.escape(run.name)}"></canvas>'
    )
    return canvas + buttons + '<p class="hint">drag to orbit · wheel to zoom · double-click to reset</p>'


def _media(run: RunData) -> str:
    parts = []
    if VIDEO in run.files:
        parts.append(
            f'<video controls muted loop autoplay playsinline aria-label="turntable video" '
            f'src="data:video/mp4;base64,{_b64(run.files[VIDEO])}"></video>'
        )
    if VIEWS in run.files:
        parts.append(f'<img alt="four views" src="data:image/png;base64,{_b64(run.files[VIEWS])}">')
    return f'<div class="media">{"".join(parts)}</div>' if parts else ""


def _scores(run: RunData) -> str:
    if not run.scores:
        return (
            '<p class="note">not scored: <code>dreampropeller report '
            f"{html.escape(str(run.path))}</code> scores the run (as <code>dreampropeller eval</code>).</p>"
        )
    rows = [(label, _fmt(fmt, run.scores.get(key))) for key, label, fmt in SCORES if key in run.scores]
    return _table(rows)


def _metrics(run: RunData) -> str:
    rows = [(label, _fmt(fmt, run.metrics.get(key))) for key, label, fmt in METRICS if key in run.metrics]
    split = run.metrics.get("wall_clock_split", {})
    if "export_s" in split:
        rows.append(("export", _fmt("{:.1f} s", split["export_s"])))
    mesh = run.metrics.get("mesh")
    if mesh:
        rows.append(
            (
                "mesh",
                f"{mesh.get('faces')} faces, {mesh.get('pieces')} piece(s), "
                f"{mesh.get('pieces_removed', 0)} small piece(s) removed",
            )
        )
    return _table(rows)


def _run_column(run: RunData, i: int, blobs: list[str]) -> str:
    badge = (
        '<span class="badge">complete</span>' if run.complete else '<span class="badge bad">incomplete</span>'
    )
    facts = [(label, _fmt(fmt, run.info(key))) for key, label, fmt in FACTS if run.info(key) is not None]
    log = (
        f"<details><summary>log.txt</summary><pre>{html.escape(run.log_text)}</pre></details>"
        if run.log_text
        else ""
    )
    return (
        f'<article class="run" style="--run-colour: {colour(i)}">'
        f"<h2>{html.escape(run.name)} {badge}</h2>"
        f'<div class="run-body"><div class="visual">{_viewer(run, i, blobs)}{_media(run)}</div>'
        f'<div class="facts"><h3>Run</h3>{_table(facts)}'
        f"<h3>Metrics</h3>{_metrics(run)}"
        f"<h3>Eval scores</h3>{_scores(run)}"
        f"<details><summary>config.yaml (as given; the run resolved device, window and executor as above)"
        f"</summary><pre>{html.escape(run.config_text)}</pre></details>{log}</div></div>"
        "</article>"
    )


def _comparison(runs: list[RunData]) -> str:
    """A table of the runs' key numbers side by side, speedups against the first run."""
    head = "".join(
        f'<th class="num" style="color:{colour(i)}">{html.escape(r.name)}</th>' for i, r in enumerate(runs)
    )
    rows = []
    for key, label, fmt in (("window", "window", "{}"), *METRICS):
        rows.append((label, [_fmt(fmt, r.metrics.get(key)) for r in runs]))
    base = runs[0].metrics.get("wall_clock_s")
    rows.append(
        (
            f"wall-clock speedup vs {runs[0].name}",
            [
                _fmt("{:.2f}x", base / r.metrics["wall_clock_s"])
                if base and r.metrics.get("wall_clock_s")
                else "–"
                for r in runs
            ],
        )
    )
    if any(r.scores for r in runs):
        for key, label, fmt in SCORES:
            rows.append((label, [_fmt(fmt, (r.scores or {}).get(key)) for r in runs]))
    body = "".join(
        f"<tr><th>{html.escape(label)}</th>"
        + "".join(f'<td class="num">{html.escape(v)}</td>' for v in values)
        + "</tr>"
        for label, values in rows
    )
    return (
        f'<section id="compare"><h2>Comparison</h2><table><tr><th></th>{head}</tr>{body}</table>'
        '<p class="note">The 3D viewers below share one camera: turn one, all turn.</p></section>'
    )


def _figure(plot: Plot) -> str:
    return (
        f'<figure class="plot" data-plot="{plot.key}"><h3>{html.escape(plot.title)}</h3>{plot.svg}'
        f"<figcaption>{html.escape(plot.caption)}</figcaption></figure>"
    )


def render_html(runs: list[RunData], plots: list[Plot]) -> str:
    """The report page of ``runs`` (one or more) with ``plots``."""
    prompts = list(dict.fromkeys(str(r.info("prompt", "")) for r in runs))
    title = " vs ".join(prompts) if len(prompts) > 1 else prompts[0]
    names = ", ".join(r.name for r in runs)
    blobs: list[str] = []
    columns = "".join(_run_column(r, i, blobs) for i, r in enumerate(runs))
    data = {"runs": [r.name for r in runs], "plots": [p.key for p in plots], "version": __version__}
    figures = "".join(_figure(p) for p in plots)
    layout = "runs single" if len(runs) == 1 else "runs"
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}: dreampropeller report</title><style>{CSS}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1>"
        f'<p class="sub">dreampropeller {__version__} report of {html.escape(names)}: '
        "text-to-3D by score distillation, steps propelled by Picard iteration.</p></header>"
        f"{_comparison(runs) if len(runs) > 1 else ''}"
        f'<section class="{layout}" style="--n: {len(runs)}">{columns}</section>'
        f'<section id="plots"><h2>Picard traces</h2><div class="plots">{figures}</div></section>'
        f'<script type="application/json" id="report-data">{json.dumps(data)}</script>'
        f"{''.join(blobs)}<script>{viewer_js()}</script></body></html>\n"
    )
