"""`dreampropeller eval RUN_DIR`: score a finished run against the true object its prompt names."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dreampropeller.commands import add_command

ABOUT = """\
Score a finished text-to-3D run against the true object of its prompt (the embedded prior's library
of shapes and colours): does the asset have the right shape and colour, how close is its mesh, how
evenly is it coloured. Prints a table; --json also writes every score to a file.
"""

# (key, label, format, what it means) in the order the table shows them
ROWS: tuple[tuple[str, str, str, str], ...] = (
    ("shape_r_precision", "shape R-precision", "{:.0f}", "1 = the prompt's shape fits the silhouettes best"),
    ("silhouette_iou", "silhouette IoU", "{:.3f}", "overlap with the true shape's silhouettes (1 best)"),
    ("colour_accuracy", "colour accuracy", "{:.0f}", "1 = the nearest library colour is the prompt's"),
    ("colour_spread", "colour spread", "{:.4f}", "chromaticity spread of the unlit surface (0 = uniform)"),
    (
        "clf_r_precision",
        "classifier R-precision",
        "{:.0f}",
        "1 = the learned evaluator ranks the prompt first",
    ),
    ("feature_distance", "feature distance", "{:.3f}", "Fréchet distance of evaluator features (0 best)"),
    ("chamfer", "chamfer", "{:.4f}", "mesh to true surface, world units (0 best)"),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval``."""
    ev = add_command(
        subparsers,
        "eval",
        "score a finished run against the true object of its prompt",
        ABOUT,
        [
            "dreampropeller eval runs/red-cube",
            "dreampropeller eval runs/red-cube --json runs/red-cube/eval.json",
        ],
    )
    ev.add_argument("run_dir", help="a run directory written by `dreampropeller generate`")
    ev.add_argument("--json", metavar="FILE", help="also write every score (and the mesh's pieces) to FILE")
    ev.add_argument("--prompt", help="score against this prompt instead of the one the run recorded")
    ev.set_defaults(func=_eval)


def format_scores(result: dict[str, Any]) -> str:
    """The scores as a small aligned table (label, value, meaning)."""
    lines = [f"eval of {result['run_dir']}: {result['prompt']!r}"]
    rows = [(label, fmt.format(result[key]), meaning) for key, label, fmt, meaning in ROWS if key in result]
    mesh = result.get("mesh")
    if mesh:
        rows.append(
            (
                "mesh pieces",
                f"{mesh['pieces']}",
                f"largest holds {100 * mesh['largest_piece_fraction']:.1f}% of {mesh['faces']} faces; "
                f"{mesh['pieces_removed']} small pieces removed",
            )
        )
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    lines += [f"  {label:<{width}}  {value:>{vwidth}}  {meaning}" for label, value, meaning in rows]
    return "\n".join(lines)


def _eval(args: argparse.Namespace) -> int:
    from dreampropeller.cli import UserError

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    from dreampropeller.runs.assets import score_asset
    from dreampropeller.runs.loading import load_run

    run = load_run(run_dir)
    prompt = args.prompt or run.cfg.prompt
    if not prompt:
        raise UserError(
            f"{run_dir} has no prompt (an image-to-3D run; its reference-view scores are in metrics.json): "
            "name the object to score against with --prompt, e.g. --prompt 'a red cube'"
        )
    result = score_asset(run.asset, prompt)
    result["run_dir"] = str(run_dir)
    print(format_scores(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"scores written to {args.json}")
    return 0
