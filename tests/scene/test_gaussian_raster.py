import math

import pytest
import torch

from dreampropeller.scene.cameras import cameras_from_spherical
from dreampropeller.scene.gaussian_raster import (
    ALPHA_THRESHOLD,
    MAX_ALPHA,
    MIN_TRANSMITTANCE,
    camera_matrices,
    project_gaussians,
    random_scene,
    rasterize_gaussians,
)
from dreampropeller.scene.gaussians import (
    COLORS,
    MEANS,
    OPACITIES,
    QUATS,
    SCALES,
    GaussianError,
    activate,
    gaussian_colors,
    rgb_to_sh0,
)

FOVY = 50.0


def focal(h):
    return 0.5 * h / math.tan(math.radians(FOVY) / 2)


def one_gaussian(mean, std, opacity, rgb, dtype=torch.float64):
    n = len(mean)
    logit = [math.log(o / (1 - o)) for o in opacity]
    return {
        MEANS: torch.tensor(mean, dtype=dtype),
        SCALES: torch.log(torch.tensor(std, dtype=dtype)),
        QUATS: torch.tensor([[1.0, 0, 0, 0]] * n, dtype=dtype),
        OPACITIES: torch.tensor(logit, dtype=dtype),
        COLORS: rgb_to_sh0(torch.tensor(rgb, dtype=dtype)),
    }


def front_camera(dist=2.0, az=0.0):
    # at (dist, 0, 0) looking at the origin: image x = world +y, image up = world +z
    return cameras_from_spherical(0.0, az, dist, FOVY)


def test_axis_aligned_gaussian_projects_to_expected_covariance():
    h, w, d = 65, 33, 2.0
    cams = front_camera(d)
    viewmats, ks = camera_matrices(cams, h, w)
    viewmats, ks = viewmats.double(), ks.double()
    std = torch.tensor([[0.05, 0.1, 0.2]], dtype=torch.float64)  # world x (depth), y (image x), z (image y)
    quats = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64)
    proj = project_gaussians(
        torch.zeros(1, 3, dtype=torch.float64), std, quats, torch.tensor([0.5]), viewmats, ks, h, w
    )
    f = focal(h)
    cov = torch.linalg.inv(
        torch.tensor(
            [[proj.conics[0, 0, 0], proj.conics[0, 0, 1]], [proj.conics[0, 0, 1], proj.conics[0, 0, 2]]]
        )
    )
    expected = torch.diag(
        torch.tensor([(f * 0.1 / d) ** 2 + 0.3, (f * 0.2 / d) ** 2 + 0.3], dtype=torch.float64)
    )
    assert torch.allclose(cov, expected, rtol=1e-6, atol=1e-5)  # cameras are float32
    assert torch.allclose(proj.means2d[0, 0], torch.tensor([w / 2, h / 2], dtype=torch.float64), atol=1e-5)
    assert float(proj.depths[0, 0]) == pytest.approx(d)
    # opacity-aware 3DGS/gsplat box: ceil(sqrt(2 ln(255 o)) * sigma)
    ext = math.sqrt(2 * math.log(0.5 * 255))
    assert proj.radii[0, 0].tolist() == [
        math.ceil(ext * math.sqrt(expected[0, 0])),
        math.ceil(ext * math.sqrt(expected[1, 1])),
    ]


def test_off_centre_point_projects_like_camera_rays():
    h, w = 24, 40
    cams = cameras_from_spherical(20.0, 35.0, 2.5, FOVY)
    origins, dirs = cams.rays(h, w)
    i, j = 7, 29  # row, column
    point = origins[0, i, j] + 1.7 * dirs[0, i, j]
    viewmats, ks = camera_matrices(cams, h, w)
    proj = project_gaussians(
        point[None],
        torch.full((1, 3), 0.01),
        torch.tensor([[1.0, 0, 0, 0]]),
        torch.tensor([0.5]),
        viewmats,
        ks,
        h,
        w,
    )
    assert torch.allclose(proj.means2d[0, 0], torch.tensor([j + 0.5, i + 0.5]), atol=1e-4)


def test_single_gaussian_alpha_at_centre_is_opacity_and_falls_off():
    h = w = 33
    d, s, o = 2.0, 0.2, 0.7
    g = one_gaussian([[0.0, 0.0, 0.0]], [[s, s, s]], [o], [[0.2, 0.4, 0.9]])
    out = rasterize_gaussians(g, front_camera(d), h, w)
    alpha = out["alpha"][0, ..., 0]
    c = h // 2
    assert abs(float(alpha[c, c]) - o) < 1e-4
    var = (focal(h) * s / d) ** 2 + 0.3
    for k in (1, 2, 3, 5):
        for a_ in (alpha[c, c + k], alpha[c - k, c], alpha[c + k, c]):
            assert float(a_) == pytest.approx(o * math.exp(-0.5 * k * k / var), abs=1e-6)
    diag = float(alpha[c + 2, c + 2])
    assert diag == pytest.approx(o * math.exp(-0.5 * 8 / var), abs=1e-6)
    # skipped below 1/255, and the colour is alpha-weighted on a black background
    assert float(alpha.min()) == 0.0 and float(alpha[alpha > 0].min()) >= ALPHA_THRESHOLD
    assert torch.allclose(
        out["rgb"][0, c, c], o * torch.tensor([0.2, 0.4, 0.9], dtype=torch.float64), atol=1e-6
    )
    assert float(out["depth"][0, c, c, 0]) == pytest.approx(d)


def test_two_gaussians_occlusion_order():
    h = w = 17
    g = one_gaussian(
        [[0.3, 0.0, 0.0], [-0.3, 0.0, 0.0]], [[0.05] * 3] * 2, [0.6, 0.8], [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    )
    bg = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    c = h // 2
    front = rasterize_gaussians(g, front_camera(2.0, 0.0), h, w, bg)["rgb"][0, c, c]  # red is nearer
    back = rasterize_gaussians(g, front_camera(2.0, 180.0), h, w, bg)["rgb"][0, c, c]  # blue is nearer
    t = (1 - 0.6) * (1 - 0.8)
    assert torch.allclose(front, torch.tensor([0.6, t, 0.4 * 0.8], dtype=torch.float64), atol=1e-6)
    assert torch.allclose(back, torch.tensor([0.2 * 0.6, t, 0.8], dtype=torch.float64), atol=1e-6)


def dense_reference(params, cams, h, w):
    """Brute force: every pixel against every projected Gaussian, sequential compositing."""
    act = activate(params)
    vm, ks = camera_matrices(cams, h, w)
    proj = project_gaussians(act.means, act.scales, act.quats, act.opacities, vm.double(), ks.double(), h, w)
    colors = gaussian_colors(params, cams.position.double())
    out = torch.zeros(len(cams), h, w, 4, dtype=torch.float64)
    for b in range(len(cams)):
        vis = torch.nonzero((proj.radii[b] > 0).any(-1)).squeeze(-1)
        vis = vis[torch.argsort(proj.depths[b, vis], stable=True)]
        for i in range(h):
            for j in range(w):
                t = 1.0
                for g in vis.tolist():
                    dx, dy = j + 0.5 - proj.means2d[b, g, 0], i + 0.5 - proj.means2d[b, g, 1]
                    a_, b_, c_ = proj.conics[b, g]
                    q = 0.5 * (a_ * dx * dx + c_ * dy * dy) + b_ * dx * dy
                    alpha = min(MAX_ALPHA, float(act.opacities[g] * torch.exp(-q)))
                    if q < 0 or alpha < ALPHA_THRESHOLD:
                        continue
                    if t * (1 - alpha) <= MIN_TRANSMITTANCE:
                        break
                    out[b, i, j, :3] += alpha * t * colors[b, g]
                    out[b, i, j, 3] += alpha * t
                    t *= 1 - alpha
    return out


def tiny_scene(n=40, seed=1, dtype=torch.float64):
    state, _ = random_scene(n, seed)
    state = {k: v.to(dtype) for k, v in state.items()}
    state[SCALES] = state[SCALES] + 1.0  # a few pixels wide at 12-20 px
    cams = cameras_from_spherical(torch.tensor([20.0, -10.0]), torch.tensor([30.0, 250.0]), 2.0, FOVY)
    return state, cams


def test_matches_dense_reference_and_chunking_is_exact():
    state, cams = tiny_scene()
    h, w = 12, 20
    ref = dense_reference(state, cams, h, w)
    out = rasterize_gaussians(state, cams, h, w)
    assert torch.allclose(out["rgb"], ref[..., :3], atol=1e-10)
    assert torch.allclose(out["alpha"], ref[..., 3:], atol=1e-10)
    assert float(out["alpha"].max()) > 0.9  # there is real occlusion in the scene
    chunked = rasterize_gaussians(state, cams, h, w, max_pairs=7)
    for k in ("rgb", "alpha", "depth"):
        assert torch.allclose(chunked[k], out[k], atol=1e-10)


def test_gradients_flow_to_all_attributes_finite_differences():
    state, cams = tiny_scene(n=8, seed=2)
    state["gaussians.sh_rest"] = (
        0.3 * torch.randn(8, 3, 3, generator=torch.Generator().manual_seed(5)).double()
    )
    h, w = 10, 12
    weights = torch.rand(2, h, w, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    bg = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)

    def loss_of(s):
        out = rasterize_gaussians(s, cams, h, w, bg)
        return (torch.cat([out["rgb"], out["alpha"], out["depth"]], -1) * weights).sum()

    leaves = {k: v.clone().requires_grad_(True) for k, v in state.items()}
    grads = dict(zip(leaves, torch.autograd.grad(loss_of(leaves), list(leaves.values()))))
    eps = 1e-6
    gen = torch.Generator().manual_seed(0)
    for key, value in state.items():
        assert grads[key].abs().sum() > 0, key
        for idx in torch.randint(0, value.numel(), (4,), generator=gen).tolist():
            plus, minus = dict(state), dict(state)
            plus[key] = (
                value.flatten()
                .clone()
                .index_add(0, torch.tensor([idx]), torch.tensor([eps], dtype=value.dtype))
                .view_as(value)
            )
            minus[key] = (
                value.flatten()
                .clone()
                .index_add(0, torch.tensor([idx]), torch.tensor([-eps], dtype=value.dtype))
                .view_as(value)
            )
            fd = (loss_of(plus) - loss_of(minus)) / (2 * eps)
            assert float(grads[key].flatten()[idx]) == pytest.approx(float(fd), rel=1e-4, abs=1e-6), (
                key,
                idx,
            )


def test_means2d_gradient_is_the_screen_space_gradient():
    g = one_gaussian([[0.0, 0.0, 0.0]], [[0.2] * 3], [0.5], [[1.0, 1.0, 1.0]])
    h = w = 33
    leaves = {k: v.clone().requires_grad_(True) for k, v in g.items()}
    out = rasterize_gaussians(leaves, front_camera(), h, w)
    # loss = brightness right of centre: moving the splat right (+u) increases it
    loss = out["alpha"][0, :, 20:].sum()
    (g2d,) = torch.autograd.grad(loss, [out["means2d"]])
    assert g2d.shape == (1, 1, 2)
    assert float(g2d[0, 0, 0]) > 0 and abs(float(g2d[0, 0, 1])) < 1e-9
    assert out["radii"].shape == (1, 1, 2) and int(out["radii"].min()) > 0


def test_slots_stacked_and_list():
    state, cams = tiny_scene(n=20, seed=3)
    other, _ = tiny_scene(n=12, seed=4)
    h, w = 8, 8
    single = [rasterize_gaussians(s, cams, h, w) for s in (state, other)]
    stacked = rasterize_gaussians({k: torch.stack([v, v]) for k, v in state.items()}, cams, h, w)
    assert stacked["rgb"].shape == (2, 2, h, w, 3) and stacked["means2d"].shape == (2, 2, 20, 2)
    assert torch.allclose(stacked["rgb"][1], single[0]["rgb"])
    listed = rasterize_gaussians([state, other], [cams, cams.index([1, 0])], h, w)
    assert isinstance(listed["means2d"], list) and listed["means2d"][1].shape == (2, 12, 2)
    assert torch.allclose(listed["rgb"][1, 0], single[1]["rgb"][1])


def test_bad_input_raises_one_clear_error():
    state, cams = tiny_scene(n=4)
    with pytest.raises(GaussianError, match="backend"):
        rasterize_gaussians(state, cams, 8, 8, backend="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(GaussianError, match="gsplat"):
            rasterize_gaussians(state, cams, 8, 8, backend="gsplat")
    with pytest.raises(GaussianError, match="background"):
        rasterize_gaussians(state, cams, 8, 8, torch.zeros(5))
    with pytest.raises(GaussianError, match="camera batches"):
        rasterize_gaussians([state, state], [cams], 8, 8)
    bad = dict(state)
    bad[MEANS] = bad[MEANS][:, :2]
    with pytest.raises(GaussianError, match="expected"):
        rasterize_gaussians(bad, cams, 8, 8)
