"""`dreampropeller prior ...`: train, sample and score the embedded tiny prior, and train its evaluator."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from dreampropeller.commands import add_command
from dreampropeller.picard.device import resolve_device


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``prior train|sample|eval|train-evaluator``."""
    prior = add_command(
        subparsers,
        "prior",
        "the embedded tiny diffusion prior: train it, sample it, score it",
        "The embedded prior is a small text-conditioned diffusion model of a library of shapes and colours "
        "(shipped with the package), so text-to-3D runs and is scored objectively on a CPU. These commands "
        "reproduce and inspect it; generating 3D assets does not need them.",
        [
            'dreampropeller prior sample --prompt "a red cube" --out cube.png',
            "dreampropeller prior eval --json prior_eval.json",
            "dreampropeller prior train --out runs/prior --minutes 30",
        ],
    )
    sub = prior.add_subparsers(dest="prior_command", required=True, metavar="COMMAND")

    train = add_command(
        sub,
        "train",
        "train the tiny prior (resumable; exports EMA weights to OUT/export)",
        "Train the embedded prior on rendered library shapes. OUT gets checkpoint.pt, log.txt and "
        "export/ (the EMA weights, loadable with --prior-path).",
        [
            "dreampropeller prior train --out runs/prior --minutes 30",
            "dreampropeller prior train --out runs/prior --resume",
        ],
    )
    train.add_argument("--out", required=True, help="run directory (checkpoint, log, export/)")
    train.add_argument("--steps", type=int, help="stop after this many steps in total")
    train.add_argument("--minutes", type=float, help="stop after this many minutes of this invocation")
    train.add_argument("--batch", type=int, help="images per step (default 512 on CUDA, 32 on the CPU)")
    train.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    train.add_argument("--device", default="auto", help="cpu, cuda or auto (CUDA when present)")
    train.add_argument("--seed", type=int, default=0, help="random seed")
    train.add_argument("--views-per-shape", type=int, help="traced views per shape in the geometry pool")
    train.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints")
    train.add_argument("--log-every", type=int, default=50, help="steps between log lines")
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if present")
    train.add_argument("--safe", action="store_true", help="CUDA in plain float32 (no bf16, channels-last)")
    train.set_defaults(func=_train)

    sample = add_command(
        sub,
        "sample",
        "sample images of prompts (DDIM, classifier-free guidance)",
        "Sample images of prompts from the prior around a turntable; one PNG, a row per prompt.",
        ['dreampropeller prior sample --prompt "a red cube" --prompt "a blue torus" --out samples.png'],
    )
    sample.add_argument("--prompt", action="append", required=True, help="prompt (repeat for several)")
    sample.add_argument("--out", required=True, help="PNG file: one row per prompt")
    _common_sampling(sample)
    sample.add_argument("--n", type=int, default=8, help="samples per prompt, around a turntable")
    sample.add_argument("--elevation", type=float, default=20.0, help="camera elevation, degrees")
    sample.add_argument("--distance", type=float, default=1.75, help="camera distance")
    sample.add_argument("--scale", type=int, default=4, help="pixel enlargement in the PNG")
    sample.set_defaults(func=_sample)

    ev = add_command(
        sub,
        "eval",
        "score the prior's samples of every prompt with the learned evaluator",
        "Sample every library prompt (held-out combinations included) and score the samples' shape and "
        "colour with the learned evaluator; the metrics go to --json.",
        ["dreampropeller prior eval --json prior_eval.json --png prior_eval.png"],
    )
    ev.add_argument("--json", required=True, help="write the metrics here")
    ev.add_argument("--png", help="also write the samples as a grid (one row per shape)")
    _common_sampling(ev)
    ev.add_argument("--samples-per-prompt", type=int, default=4, help="samples scored per prompt")
    ev.add_argument("--evaluator", help="evaluator weights (default: the shipped ones)")
    ev.set_defaults(func=_eval)

    ev_train = add_command(
        sub,
        "train-evaluator",
        "train the learned evaluator (classifier) of the metrics",
        "Train the shape and colour classifier that `eval` and `prior eval` use as their learned evaluator.",
        ["dreampropeller prior train-evaluator --out runs/evaluator"],
    )
    ev_train.add_argument("--out", required=True, help="directory for classifier.safetensors/.json")
    ev_train.add_argument("--steps", type=int, default=1500, help="training steps")
    ev_train.add_argument("--batch", type=int, default=64, help="images per step")
    ev_train.add_argument("--seed", type=int, default=0, help="random seed")
    ev_train.add_argument("--device", default="cpu", help="cpu or cuda")
    ev_train.set_defaults(func=_train_evaluator)


def _common_sampling(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", default="tiny", help="'tiny' (shipped) or a weights file / export dir")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument(
        "--guidance", type=float, nargs="+", help="guidance scale(s) (default: the weights' own)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the samples")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (CUDA when present)")


def _load_prior(args: argparse.Namespace):
    from dreampropeller.guidance.tiny.model import TinyPrior

    return TinyPrior.load(args.weights, device=resolve_device(args.device))


def _train(args: argparse.Namespace) -> int:
    from dreampropeller.guidance.tiny.train import TrainConfig, train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_file = (out / "train.log").open("a")

    def log(line: str) -> None:
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    cfg = TrainConfig(
        out=str(out),
        steps=args.steps,
        minutes=args.minutes,
        batch=args.batch,
        lr=args.lr,
        device=args.device,
        seed=args.seed,
        views_per_shape=args.views_per_shape,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
        resume=args.resume,
        safe=args.safe,
    )
    try:
        train(cfg, log=log)
    finally:
        log_file.close()
    return 0


def _sample(args: argparse.Namespace) -> int:
    from dreampropeller.guidance.tiny.library import parse_partial
    from dreampropeller.guidance.tiny.preview import save_png
    from dreampropeller.guidance.tiny.sampling import ddim_sample

    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    for p in args.prompt:
        parse_partial(p)  # fail fast on unknown words
    prior = _load_prior(args)
    device = prior.alphas_cumprod.device
    guidance = (args.guidance or [prior.config.guidance_scale])[0]
    prompts = [p for p in args.prompt for _ in range(args.n)]
    azimuth = torch.arange(args.n, dtype=torch.float32) * (360.0 / args.n) - 180.0
    camera = torch.stack(
        [torch.full((args.n,), args.elevation), azimuth, torch.full((args.n,), args.distance)], -1
    ).repeat(len(args.prompt), 1)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    start = time.perf_counter()
    images = ddim_sample(
        prior, prompts, camera.to(device), steps=args.steps, guidance_scale=guidance, generator=gen
    )
    seconds = time.perf_counter() - start
    save_png(images, args.out, columns=args.n, scale=args.scale)
    print(
        f"prior sample: {len(prompts)} images, {args.steps} DDIM steps, guidance {guidance}, "
        f"{seconds:.1f} s on {device} ({seconds / len(prompts):.2f} s/image) -> {args.out}"
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from dreampropeller.evaluation.classifier import load_classifier
    from dreampropeller.evaluation.prior_eval import evaluate_prior
    from dreampropeller.guidance.tiny.preview import save_png

    prior = _load_prior(args)
    classifier = load_classifier(args.evaluator, device=prior.alphas_cumprod.device)
    scales = args.guidance or [prior.config.guidance_scale]
    runs = []
    for g in scales:
        metrics, images = evaluate_prior(
            prior,
            classifier,
            samples_per_prompt=args.samples_per_prompt,
            steps=args.steps,
            guidance_scale=g,
            seed=args.seed,
        )
        runs.append((metrics, images))
        print(
            f"prior eval: guidance {g}: sample_accuracy {metrics['sample_accuracy']:.3f} "
            f"(held-out {metrics['sample_accuracy_held_out']:.3f}), shape {metrics['shape_accuracy']:.3f}, "
            f"colour {metrics['colour_accuracy']:.3f}, {metrics['sampling_seconds']:.1f} s"
        )
    best, images = max(runs, key=lambda r: r[0]["sample_accuracy"])
    result = dict(best)
    result["weights"] = str(args.weights)
    if len(runs) > 1:
        result["by_guidance"] = {
            str(m["guidance_scale"]): {
                k: m[k]
                for k in (
                    "sample_accuracy",
                    "sample_accuracy_held_out",
                    "shape_accuracy",
                    "colour_accuracy",
                    "feature_distance",
                )
            }
            for m, _ in runs
        }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.png:
        save_png(images, args.png, columns=args.samples_per_prompt * 8, scale=2)
    return 0


def _train_evaluator(args: argparse.Namespace) -> int:
    from dreampropeller.evaluation.classifier import train_classifier

    model, report = train_classifier(
        steps=args.steps, batch=args.batch, seed=args.seed, device=resolve_device(args.device)
    )
    path = model.save(args.out)
    print(f"evaluator: {json.dumps(report)} -> {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run only the ``prior`` commands (``python -m dreampropeller.commands.prior train ...``).

    Useful on machines that lack the optional dependencies of other commands.
    """
    parser = argparse.ArgumentParser(prog="dreampropeller-prior")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["prior", *(argv if argv is not None else sys.argv[1:])])
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"dreampropeller prior: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
