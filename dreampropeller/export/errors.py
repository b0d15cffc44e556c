"""The one error type of :mod:`dreampropeller.export`."""

from __future__ import annotations


class ExportError(ValueError):
    """Bad input to an exporter (the message says what was wrong and what to do)."""
