"""`bench quality`: text-to-3D over a fixed sample of library prompts, scored against the true shapes.

The sample holds every held-out shape x colour combination (never seen by the embedded prior) plus
one seen combination per shape, so it covers all shapes and colours (12 prompts by default). A staged
config (``magic3d``, ``dreamgaussian``) runs every stage and scores the last one's asset, what
``generate`` with that config hands a user.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dreampropeller.bench.generate import SCORES as RUN_SCORES
from dreampropeller.guidance.tiny.library import COLOUR_NAMES, HELD_OUT, SHAPE_NAMES, prompt_for
from dreampropeller.runs.assets import score_asset
from dreampropeller.runs.driver import load_config, run_text_to_3d
from dreampropeller.runs.loading import load_run
from dreampropeller.runs.stages import plan_stages, refuse_stage_overrides, run_stages, split_overrides

SCORES = (*RUN_SCORES, "largest_piece_fraction")


def prompt_sample(n: int = 12) -> list[tuple[str, bool]]:
    """``(prompt, held_out)`` pairs: the held-out combinations first, then seen ones cycling colours."""
    out = [(prompt_for(s, c), True) for s, c in HELD_OUT]
    k = 0
    while len(out) < n:
        shape = SHAPE_NAMES[k % len(SHAPE_NAMES)]
        colour = COLOUR_NAMES[(3 * k + 1) % len(COLOUR_NAMES)]
        if (shape, colour) not in HELD_OUT and prompt_for(shape, colour) not in [p for p, _ in out]:
            out.append((prompt_for(shape, colour), False))
        k += 1
    return out[:n]


def generate_unscored(
    prompt: str, out: Path, files: Sequence[str], overrides: Sequence[str]
) -> dict[str, Any]:
    """Run ``prompt`` into ``out`` without exports, every stage of a staged config; its metrics."""
    cfg = load_config(prompt, files, split_overrides(overrides)[0])  # stages.NAME.key=value: the plan's
    refuse_stage_overrides(overrides, bool(cfg.stages))
    if cfg.stages:
        plan = plan_stages(cfg.stages, out, files, overrides, {"prompt": prompt})
        metrics = run_stages(plan, out, progress=False, exports=False)
        return {**metrics, "wall_clock_s": sum(s["wall_clock_s"] for s in metrics["stages"])}
    return run_text_to_3d(cfg, out, progress=False, exports=False)


def bench_quality(
    n: int = 12, overrides: tuple[str, ...] = (), files: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Generate and score each prompt of the sample (default config, sequential unless overridden)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (prompt, held_out) in enumerate(prompt_sample(n)):
            print(f"[bench quality] {i + 1}/{n} {prompt!r}", file=sys.stderr, flush=True)
            out = Path(tmp) / f"run{i}"
            metrics = generate_unscored(prompt, out, files, overrides)
            scores = score_asset(load_run(out).asset, prompt)
            rows.append(
                {
                    "prompt": prompt,
                    "held_out": held_out,
                    "wall_clock_s": metrics["wall_clock_s"],
                    **{k: scores.get(k) for k in SCORES},
                    "predicted_shape": scores.get("predicted_shape"),
                    "predicted_colour": scores.get("predicted_colour"),
                    "largest_piece_fraction": scores["mesh"]["largest_piece_fraction"],
                    "pieces_removed": scores["mesh"]["pieces_removed"],
                }
            )
    means = {k: round(statistics.fmean(r[k] for r in rows), 4) for k in SCORES}
    held = [r for r in rows if r["held_out"]]
    return {
        "prompts": rows,
        "mean": means,
        "mean_held_out": {k: round(statistics.fmean(r[k] for r in held), 4) for k in SCORES} if held else {},
        "overrides": list(overrides),
    }
