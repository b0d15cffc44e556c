"""Objective evaluation against the tiny prior's library: silhouettes, colour, chamfer, learned features.

``evaluate_asset(render_fn, prompt, mesh=None)`` scores any asset; ``evaluate_prior`` scores the
prior's own samples (in ``prior_eval``).
"""

from dreampropeller.evaluation.asset import evaluate_asset, evaluation_cameras, library_render_fn

__all__ = ["evaluate_asset", "evaluation_cameras", "library_render_fn"]
