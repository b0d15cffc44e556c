"""The Picard engine: the Process protocol, the solver, thresholds, executors, per-step RNG and
checkpoints. Knows nothing of 3D or diffusion; imports nothing from the rest of the package."""
