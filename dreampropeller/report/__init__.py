"""The report of a run: ``report.html``, one self-contained page (viewer, video, plots, metrics,
scores, config) that opens from the file system with no network; and the live logs of a run
(``trace.jsonl``, TensorBoard). It reads run directories' files, never a process.

``write_report(["runs/a", "runs/b"], "compare.html")`` (and ``dreampropeller report``). The names are
imported lazily, so the run loop's use of ``report.trace`` does not load matplotlib.
"""

from __future__ import annotations

from typing import Any

__all__ = ["REPORT", "build_report", "write_report", "write_run_report"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from dreampropeller.report import write

        return getattr(write, name)
    raise AttributeError(f"module 'dreampropeller.report' has no attribute {name!r}")
