"""Shared fixtures: a random-weight embedded prior saved on disk, tiny run configs."""

import pytest
import torch

from dreampropeller.guidance.tiny.model import TinyPrior, TinyPriorConfig

TINY_OVERRIDES = [
    "render.height=16",
    "render.width=16",
    "render.batch_size=2",
    "render.num_samples=8",
    "nerf.n_levels=4",
    "nerf.log2_hashmap_size=10",
    "nerf.finest_resolution=64",
    "levels.start=2",
    "levels.every=3",
    "export.turntable_views=4",
    "export.video_size=16",
    "export.video_samples=8",
    "export.mesh_resolution=24",
    "occupancy.start=2",
    "occupancy.every=2",
    "occupancy.resolution=8",
]


@pytest.fixture(scope="session")
def random_prior_dir(tmp_path_factory):
    """A TinyPrior with random weights (seeded), saved like the shipped one."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("prior")
    TinyPrior(TinyPriorConfig(channels=(16, 32, 32), text_dim=32, pooled_dim=32)).save(directory)
    return directory
