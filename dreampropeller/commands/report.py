"""`dreampropeller report RUN_DIR [RUN_DIR2 ...]`: a run's report.html, or several runs side by side."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dreampropeller.commands import add_command

ABOUT = """\
Build the HTML report of a finished run: the asset in an interactive 3D viewer (drag to orbit, wheel
to zoom), the turntable video and the four views, plots of the Picard traces (steps accepted per
iteration, threshold and errors, units per accepted step, wall-clock split, the gradient over steps),
the metrics, the eval scores and the config. One file that opens in a browser from the disk, with no
network. `generate` writes one into every run directory (without scores); this command rebuilds it
with the scores.

Give several run directories to compare them side by side (e.g. the sequential run and the propelled
one): one table of their numbers, their viewers turning together, every plot with all of them.
"""
EXAMPLES = (
    "dreampropeller report runs/red-cube                      (writes runs/red-cube/report.html)",
    "dreampropeller report runs/sequential runs/propelled --out compare.html",
    "dreampropeller report runs/red-cube --no-eval --out /tmp/cube.html",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``report``."""
    p = add_command(
        subparsers,
        "report",
        "an HTML report of a run (3D viewer, video, Picard traces, scores), or of several side by side",
        ABOUT,
        EXAMPLES,
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories written by `generate`")
    p.add_argument(
        "--out",
        metavar="FILE",
        help="where to write the report (default: RUN_DIR/report.html for one run, compare.html in the "
        "current directory for several)",
    )
    p.add_argument(
        "--no-eval", action="store_true", help="leave the eval scores out (scoring renders each run: seconds)"
    )
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from dreampropeller.cli import UserError
    from dreampropeller.report.write import write_report

    dirs = [Path(d) for d in args.run_dirs]
    for d in dirs:
        if not d.is_dir():
            raise UserError(f"run directory {d} does not exist")
        if not (d / "metrics.json").is_file():
            raise UserError(f"{d} has no metrics.json: not a finished run (resume it with generate --resume)")
    out = (
        Path(args.out) if args.out else (dirs[0] / "report.html" if len(dirs) == 1 else Path("compare.html"))
    )
    scores: dict[str, dict[str, Any]] = {}
    if not args.no_eval:
        from dreampropeller.runs.assets import score_asset
        from dreampropeller.runs.loading import load_run

        for d in dirs:
            print(f"scoring {d} ...", file=sys.stderr, flush=True)
            run = load_run(d)
            scores[str(d)] = score_asset(run.asset, run.cfg.prompt)
    path = write_report([str(d) for d in dirs], out, scores)
    size = path.stat().st_size / 1e6
    print(f"report written to {path} ({size:.1f} MB): open it in a browser")
    return 0
