"""The report's plots as inline SVG (matplotlib, no JavaScript), every run of a report in each plot:
steps accepted per Picard iteration, threshold and errors, units per accepted step, the wall-clock
split, and the optimization signal (gradient and exact step) over steps.

The SVG is deterministic (fixed hash salt, no date), so a report of the same run is the same file.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import matplotlib as mpl
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure

from dreampropeller.report.data import RunData

RC = {
    "svg.hashsalt": "dreampropeller-report",
    "svg.fonttype": "none",  # text stays text: smaller, selectable
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
ROLLING = 10  # iterations in the accepted plot's running mean
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
SPLIT = (
    ("units_s", "units (render, prior, gradient)"),
    ("rollout_s", "rollout"),
    ("bookkeeping_s", "bookkeeping"),
    ("comm_s", "communication"),
    ("export_s", "export"),
)


@dataclass
class Plot:
    """One figure of the report: its key (``data-plot``), title, SVG markup and what it shows."""

    key: str
    title: str
    svg: str
    caption: str


def colour(i: int) -> str:
    """The colour of the ``i``-th run of a report (the same in every plot and table)."""
    return COLOURS[i % len(COLOURS)]


@contextmanager
def _figure(height: float = 2.8, rows: int = 1) -> Iterator[tuple[Figure, list]]:
    with mpl.rc_context(RC):
        fig = Figure(figsize=(6.4, height), layout="constrained")
        FigureCanvasSVG(fig)
        axes = [fig.add_subplot(rows, 1, i + 1) for i in range(rows)]
        yield fig, axes


def _svg(fig: Figure) -> str:
    """``fig`` as an ``<svg>`` element sized by CSS (no XML prolog, no fixed size)."""
    buf = io.StringIO()
    with mpl.rc_context(RC):
        fig.savefig(buf, format="svg", metadata=dict.fromkeys(("Date", "Creator", "Format", "Type")))
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r' id="[A-Za-z.]+_\d+"', "", text)  # matplotlib's element names: unique per figure only
    return re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r'<svg\1 class="plot-svg"', text, count=1)


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_xticks([])
    ax.set_yticks([])


def _legend(ax, runs: list[RunData], above: bool = False) -> None:
    if not ax.get_legend_handles_labels()[0]:
        return
    if above:  # a plot whose data fill its whole area
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=7, frameon=False)
    else:
        ax.legend(loc="best", fontsize=8, frameon=False)


def _rolling_mean(values: list[float], n: int) -> list[float]:
    """The mean of each value and the ``n - 1`` before it (fewer at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - n] if i >= n else 0.0)
        out.append(total / min(i + 1, n))
    return out


def accepted_plot(runs: list[RunData]) -> Plot:
    """Steps accepted per Picard iteration, with each run's window (the most an iteration can accept)."""
    with _figure() as (fig, (ax,)):
        for i, run in enumerate(runs):
            rows = run.iterations()
            x = [r["iteration"] for r in rows]
            accepted = [r["accepted"] for r in rows]
            ax.step(x, accepted, where="mid", color=colour(i), lw=0.6, alpha=0.35)
            ax.plot(
                x,
                _rolling_mean(accepted, ROLLING),
                color=colour(i),
                lw=1.6,
                label=f"{run.name}: mean of {ROLLING}",
            )
            window = run.info("window")
            if isinstance(window, int):
                ax.axhline(window, color=colour(i), ls="--", lw=0.8, alpha=0.6)
        ax.set_xlabel("Picard iteration")
        ax.set_ylabel("steps accepted")
        ax.set_ylim(bottom=0)
        _legend(ax, runs)
    return Plot(
        "accepted",
        "Steps accepted per Picard iteration",
        _svg(fig),
        "How many optimizer steps each iteration moved the exact state on (thin: each iteration; thick: "
        f"the mean of the last {ROLLING}); the dashed line is the window, the most one iteration can accept. "
        "The sequential run accepts 1 per iteration.",
    )


def threshold_plot(runs: list[RunData]) -> Plot:
    """The acceptance threshold and every speculative step's error, over the steps they were for."""
    with _figure(3.0) as (fig, (ax,)):
        any_data = False
        for i, run in enumerate(runs):
            rows = run.iterations()
            xs = [r["start"] for r in rows if r.get("threshold") is not None]
            ts = [r["threshold"] for r in rows if r.get("threshold") is not None]
            if xs and any(t > 0 for t in ts):
                ax.step(xs, ts, where="post", color=colour(i), lw=1.2, label=f"{run.name}: threshold")
                any_data = True
            ok_x, ok_y, bad_x, bad_y = [], [], [], []
            for r in rows:
                thr = r.get("threshold")
                for j, e in enumerate(r.get("errors") or [], start=1):
                    if e is None or e <= 0:
                        continue
                    accepted = thr is not None and e <= thr
                    (ok_x if accepted else bad_x).append(r["start"] + j)
                    (ok_y if accepted else bad_y).append(e)
            if ok_x:
                ax.scatter(ok_x, ok_y, s=6, color=colour(i), alpha=0.7, label=f"{run.name}: error, accepted")
            if bad_x:
                ax.scatter(
                    bad_x,
                    bad_y,
                    s=10,
                    marker="x",
                    color=colour(i),
                    alpha=0.5,
                    lw=0.7,
                    label=f"{run.name}: rejected",
                )
            any_data = any_data or bool(ok_x or bad_x)
        if any_data:
            ax.set_yscale("log")
            ax.set_xlabel("optimizer step")
            ax.set_ylabel("error / exact step²")
            _legend(ax, runs, above=True)
        else:
            _empty(ax, "no speculative steps (window 1: the sequential run)")
    return Plot(
        "threshold",
        "Threshold and errors",
        _svg(fig),
        "Each dot is a speculative step's error: how far its guess was from the rollout, in units of the "
        "exact step's squared length. Steps up to the first error over the threshold (line) are accepted.",
    )


def units_plot(runs: list[RunData]) -> Plot:
    """Unit evaluations per accepted step, per iteration and cumulative."""
    with _figure() as (fig, (ax,)):
        for i, run in enumerate(runs):
            rows = [r for r in run.iterations() if r.get("units") and r["accepted"]]
            if not rows:
                continue
            x = [r["step"] for r in rows]
            ax.plot(x, [r["units"] / r["accepted"] for r in rows], ".", ms=3, color=colour(i), alpha=0.5)
            units = accepted = 0
            cumulative = []
            for r in rows:
                units, accepted = units + r["units"], accepted + r["accepted"]
                cumulative.append(units / accepted)
            ax.plot(x, cumulative, color=colour(i), lw=1.4, label=f"{run.name}: cumulative")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("units per accepted step")
        ax.set_ylim(bottom=0)
        _legend(ax, runs)
    return Plot(
        "units",
        "Units per accepted step",
        _svg(fig),
        "Unit evaluations (render, prior, gradient: the costly part of a step) spent per step accepted: "
        "dots per iteration, line cumulative. 1 is the sequential run's cost; above 1 is speculative work "
        "that parallel hardware absorbs.",
    )


def wall_plot(runs: list[RunData]) -> Plot:
    """Each run's wall clock split into units, rollout, bookkeeping, communication and export."""
    with _figure(1.1 + 0.45 * len(runs)) as (fig, (ax,)):
        names = [run.name for run in runs]
        left = [0.0] * len(runs)
        for j, (key, label) in enumerate(SPLIT):
            values = [float(run.metrics.get("wall_clock_split", {}).get(key) or 0.0) for run in runs]
            if not any(values):
                continue
            ax.barh(names, values, left=left, color=mpl.colormaps["tab10"](j), label=label, height=0.55)
            left = [a + b for a, b in zip(left, values)]
        for y, total in enumerate(left):
            ax.text(total, y, f"  {total:.1f} s", va="center", fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("seconds")
        ax.grid(axis="y", visible=False)
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=5, fontsize=7, frameon=False)
    return Plot(
        "wall",
        "Wall-clock split",
        _svg(fig),
        "Where each run's time went: unit evaluations, rolling the window's updates out, the solver's "
        "bookkeeping, communication between devices, and writing the exports.",
    )


def signal_plot(runs: list[RunData]) -> Plot:
    """The optimization signal over steps: the gradient's moving average and the exact step's length."""
    series: list[tuple[str, str, Callable[[dict], float | None]]] = [
        ("grad_ema_rms", "gradient moving average, RMS", lambda r: r.get("grad_ema_rms")),
        ("step_scale", "exact step², solver's scale", lambda r: r.get("step_scale")),
    ]
    with _figure(4.2, rows=2) as (fig, axes):
        for ax, (_, label, get) in zip(axes, series):
            drawn = False
            for i, run in enumerate(runs):
                points = [(r["step"], get(r)) for r in run.trace if get(r) is not None and get(r) > 0]
                if points:
                    ax.plot(*zip(*points), color=colour(i), lw=1.2, label=run.name)
                    drawn = True
            if drawn:
                ax.set_yscale("log")
                ax.set_ylabel(label, fontsize=8)
                _legend(ax, runs)
            else:
                _empty(ax, f"{label}: not recorded (a run without trace.jsonl)")
        axes[-1].set_xlabel("optimizer step")
    return Plot(
        "signal",
        "Score distillation over steps",
        _svg(fig),
        "A unit returns the gradient of its loss, and the SDS loss value is only ½‖gradient‖², so the "
        "gradient is the SDS term to watch: top, the RMS of the optimizer's gradient moving average "
        "(SDS plus regularizers); bottom, the squared length of each iteration's exact step.",
    )


PLOTS: tuple[Callable[[list[RunData]], Plot], ...] = (
    accepted_plot,
    threshold_plot,
    units_plot,
    wall_plot,
    signal_plot,
)


def all_plots(runs: list[RunData]) -> list[Plot]:
    """Every plot of a report of ``runs``."""
    return [make(runs) for make in PLOTS]
