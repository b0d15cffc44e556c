"""`dreampropeller generate "PROMPT" --out DIR`: text-to-3D, propelled by Picard iteration."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dreampropeller.commands import add_command


def _overrides(args: argparse.Namespace, staged: bool = False) -> list[str]:
    """Command-line flags as config overrides (flags win over --config files). In a ``staged`` run
    every stage names its own representation: --image and --init-from do not imply one there."""
    out = []
    for flag, key in (
        ("steps", "steps"),
        ("seed", "seed"),
        ("prior", "prior"),
        ("prior_path", "prior_path"),
        ("device", "device"),
        ("window", "picard.window"),
        ("executor", "picard.executor"),
        ("threshold", "picard.threshold"),
        ("representation", "representation"),
        ("logger", "logger"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            out.append(f"{key}={value}")
    if getattr(args, "image", None):
        out.append(f"image.path={Path(args.image).expanduser().resolve()}")
        if getattr(args, "representation", None) is None and not staged:  # DreamGaussian's: Gaussians
            out.append("representation=gaussians")
    if getattr(args, "init_from", None):
        out.append(f"dmtet.init_from={Path(args.init_from).expanduser().resolve()}")
        if getattr(args, "representation", None) is None and not staged:  # Magic3D's refine: DMTet
            out.append("representation=dmtet")
    if args.fixed_threshold:
        from dreampropeller.config.loading import ConfigError

        if args.threshold is None:
            raise ConfigError("--fixed-threshold keeps --threshold fixed: give --threshold too (0 = exact)")
        out.append("picard.adaptive=false")
    if args.rule == "ema":  # the authors' rule; --threshold, when given, is its start value
        from dreampropeller.picard.solver import PAPER_RULE

        keys = ("adaptive", "init") if args.threshold is not None else ("adaptive", "init", "threshold")
        rule = {k: PAPER_RULE[k] for k in keys}  # the aggregate stays the config's (mean, median, middle)
        out += [f"picard.{k}={'null' if v is None else str(v).lower()}" for k, v in rule.items()]
    elif args.rule == "tolerance":
        out.append("picard.adaptive=false")
    return out


def _generate(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from dreampropeller.config.loading import ConfigError, build, merge_config, to_dict
    from dreampropeller.config.schema import TextTo3DConfig
    from dreampropeller.guidance.prompts import EMPTY_PROMPT
    from dreampropeller.runs.driver import RunError, run_text_to_3d

    items = list(args.items)
    overrides = [i for i in items if "=" in i]
    words = [i for i in items if "=" not in i]
    if args.resume:
        if words:
            raise ConfigError("--resume continues a run: give no prompt (it is in the run's config.yaml)")
        out = Path(args.resume)
        if (out / "stages.yaml").is_file():  # a staged run: continue its unfinished stages
            from dreampropeller.runs.stages import load_plan

            return _run_stages(load_plan(out), out, args, resume=True)
        if not (out / "config.yaml").is_file():
            raise ConfigError(f"--resume {args.resume!r}: not a run directory (no config.yaml)")
        files = [str(out / "config.yaml"), *args.config]
    else:
        if len(words) > 1:
            raise ConfigError(f"give one prompt in quotes, got {len(words)} words: {' '.join(words)!r}")
        if not args.out:
            raise ConfigError("--out DIR is required (where the run is written)")
        if (not words or not words[0].strip()) and not args.image:
            raise ConfigError(EMPTY_PROMPT)
        out = Path(args.out)
        files = list(args.config)
    extra = {"prompt": words[0]} if words else None
    from dreampropeller.runs.stages import plan_stages, refuse_stage_overrides, split_overrides

    every = split_overrides(overrides)[0]  # stages.NAME.key=value: one stage's, for the plan below
    data = merge_config(TextTo3DConfig(), files, [*_overrides(args), *every], free=["optimizer"], extra=extra)
    refuse_stage_overrides(overrides, bool(data.get("stages")))
    if data.get("stages") and not args.resume:  # Magic3D-style: one run per stage, each from the last
        if args.representation or args.init_from:
            raise ConfigError(
                "a staged config sets each stage's representation and start: drop --representation "
                "and --init-from (or set one stage's with stages.NAME.representation=...)"
            )
        plan = plan_stages(data["stages"], out, files, [*_overrides(args, staged=True), *overrides], extra)
        if args.print_config:
            resolved = [{"name": s.name} | to_dict(s.cfg) for s in plan]
            print(OmegaConf.to_yaml(OmegaConf.create({"stages": resolved})))
            return 0
        return _run_stages(plan, out, args, resume=False)
    cfg = build(TextTo3DConfig, data)
    if args.print_config:
        print(OmegaConf.to_yaml(OmegaConf.create(data)))
        return 0
    try:
        metrics = run_text_to_3d(
            cfg, out, overwrite=args.overwrite, resume=bool(args.resume), progress=not args.quiet
        )
    except RunError as err:
        print(f"dreampropeller: {err}", file=sys.stderr)
        return err.exit_code
    if "rank" in metrics:  # a torchrun worker: rank 0 reports
        return int(metrics["exit_code"])
    print(
        f"done: {out} ({metrics['steps']} steps, window {metrics['window']}, {metrics['iterations']} Picard "
        f"iterations, rounds speedup {metrics['rounds_speedup']:.2f}x, {metrics['wall_clock_s']:.1f}s)"
    )
    return 0


def _run_stages(plan: list, out: Path, args: argparse.Namespace, resume: bool) -> int:
    """Run (or resume) a staged run and print one line per stage."""
    from dreampropeller.runs.driver import RunError
    from dreampropeller.runs.stages import run_stages

    try:
        metrics = run_stages(plan, out, overwrite=args.overwrite, resume=resume, progress=not args.quiet)
    except RunError as err:
        print(f"dreampropeller: {err}", file=sys.stderr)
        return err.exit_code
    for row in metrics["stages"]:
        print(
            f"stage {row['name']} ({row['representation']}): {row['dir']}, {row.get('steps')} steps, "
            f"{row.get('iterations')} Picard iterations, {row.get('wall_clock_s', 0):.1f}s"
        )
    print(f"done: {out} (final stage {metrics['stages'][-1]['name']})")
    return 0


ABOUT = """\
Optimize a 3D asset for a prompt by score distillation, with the optimizer's steps evaluated a window
at a time in parallel (Picard iteration) and accepted only where they match the sequential run.
The run directory gets report.html (open it in a browser: the asset in 3D, the video, the Picard
traces), turntable.mp4, views.png, mesh.glb and mesh.obj (small floating pieces removed),
gaussians.ply for Gaussian runs, metrics.json (speedup, iterations, acceptance traces, wall-clock
split, mesh pieces), trace.jsonl (one line per Picard iteration, written live), config.yaml (every
setting, reusable with --config), log.txt and a checkpoint. Any config key can be set as key=value
after the prompt (--print-config lists them).
"""
EXAMPLES = (
    'dreampropeller generate "a red cube" --out runs/red-cube',
    'dreampropeller generate "a blue sphere" --out runs/sphere --representation gaussians',
    'dreampropeller generate "a red cube" --out runs/cube-mesh --init-from runs/red-cube (NeRF -> mesh)',
    'dreampropeller generate "a red cube" --out runs/cube-m3d --config magic3d  (both stages in one run)',
    'dreampropeller generate "a green torus" --out runs/torus --window 1        (the sequential run)',
    'dreampropeller generate "a red cube" --out runs/cube steps=1200 sds.guidance_scale=30',
    "dreampropeller generate --resume runs/red-cube                                (after Ctrl-C)",
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `generate`."""
    p = add_command(
        sub,
        "generate",
        "text-to-3D (or image-to-3D): a prompt in; a 3D asset, turntable video and mesh out",
        ABOUT,
        EXAMPLES,
    )
    p.add_argument(
        "items", nargs="*", help='the prompt ("a red cube") followed by key=value config overrides'
    )
    p.add_argument("--out", help="output directory (must be new or empty unless --overwrite)")
    p.add_argument("--steps", type=int, help="optimization steps")
    p.add_argument("--window", help="Picard window: 1 = sequential; auto = fastest measured on this hardware")
    p.add_argument(
        "--executor",
        choices=["auto", "sequential", "batched", "devices", "distributed"],
        help="how a window's steps are evaluated: batched (one batch, default on one device), devices (one "
        "GPU each), distributed (under torchrun), sequential (one after another)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        help="acceptance tolerance in units of the exact step's squared length (default 0.15; 0 = exactly "
        "the sequential run); with --rule ema, the start value of the adaptive threshold",
    )
    p.add_argument(
        "--rule",
        choices=["tolerance", "ema"],
        help="tolerance (default): accept guesses within --threshold of the rollout, a rule whose speedup "
        "holds at sequential quality; ema: the DreamPropeller authors' adaptive rule, which accepts about "
        "half of every window whatever the errors (for reproducing the paper)",
    )
    p.add_argument(
        "--fixed-threshold", action="store_true", help="keep --threshold fixed (needs --threshold)"
    )
    p.add_argument("--seed", type=int, help="random seed (default 0); the same seed gives the same run")
    p.add_argument("--prior", help="tiny (embedded default), sd, if")
    p.add_argument("--prior-path", help="local directory or hub id of the prior's weights")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    p.add_argument(
        "--representation",
        choices=["nerf", "gaussians", "dmtet", "sdf"],
        help="nerf (default), gaussians, dmtet (a mesh: DMTet on a tetrahedral grid, Magic3D's refine "
        "stage), or sdf (a signed distance field rendered by NeuS, threestudio's implicit-sdf)",
    )
    p.add_argument(
        "--init-from",
        metavar="RUN_DIR",
        help="start a DMTet mesh from the finished NeRF run in RUN_DIR (its density's isosurface; selects "
        "dmtet), as Magic3D refines a coarse NeRF",
    )
    p.add_argument(
        "--image",
        metavar="PATH",
        help="image-to-3D: an RGBA image, or RGB on white, seen from the front (selects Gaussians; the "
        "run's metrics.json scores the asset's front view against it)",
    )
    p.add_argument("--config", action="append", default=[], help="YAML config file or bundled config name")
    p.add_argument("--resume", metavar="DIR", help="continue an interrupted run in DIR")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument(
        "--logger",
        choices=["none", "tensorboard"],
        help="live logs besides trace.jsonl: tensorboard writes scalars (accepted steps, threshold, "
        'gradient, time) and renders to RUN_DIR/tensorboard (pip install "dreampropeller[tensorboard]")',
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=_generate)
