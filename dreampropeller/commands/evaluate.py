"""`dreampropeller eval RUN_DIR --json FILE`: objective metrics of a generated asset (evaluation.asset)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval``."""
    ev = subparsers.add_parser("eval", help="score a text-to-3D run against the library truth of its prompt")
    ev.add_argument("run_dir", help="a run directory written by a text-to-3D command")
    ev.add_argument("--json", required=True, help="write the metrics here")
    ev.add_argument("--prompt", help="override the prompt recorded in the run")
    ev.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> int:
    from dreampropeller.cli import UserError
    from dreampropeller.evaluation.asset import evaluate_asset

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    from dreampropeller.runs.assets import evaluation_inputs
    from dreampropeller.runs.loading import load_run

    run = load_run(run_dir)
    render_fn, mesh = evaluation_inputs(run.asset)
    result = evaluate_asset(render_fn, args.prompt or run.cfg.prompt, mesh)
    result["run_dir"] = str(run_dir)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"eval: {result['prompt']!r}: shape_r_precision {result['shape_r_precision']:.0f}, "
        f"silhouette_iou {result['silhouette_iou']:.3f}, colour_accuracy {result['colour_accuracy']:.0f}, "
        f"clf_r_precision {result['clf_r_precision']:.0f}"
        + (f", chamfer {result['chamfer']:.4f}" if "chamfer" in result else "")
    )
    return 0
