"""Turntable video and view strip."""

import imageio.v2 as imageio
import numpy as np
import torch

from dreampropeller.export.video import write_turntable, write_views_png
from dreampropeller.scene.cameras import Cameras


def azimuth_render(cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat images whose red channel encodes the azimuth (so views are distinguishable), fully opaque."""
    b = len(cameras)
    red = ((cameras.azimuth + 180.0) / 360.0).view(b, 1, 1, 1).expand(b, 15, 21, 1)
    rgb = torch.cat([red, torch.zeros(b, 15, 21, 1), torch.full((b, 15, 21, 1), 0.5)], -1)
    return rgb, torch.ones(b, 15, 21, 1)


def test_turntable_mp4_has_every_frame_at_even_size(tmp_path):
    path = write_turntable(azimuth_render, tmp_path / "turn.mp4", n_views=10, fps=5, chunk=3, progress=False)
    reader = imageio.get_reader(path)
    frames = [f for f in reader]
    meta = reader.get_meta_data()
    reader.close()
    assert len(frames) == 10
    assert frames[0].shape == (16, 22, 3)
    assert abs(meta["fps"] - 5) < 1e-6
    reds = [float(f[..., 0].mean()) for f in frames]
    assert reds[0] < reds[1] < reds[2]  # azimuth 0, 36, 72 degrees


def test_views_png_is_a_strip(tmp_path):
    path = write_views_png(azimuth_render, tmp_path / "views.png", n=4)
    img = imageio.imread(path)
    assert img.shape == (15, 84, 3)
    assert np.abs(img[..., 2].astype(int) - 128).max() <= 1
