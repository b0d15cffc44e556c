"""The `dreampropeller` command line; each subcommand is a module of ``dreampropeller.commands``."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from dreampropeller import commands
from dreampropeller.version import __version__

DESCRIPTION = """\
Fast text-to-3D: score distillation (SDS / VSD) into a NeRF or 3D Gaussians, with the sequential
optimizer steps propelled by Picard iteration (DreamPropeller), at the quality of the sequential run.
Runs on a laptop CPU with the embedded prior; on GPUs with Stable Diffusion or DeepFloyd IF.
"""

EPILOG = """\
first run (about 3 minutes on a laptop CPU, no download):
  dreampropeller generate "a red cube" --out runs/red-cube
  dreampropeller eval runs/red-cube

runs/red-cube then holds turntable.mp4, views.png, mesh.glb / mesh.obj, metrics.json (speed and the
acceptance traces), config.yaml and a checkpoint to --resume from. `dreampropeller COMMAND --help`
says more about each command.
"""


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command module's subcommands registered."""
    parser = argparse.ArgumentParser(
        prog="dreampropeller",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dreampropeller {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"dreampropeller.commands.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, dispatch to the subcommand's ``func(args)``, map user errors to exit code 2."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # positional prompt / key=value overrides may follow options: hand them to commands that take items
        if not hasattr(args, "items") or any(e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.items = [*args.items, *extra]
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        print("dreampropeller: interrupted", file=sys.stderr)
        return 130
    except (UserError, ValueError, FileNotFoundError) as err:
        if os.environ.get("DREAMPROPELLER_DEBUG"):
            raise  # the full traceback, for developers
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"dreampropeller: error: {message}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
