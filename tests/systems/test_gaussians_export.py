"""Gaussian exports: the 3DGS ply (layout, y-up rotation of means, covariances and SH), the mesh field."""

import torch

from dreampropeller.export.gaussians import (
    Z_TO_Y_UP,
    gaussian_fields,
    read_gaussian_ply,
    rotate_gaussians,
    write_gaussian_ply,
)
from dreampropeller.scene.gaussians import (
    MEANS,
    QUATS,
    SCALES,
    SH_REST,
    activate,
    covariance_3d,
    gaussian_colors,
    init_gaussians,
)


def scene(n=50):
    g = torch.Generator().manual_seed(3)
    s = init_gaussians(n, 0.5, g, sh_degree=1)
    s[QUATS] = torch.randn(n, 4, generator=g)
    s[SCALES] = s[SCALES] + 0.5 * torch.randn(n, 3, generator=g)
    s[SH_REST] = torch.randn(n, 3, 3, generator=g)
    return s


def test_rotation_moves_means_covariances_and_view_dependent_colour_together():
    s = scene()
    r = Z_TO_Y_UP
    t = rotate_gaussians(s, r)
    assert torch.allclose(t[MEANS], s[MEANS] @ r.T)
    a, b = activate(s), activate(t)
    assert torch.allclose(
        covariance_3d(b.scales, b.quats), r @ covariance_3d(a.scales, a.quats) @ r.T, atol=1e-6
    )
    cams = torch.tensor([[1.5, -0.3, 0.7], [0.0, 2.0, -1.0]])
    assert torch.allclose(gaussian_colors(t, cams @ r.T), gaussian_colors(s, cams), atol=1e-5)


def test_ply_has_the_3dgs_layout(tmp_path):
    s = scene(20)
    cols = read_gaussian_ply(write_gaussian_ply(s, tmp_path / "g.ply", y_up=False))
    assert len(cols) == 3 + 3 + 3 + 9 + 1 + 3 + 4
    assert torch.allclose(torch.from_numpy(cols["z"].copy()), s[MEANS][:, 2])
    # f_rest is channel-major: f_rest_0..2 are the red channel's three degree-1 coefficients
    assert torch.allclose(torch.from_numpy(cols["f_rest_1"].copy()), s[SH_REST][:, 1, 0])
    assert torch.allclose(torch.from_numpy(cols["f_rest_3"].copy()), s[SH_REST][:, 0, 1])
    assert torch.allclose(torch.from_numpy(cols["rot_0"].copy()), s[QUATS][:, 0])
    up = read_gaussian_ply(write_gaussian_ply(s, tmp_path / "u.ply"))
    assert torch.allclose(torch.from_numpy(up["y"].copy()), s[MEANS][:, 2])  # z-up -> y-up


def test_density_field_peaks_at_centres_and_colours_match():
    s = init_gaussians(2, 0.5, torch.Generator().manual_seed(0), opacity=0.5)
    s[MEANS] = torch.tensor([[0.3, 0.0, 0.0], [-0.3, 0.0, 0.0]])
    s[SCALES] = torch.full((2, 3), -3.0)
    s["gaussians.colors"] = torch.tensor([[1.5, -1.5, -1.5], [-1.5, -1.5, 1.5]])
    density, color = gaussian_fields(s)
    d = density(torch.tensor([[0.3, 0.0, 0.0], [0.0, 0.0, 0.0], [0.3, 0.2, 0.0]]))
    assert d[0] > 100 * d[1] and d[0] > 100 * d[2]
    c = color(torch.tensor([[0.3, 0.01, 0.0], [-0.3, 0.0, 0.01]]))
    assert c[0, 0] > 0.8 and c[0, 2] < 0.2 and c[1, 2] > 0.8 and c[1, 0] < 0.2


def test_tiled_density_field_equals_the_sum_over_every_gaussian():
    """The field evaluated tile by tile (only Gaussians whose 3-sigma box reaches a tile) equals the
    brute-force sum of every Gaussian's term, up to the tails cut beyond 3 standard deviations."""
    g = torch.Generator().manual_seed(1)
    s = init_gaussians(300, 0.6, g, opacity=0.5)
    s[SCALES] = torch.log(0.02 + 0.05 * torch.rand(300, 3, generator=g))
    s[QUATS] = torch.randn(300, 4, generator=g)
    axis = torch.linspace(-0.8, 0.8, 17)
    points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    density, color = gaussian_fields(s)
    a = activate(s)
    inv = torch.linalg.inv(covariance_3d(a.scales, a.quats))
    d = points[:, None, :] - a.means[None]
    q = torch.einsum("mki,kij,mkj->mk", d, inv, d)
    peak = a.opacities / ((2 * torch.pi) ** 0.5 * a.scales.mean(-1))
    brute = (peak * torch.exp(-0.5 * q)).sum(-1)
    # a term cut off is below peak * exp(-4.5) (outside 3 sigma along the largest axis, at least)
    assert float((density(points) - brute).abs().max()) <= float(peak.max() * torch.exp(torch.tensor(-4.5)))
    assert float((density(points) - brute).abs().max()) < 1e-2 * float(brute.max())
    rgb = (0.28209479177387814 * s["gaussians.colors"] + 0.5).clamp(0, 1)
    w = peak * torch.exp(-0.5 * q)
    strong = brute > 0.3 * float(brute.max())
    ref = (w @ rgb) / w.sum(-1, keepdim=True)
    assert torch.allclose(color(points)[strong], ref[strong], atol=1e-2)
