"""One tiny finished run shared by the report tests (seconds: the tiny configs and random prior of the
systems tests), with the TensorBoard logger on so its logs are checked too."""

import shutil

import pytest
import torch

from dreampropeller.cli import main
from dreampropeller.export.gaussians import write_gaussian_ply
from dreampropeller.scene.gaussians import COLORS, MEANS, OPACITIES, QUATS, SCALES, rgb_to_sh0

from ..systems.conftest import TINY_OVERRIDES, random_prior_dir

__all__ = ["random_prior_dir"]

STEPS, WINDOW = 6, 3


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, random_prior_dir):
    """A finished 6-step NeRF run (window 3) logged to TensorBoard: its directory."""
    out = tmp_path_factory.mktemp("report") / "propelled"
    code = main(
        [
            "generate",
            "a red cube",
            "--out",
            str(out),
            "--steps",
            str(STEPS),
            "--window",
            str(WINDOW),
            "--quiet",
            "--logger",
            "tensorboard",
            "--prior-path",
            str(random_prior_dir),
            *TINY_OVERRIDES,
        ]
    )
    assert code == 0
    return out


def copy_run(run, to):
    """A copy of a run directory (a second run to compare without training one)."""
    shutil.copytree(run, to)
    return to


def write_splats(path, n=400, rgb=(0.1, 0.8, 0.2), seed=0):
    """A ``gaussians.ply`` of ``n`` opaque Gaussians of colour ``rgb`` on a sphere of radius 0.4."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=1) * 0.4
    state = {
        MEANS: means,
        SCALES: torch.full((n, 3), -3.5),
        QUATS: torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
        OPACITIES: torch.full((n,), 4.0),
        COLORS: rgb_to_sh0(torch.tensor(rgb)).repeat(n, 1),
    }
    return write_gaussian_ply(state, path)
