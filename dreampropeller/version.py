"""The package version (its own module, so the CLI can read it without importing the public API)."""

__version__ = "0.1.0"
