"""Benchmarks: problems and side-by-side runs that print measured ratios."""
