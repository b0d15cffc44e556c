"""Writing a report: gather run directories, draw the plots, assemble the page, write it."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dreampropeller.report.data import load_run_data
from dreampropeller.report.html import render_html
from dreampropeller.report.plots import all_plots

REPORT = "report.html"


def build_report(run_dirs: Sequence[str | Path], scores: Mapping[str, dict[str, Any]] | None = None) -> str:
    """The HTML of a report of ``run_dirs`` (several: side by side); ``scores`` maps a run directory
    (as given) to its eval scores."""
    if not run_dirs:
        raise ValueError("a report needs at least one run directory")
    scores = scores or {}
    runs = [load_run_data(d, scores.get(str(d))) for d in run_dirs]
    return render_html(runs, all_plots(runs))


def write_report(
    run_dirs: Sequence[str | Path],
    out: str | Path | None = None,
    scores: Mapping[str, dict[str, Any]] | None = None,
) -> Path:
    """Write the report of ``run_dirs`` to ``out`` (default: ``report.html`` in the only run directory)."""
    if out is None:
        if len(run_dirs) != 1:
            raise ValueError("a report of several runs needs an output file")
        out = Path(run_dirs[0]) / REPORT
    out = Path(out)
    text = build_report(run_dirs, scores)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out


def write_run_report(run_dir: str | Path) -> Path | None:
    """``report.html`` of a run that just finished; a failure is a warning on stderr (the run's
    results are already on disk, and ``dreampropeller report RUN_DIR`` can try again)."""
    try:
        return write_report([run_dir])
    except Exception as err:  # a report must never fail a finished run
        print(
            f"dreampropeller: warning: report.html not written ({type(err).__name__}: {err})", file=sys.stderr
        )
        return None
