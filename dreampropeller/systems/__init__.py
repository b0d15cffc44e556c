"""Glue: a text-to-3D (or image-to-3D) run as a Picard process, and the driver that runs it."""


def load_run_renderer(run_dir):
    """See :func:`dreampropeller.systems.run.load_run_renderer`."""
    from dreampropeller.systems.run import load_run_renderer as impl

    return impl(run_dir)
