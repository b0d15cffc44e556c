"""dreampropeller: fast text-to-3D by score distillation accelerated with generalized Picard iteration."""

__version__ = "0.1.0"
