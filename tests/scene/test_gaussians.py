import math

import pytest
import torch

from dreampropeller.scene.gaussians import (
    COLORS,
    MEANS,
    OPACITIES,
    QUATS,
    SCALES,
    SH_C0,
    SH_C1,
    SH_REST,
    GaussianError,
    activate,
    check_gaussians,
    covariance_3d,
    gaussian_colors,
    init_gaussians,
    quat_to_rotmat,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_init_shapes_bounds_and_dreamgaussian_defaults():
    s = init_gaussians(5000, 0.5, gen())
    assert check_gaussians(s) == 5000
    assert s[MEANS].norm(dim=-1).max() <= 0.5 + 1e-6
    # uniform in the ball: the fraction within r/2 is 1/8
    inner = (s[MEANS].norm(dim=-1) < 0.25).float().mean()
    assert abs(float(inner) - 0.125) < 0.02
    act = activate(s)
    assert torch.allclose(act.opacities, torch.full((5000,), 0.1), atol=1e-6)
    assert torch.allclose(act.quats, torch.tensor([1.0, 0, 0, 0]).expand(5000, 4))
    # isotropic scale ~ point spacing: 5000 points in a ball of radius 0.5 are ~0.03 apart
    assert torch.equal(s[SCALES][:, 0], s[SCALES][:, 2])
    assert 0.01 < float(act.scales.median()) < 0.06
    rgb = 0.5 + SH_C0 * s[COLORS]
    assert rgb.min() >= 0 and rgb.max() <= 1 and rgb.std() > 0.2


def test_init_is_deterministic_and_bounded():
    a, b = init_gaussians(100, 1.0, gen(3)), init_gaussians(100, 1.0, gen(3))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(GaussianError, match="exceeds the limit"):
        init_gaussians(101, 1.0, gen(), max_count=100)
    with pytest.raises(GaussianError, match=">= 1"):
        init_gaussians(0, 1.0, gen())
    with pytest.raises(GaussianError, match="opacity"):
        init_gaussians(10, 1.0, gen(), opacity=1.5)


def test_check_gaussians_rejects_bad_shapes():
    s = init_gaussians(10, 1.0, gen())
    s[QUATS] = s[QUATS][:, :3]
    with pytest.raises(GaussianError, match=r"gaussians\.quats has shape"):
        check_gaussians(s)


def test_rotation_and_covariance():
    q = torch.tensor([math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)])  # 90 deg about z
    r = quat_to_rotmat(q)
    assert torch.allclose(r @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0]), atol=1e-6)
    cov = covariance_3d(torch.tensor([0.1, 0.2, 0.3]), q)
    assert torch.allclose(cov, torch.diag(torch.tensor([0.04, 0.01, 0.09])), atol=1e-6)


def test_sh_degree1_colors_follow_3dgs_convention():
    s = init_gaussians(2, 1.0, gen(), sh_degree=1)
    s[MEANS] = torch.zeros(2, 3)
    s[COLORS] = torch.zeros(2, 3)
    s[SH_REST] = torch.zeros(2, 3, 3)
    s[SH_REST][:, 2, 0] = 1.0  # x-coefficient, red channel: rgb.r = 0.5 - C1 * x
    cam = torch.tensor([[-2.0, 0.0, 0.0], [2.0, 0.0, 0.0]])  # directions +x and -x
    rgb = gaussian_colors(s, cam)
    assert torch.allclose(rgb[0, :, 0], torch.full((2,), max(0.0, 0.5 - SH_C1)))
    assert torch.allclose(rgb[1, :, 0], torch.full((2,), 0.5 + SH_C1))
    assert torch.allclose(rgb[..., 1:], torch.full((2, 2, 2), 0.5))


def test_rgb_mode_is_sigmoid():
    s = init_gaussians(4, 1.0, gen(), color_mode="rgb", color_spread=0.5)
    rgb = gaussian_colors(s, torch.zeros(1, 3), "rgb")
    assert torch.allclose(rgb[0], torch.sigmoid(s[COLORS]))
    assert float(rgb.min()) >= 0.25 - 1e-4 and float(rgb.max()) <= 0.75 + 1e-4
    with pytest.raises(GaussianError, match="color_mode"):
        gaussian_colors(s, torch.zeros(1, 3), "hsv")
    assert s[OPACITIES].shape == (4,)
