"""dreampropeller: fast text-to-3D by score distillation accelerated with generalized Picard iteration.

The public API (imported on first use, so ``import dreampropeller`` stays light)::

    from dreampropeller import PicardSolver, SolverConfig, Process, generate, load_run

``PicardSolver`` / ``SolverConfig`` / ``Process`` accelerate any iterative process whose step is
"expensive deterministic unit, then cheap update"; ``generate`` makes a 3D asset from a prompt into a
run directory; ``load_run`` reads one back (config, exact state, step, and its ``asset``).
"""

from __future__ import annotations

import importlib
from typing import Any

from dreampropeller.version import __version__

_PUBLIC = {
    "PicardSolver": "dreampropeller.picard.solver",
    "SolverConfig": "dreampropeller.picard.solver",
    "Process": "dreampropeller.picard.process",
    "generate": "dreampropeller.runs.driver",
    "load_run": "dreampropeller.runs.loading",
}

__all__ = ["PicardSolver", "Process", "SolverConfig", "__version__", "generate", "load_run"]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'dreampropeller' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
