"""Command-line subcommands, one module each (wired in dreampropeller.cli)."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence


def add_command(
    subparsers: argparse._SubParsersAction, name: str, summary: str, about: str, examples: Sequence[str]
) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` says what it does (``about``), then first ``examples`` to try.

    ``summary`` is its line in the parent command's list.
    """
    paragraphs = [textwrap.fill(" ".join(p.split()), width=100) for p in about.strip().split("\n\n")]
    description = "\n\n".join(paragraphs) + "\n\nexamples:\n" + "\n".join(f"  {e}" for e in examples)
    return subparsers.add_parser(
        name, help=summary, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
