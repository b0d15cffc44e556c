"""`dreampropeller bench ...`: benchmarks that print ratios measured side by side in one process."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dreampropeller.commands import add_command

# systems.factory.REPRESENTATIONS, spelled out: importing it would load torch for --help
BENCH_REPRESENTATIONS = ("nerf", "gaussians", "dmtet", "sdf")


def _rule(args: argparse.Namespace) -> dict[str, object]:
    """Solver settings of ``--rule`` / ``--threshold`` / ``--init`` (the sound default when not given)."""
    from dreampropeller.picard.solver import PAPER_RULE

    config: dict[str, object] = {"scale": args.scale}
    if args.rule == "ema":
        config.update(PAPER_RULE, aggregate=args.aggregate)
    if args.threshold is not None:
        config["threshold"] = args.threshold
    if args.init:
        config["init"] = args.init
    if args.linearize:
        config["linearize"] = True
    return config


def _picard(args: argparse.Namespace) -> int:
    from dreampropeller.bench.controls import CONTROLS
    from dreampropeller.bench.picard import DEFAULT_PROBLEMS, bench_control, bench_problem, format_table
    from dreampropeller.bench.problems import PROBLEMS
    from dreampropeller.picard.executors import make_executor

    names = args.problems.split(",") if args.problems else list(DEFAULT_PROBLEMS)
    unknown = [n for n in names if n not in PROBLEMS]
    if unknown:
        raise ValueError(f"unknown problem(s) {unknown}: choose from {', '.join(PROBLEMS)}")
    if args.window < 1:
        raise ValueError(f"--window must be >= 1, got {args.window}")
    windows = [int(w) for w in args.windows.split(",")]
    config = _rule(args)
    config["guesses"] = args.guesses
    executor = make_executor(args.executor, args.devices.split(",") if args.devices else None)
    if getattr(executor, "rank", 0) > 0:  # a torchrun worker of --executor distributed: serve rank 0
        from dreampropeller.bench.problems import make_problem

        return executor.serve_all(make_problem(n, steps=args.steps).process for n in names)
    results = []
    try:
        for name in names:
            print(f"[bench picard] {name} ...", file=sys.stderr, flush=True)
            results.append(
                bench_problem(name, args.window, config, executor, args.steps, windows, not args.no_exact)
            )
    finally:
        executor.close()
    controls = [] if args.no_controls else [bench_control(c, config) for c in CONTROLS]
    for r in results:  # communication per Picard iteration and its share of the propelled wall clock
        comm = r["wall_split_propelled"]["comm_s"]
        r["comm_s_per_iteration"] = comm / max(r["iterations"], 1)
        r["comm_share_of_wall"] = comm / r["wall_s_propelled"] if r["wall_s_propelled"] else 0.0
    print(format_table(results, controls))
    report = executor.report() if hasattr(executor, "report") else None
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "problems": results,
            "controls": controls,
            "config": config,
            "executor": report or {"executor": args.executor},
        }
        Path(args.json).write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
    if report and report.get("fault"):
        print(f"dreampropeller: {report['fault']}", file=sys.stderr)
        return 1
    return 0


def _floats(text: str, flag: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated numbers, got {text!r}") from None


def _tradeoff(args: argparse.Namespace) -> int:
    from dreampropeller.bench.problems import PROBLEMS
    from dreampropeller.bench.tradeoff import (
        AGGREGATES,
        format_tradeoff,
        plot_tradeoff,
        rules,
        run_tradeoff,
    )
    from dreampropeller.guidance.prompts import check_prompt

    problems = [p for p in args.problems.split(",") if p] if args.problems is not None else []
    unknown = [n for n in problems if n not in PROBLEMS]
    if unknown:
        raise ValueError(f"unknown problem(s) {unknown}: choose from {', '.join(PROBLEMS)}")
    aggregates = [a for a in args.aggregates.split(",") if a]
    if any(a not in AGGREGATES for a in aggregates):
        raise ValueError(f"--aggregates takes {', '.join(AGGREGATES)}, got {args.aggregates!r}")
    windows = [int(w) for w in _floats(args.windows, "--windows")]
    text_windows = [int(w) for w in _floats(args.text_windows, "--text-windows")]
    if any(w < 1 for w in windows + text_windows):
        raise ValueError("windows must be >= 1")
    sweep = rules(_floats(args.tolerances, "--tolerances"), aggregates)
    prompts = [p.strip() for p in args.prompts.split(";")] if args.prompts else []
    for prompt in prompts:
        check_prompt(prompt)
    representations = [r for r in args.representations.split(",") if r]
    if any(r not in BENCH_REPRESENTATIONS for r in representations):
        raise ValueError(
            f"--representations takes {', '.join(BENCH_REPRESENTATIONS)}; got {args.representations!r}"
        )
    texts = [(prompt, rep) for prompt in prompts for rep in representations]
    targets = run_tradeoff(
        problems,
        sweep,
        windows,
        args.steps,
        texts,
        text_windows,
        args.text_steps,
        args.config,
        args.overrides,
    )
    print(format_tradeoff(targets))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(targets, indent=2, allow_nan=False))
        print(f"wrote {args.json}")
    if args.plot:
        plot_tradeoff(targets, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from dreampropeller.bench.generate import bench_generate
    from dreampropeller.guidance.prompts import check_prompt

    check_prompt(args.prompt)
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = list(args.overrides)
    if args.representation:
        overrides.append(f"representation={args.representation}")
    result = bench_generate(
        args.prompt, args.steps, args.window, seeds, overrides, args.config, args.executor, args.ulp_control
    )
    s, p = result["sequential"], result["propelled"]
    print(
        f"prompt {result['prompt']!r}, {result['steps']} steps, window {result['window']}, "
        f"{result['device_name']}"
    )
    print(f"{'run':<12}{'wall s':>9}{'iters':>7}{'units':>7}{'rounds x':>10}  scores")
    for name, r in (("sequential", s), ("propelled", p)):
        print(
            f"{name:<12}{r['wall_clock_s']:>9.1f}{r['iterations']:>7}{r['unit_evals']:>7}"
            f"{r['rounds_speedup']:>10.2f}  {r['scores']}"
        )
    print(
        f"wall_clock_speedup {result['wall_clock_speedup']:.2f}x, "
        f"PSNR seq vs prop {result['psnr_turntable']:.2f} dB,"
        f" noise (PSNR between seeds) {result['noise']['psnr_between_sequential_seeds']}"
    )
    if args.ulp_control:
        print(f"PSNR seq vs seq from one ulp away {result['noise']['psnr_sequential_vs_one_ulp']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


def _prior(args: argparse.Namespace) -> int:
    from dreampropeller.bench.prior import bench_prior, format_prior_table

    batches = [int(b) for b in args.batches.split(",")]
    if any(b < 1 for b in batches) or args.repeats < 1:
        raise ValueError(f"--batches and --repeats must be positive, got {args.batches!r}, {args.repeats}")
    result = bench_prior(args.device, True if args.small else None, batches, args.repeats)
    print(format_prior_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


def _vsd(args: argparse.Namespace) -> int:
    if args.prior == "random":
        from dreampropeller.bench.vsd_gpu import run

        args.steps = args.steps or 200
        args.modes = args.modes or "worker,synchronized,accepted"
        args.threshold = 0.15 if args.threshold is None else args.threshold
        return run(args)
    from dreampropeller.bench.vsd import bench_vsd_quality, format_vsd_quality
    from dreampropeller.guidance.prompts import check_prompt
    from dreampropeller.guidance.vsd import MODES

    if args.arch:
        raise ValueError("--arch picks a random-weight model: use it with --prior random")
    check_prompt(args.prompt)
    if args.window < 1 or (args.steps is not None and args.steps < 1):
        raise ValueError("--steps and --window must be >= 1")
    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"device={args.device}")
    if args.threshold is not None:
        overrides.append(f"picard.threshold={args.threshold}")
    result = bench_vsd_quality(
        args.prompt,
        args.steps,
        args.window,
        [int(x) for x in args.seeds.split(",")],
        [m for m in (args.modes or ",".join(MODES)).split(",") if m],
        args.config or ["prolificdreamer"],
        overrides,
        args.prior,
    )
    print(format_vsd_quality(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


def _quality(args: argparse.Namespace) -> int:
    from dreampropeller.bench.quality import bench_quality

    if args.prompts < 1:
        raise ValueError(f"--prompts must be >= 1, got {args.prompts}")
    result = bench_quality(args.prompts, tuple(args.overrides), tuple(args.config))
    for r in result["prompts"]:
        print(
            f"{r['prompt']:<28}{'held-out' if r['held_out'] else '':>9}  shape {r['shape_r_precision']:.0f} "
            f"colour {r['colour_accuracy']:.0f} IoU {r['silhouette_iou']:.3f} chamfer {r['chamfer']:.4f} "
            f"spread {r['colour_spread']:.4f} largest piece {100 * r['largest_piece_fraction']:.1f}% "
            f"({r['predicted_shape']}, {r['predicted_colour']})"
        )
    print(f"mean {result['mean']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


def _rule_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rule",
        choices=["tolerance", "ema"],
        default="tolerance",
        help="tolerance (default, sound): accept guesses within --threshold exact steps^2 of the rollout; "
        "ema: the DreamPropeller authors' adaptive rule (accepts about half of every window by construction)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="the tolerance (default 0.15), or the ema rule's start value",
    )
    p.add_argument(
        "--aggregate", default="middle", choices=["mean", "median", "middle"], help="of --rule ema"
    )
    p.add_argument(
        "--init",
        choices=["copy", "extrapolate", "velocity"],
        help="guesses of new slots (default: velocity; copy with --rule ema, as the authors did)",
    )
    p.add_argument(
        "--linearize",
        action="store_true",
        help="roll out the rejected part of each window again with secant-linearized drifts (better guesses)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add `bench` and its subcommands."""
    bench = add_command(
        sub,
        "bench",
        "benchmarks: sequential vs propelled speed, always with quality, side by side",
        "Benchmarks that print speed ratios beside the quality deviation and the noise floor (the same "
        "between seeds), in one run.",
        [
            "dreampropeller bench picard                       (the engine on optimization problems)",
            'dreampropeller bench generate --prompt "a red cube" --seeds 0,1 --json bench.json',
            "dreampropeller bench quality --json quality.json  (12 prompts scored, about 30 minutes)",
        ],
    )
    bsub = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    p = add_command(
        bsub,
        "picard",
        "Picard engine on optimization problems: sequential vs propelled",
        "The solver on deterministic and stochastic optimization problems (quadratic, mlp, nonconvex, "
        "growing, mlp-sgd): rounds speedup per window, final-loss change against the sequential run, the "
        "seed floor, an exactness check at threshold 0, and negative controls whose guesses are never "
        "right (they must show ~1.0x). Takes a few minutes on a CPU.",
        [
            "dreampropeller bench picard",
            "dreampropeller bench picard --problems mlp --window 16 --json picard.json",
            "dreampropeller bench picard --rule ema          (the authors' rule, for comparison)",
            "dreampropeller bench picard --guesses secant    (multi-secant guesses, same rule)",
        ],
    )
    p.add_argument("--json", help="write results to this JSON file")
    p.add_argument("--problems", help="comma-separated: quadratic,mlp,nonconvex,growing,mlp-sgd")
    p.add_argument("--window", type=int, default=8, help="the propelled run's window (default 8)")
    p.add_argument("--windows", default="2,4,8,16", help="windows of the rounds-speedup table")
    p.add_argument("--steps", type=int, default=None, help="override each problem's step count")
    _rule_flags(p)
    p.add_argument(
        "--scale",
        default="step",
        choices=["step", "none"],
        help="step (default): errors in units of the exact step's squared length; none: absolute",
    )
    p.add_argument(
        "--executor",
        default="sequential",
        choices=["sequential", "batched", "devices", "distributed"],
        help="how a window's units are evaluated (default sequential: rounds are what is measured)",
    )
    p.add_argument("--devices", help="comma-separated torch devices for --executor devices")
    p.add_argument(
        "--guesses",
        default="plain",
        choices=["plain", "secant"],
        help="the next window's guesses: plain (default: the rollout, new slots by --init) or secant (a "
        "model rollout with a multi-secant drift Jacobian from same-step re-evaluations: more steps per "
        "iteration at the same tolerance, no extra units; unmeasured on text-to-3D)",
    )
    p.add_argument("--no-exact", action="store_true", help="skip the threshold-0 exactness run")
    p.add_argument("--no-controls", action="store_true", help="skip the negative controls")
    p.set_defaults(func=_picard)

    t = add_command(
        bsub,
        "tradeoff",
        "rounds speedup against quality deviation for every acceptance rule and window",
        "Sweep the acceptance rule (the sound tolerance rule at several tolerances; the "
        "authors' adaptive EMA rule with each aggregate) and the window on the bench problems and, with "
        "--prompts, on text-to-3D with the embedded prior. Each target is also run sequentially from two "
        "seeds: the noise floor a rule's deviation must stay under. Text-to-3D runs take minutes each on "
        "a CPU (about 2 x rules x windows runs per prompt and representation).",
        [
            "dreampropeller bench tradeoff --plot tradeoff.png",
            'dreampropeller bench tradeoff --problems "" --prompts "a red cube" --text-steps 200',
        ],
    )
    t.add_argument("overrides", nargs="*", help="key=value config overrides for the text-to-3D runs")
    t.add_argument("--json", help="write every target's rows to this JSON file")
    t.add_argument("--plot", help="write the speedup-vs-deviation plot to this PNG")
    t.add_argument(
        "--problems", default="quadratic,mlp,nonconvex,growing", help="bench problems ('' for none)"
    )
    t.add_argument("--windows", default="2,4,8,16", help="windows of the problems")
    t.add_argument("--steps", type=int, help="override each problem's step count")
    t.add_argument("--tolerances", default="0.05,0.15,0.5,1", help="tolerances of the sound rule")
    t.add_argument("--aggregates", default="middle,mean,median", help="aggregates of the authors' EMA rule")
    t.add_argument("--prompts", help="text-to-3D prompts separated by ';' (default: none)")
    t.add_argument(
        "--representations", default="nerf", help=f"comma-separated: {','.join(BENCH_REPRESENTATIONS)}"
    )
    t.add_argument("--text-windows", default="8", help="windows of the text-to-3D runs")
    t.add_argument("--text-steps", type=int, help="steps of each text-to-3D run (default: the config's)")
    t.add_argument("--config", action="append", default=[], help="YAML config file or bundled config name")
    t.set_defaults(func=_tradeoff)

    g = add_command(
        bsub,
        "generate",
        "text-to-3D sequential vs propelled: speed and quality side by side",
        "Run one prompt sequentially and propelled from each seed; report rounds speedup, wall clock, units "
        "per accepted step, PSNR of the propelled turntable to the sequential one, and the scores of both. "
        "Several seeds give the noise floor (PSNR and score spread between seeds).",
        [
            'dreampropeller bench generate --prompt "a red cube" --seeds 0,1 --json bench.json',
            "dreampropeller bench generate --representation gaussians --config dreamgaussian --window 8",
        ],
    )
    g.add_argument("overrides", nargs="*", help="key=value config overrides")
    g.add_argument("--json", help="write results to this JSON file")
    g.add_argument("--prompt", default="a red cube", help="the prompt (default: a red cube)")
    g.add_argument("--steps", type=int, default=None, help="steps of each run (default: the config's)")
    g.add_argument("--window", default="8", help="propelled window (auto = the hardware's default)")
    g.add_argument("--seeds", default="0", help="comma-separated seeds (several measure the noise floor)")
    g.add_argument(
        "--executor",
        default="batched",
        choices=["sequential", "batched", "devices"],
        help="how the propelled run evaluates a window (default: one batch)",
    )
    g.add_argument(
        "--representation",
        default=None,
        choices=BENCH_REPRESENTATIONS,
        help="nerf (default), gaussians, dmtet or sdf",
    )
    g.add_argument("--config", action="append", default=[], help="YAML config file or bundled config name")
    g.add_argument(
        "--ulp-control",
        action="store_true",
        help="also rerun each seed's sequential run from a start nudged by one float ulp: how far a "
        "rounding-level difference carries (one more run per seed)",
    )
    g.set_defaults(func=_generate)

    q = add_command(
        bsub,
        "quality",
        "text-to-3D over a fixed prompt sample (held-out included), scored",
        "Generate every prompt of a fixed sample (the 6 shape x colour combinations the prior never saw, "
        "then seen ones) with the default settings and score each asset as `eval` does: shape "
        "R-precision, colour accuracy, silhouette IoU, chamfer, colour spread, mesh pieces. A staged "
        "config (magic3d, dreamgaussian) runs every stage and scores the last one's asset. About 30 "
        "minutes on a CPU for 12 prompts.",
        [
            "dreampropeller bench quality --json quality.json",
            "dreampropeller bench quality --prompts 4 representation=gaussians",
            "dreampropeller bench quality --config magic3d  (NeRF, then the DMTet refined from it)",
        ],
    )
    q.add_argument("overrides", nargs="*", help="key=value config overrides")
    q.add_argument("--json", help="write results to this JSON file")
    q.add_argument("--prompts", type=int, default=12, help="sample size (the 6 held-out combinations first)")
    q.add_argument("--config", action="append", default=[], help="YAML config file or bundled config name")
    q.set_defaults(func=_quality)
    p = add_command(
        bsub,
        "prior",
        "SDS units/s of an SD-2.1-base-shaped prior per batch size",
        "How many SDS evaluations per second a Stable-Diffusion-shaped UNet (random weights) gives at each "
        "batch size: the throughput a window of batched units can reach on this hardware.",
        [
            "dreampropeller bench prior --batches 1,4,8",
            "dreampropeller bench prior --device cuda --json p.json",
        ],
    )
    p.add_argument("--json", help="write results to this JSON file")
    p.add_argument("--small", action="store_true", help="a scaled-down model (the default on a CPU)")
    p.add_argument("--device", help="default: cuda when available, else cpu")
    p.add_argument("--batches", default="1,2,4,8,16", help="comma-separated batch sizes")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per batch size (median reported)")
    p.set_defaults(func=_prior)
    v = add_command(
        bsub,
        "vsd",
        "VSD's LoRA modes: propelled vs sequential, speed with quality",
        "ProlificDreamer's VSD with each LoRA arrangement (worker: the authors', a LoRA per worker trained "
        "on every evaluated unit; synchronized: the LoRA in the Picard state; accepted: one LoRA stepped "
        "on the accepted steps' renders), sequential vs propelled from each seed, every run with a fresh "
        "prior. Default: the embedded prior (--config prolificdreamer --prior tiny), a few minutes per run "
        "on a CPU: rounds speedup, units per accepted step, wall clock, PSNR to the sequential run beside "
        "the seed floor, eval scores and their seed spread. --prior random: the wall-clock benchmark on a "
        "random-weight Stable-Diffusion-shaped model (for GPUs).",
        [
            "dreampropeller bench vsd --seeds 0,1 --json vsd.json",
            "dreampropeller bench vsd --modes accepted --steps 200 --seeds 0",
            "dreampropeller bench vsd --prior random --arch sd21-base --device cuda",
        ],
    )
    v.add_argument("overrides", nargs="*", help="key=value config overrides (embedded prior)")
    v.add_argument(
        "--prior",
        choices=["tiny", "random"],
        default="tiny",
        help="tiny (default): the embedded prior, scored; random: random SD-shaped weights, wall clock only",
    )
    v.add_argument("--prompt", default="a red cube", help="the prompt (default: a red cube)")
    v.add_argument("--steps", type=int, help="steps of each run (default: the config's; 200 with random)")
    v.add_argument("--window", type=int, default=8, help="the propelled run's window")
    v.add_argument("--seeds", default="0,1", help="comma-separated seeds (two give the seed floor)")
    v.add_argument("--modes", help="comma-separated LoRA modes (default: worker,synchronized,accepted)")
    v.add_argument("--config", action="append", default=[], help="config files (default: prolificdreamer)")
    v.add_argument("--arch", choices=["tiny", "small", "sd21-base"], help="--prior random: sd21-base on CUDA")
    v.add_argument("--device", help="default: cuda when available, else cpu")
    v.add_argument(
        "--threshold", type=float, default=None, help="acceptance tolerance (exact steps^2; default 0.15)"
    )
    v.add_argument("--json", help="write the result to this JSON file")
    v.set_defaults(func=_vsd)
