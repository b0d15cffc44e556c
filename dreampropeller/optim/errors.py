"""The one error type of :mod:`dreampropeller.optim`."""

from __future__ import annotations


class OptimConfigError(ValueError):
    """Bad optimizer or schedule configuration (the message says what was wrong and what to do)."""
