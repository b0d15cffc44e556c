"""The run tests share the systems tests' tiny configs and random prior."""

from ..systems.conftest import TINY_OVERRIDES, random_prior_dir

__all__ = ["TINY_OVERRIDES", "random_prior_dir"]
