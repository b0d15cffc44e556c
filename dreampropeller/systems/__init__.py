"""Glue: text-to-3D / image-to-3D runs as Picard processes, configs, and the run driver."""
