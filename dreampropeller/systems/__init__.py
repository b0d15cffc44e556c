"""Processes: a representation + renderer + one score-distillation object + losses + optimizer, as
a Picard process (NeRF text-to-3D, Gaussian text- and image-to-3D), and the factory that builds them
from a run config."""
