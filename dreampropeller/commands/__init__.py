"""Command-line subcommands, one module each (wired in dreampropeller.cli)."""
