"""Volume renderer: analytic constant-density sphere, misses, slot batching, cameras, shading modes."""

import math

import pytest
import torch

from dreampropeller.scene.cameras import cameras_from_spherical, turntable
from dreampropeller.scene.hashgrid import SceneError
from dreampropeller.scene.nerf import NeRFConfig, init_nerf_params, slot_params, stack_params
from dreampropeller.scene.shading import ShadingConfig
from dreampropeller.scene.volume import ray_sphere, render_cameras, render_rays

SMALL = dict(n_levels=4, log2_hashmap_size=10, base_resolution=4, finest_resolution=32, density_hidden=16)


def _constant(sigma: float, albedo_logit: float = 0.0, **kw) -> tuple[dict, NeRFConfig]:
    """Parameters of a field with density ``sigma`` everywhere and a uniform grey albedo."""
    cfg = NeRFConfig(**SMALL, density_bias="none", density_activation="exp", **kw)
    params = init_nerf_params(cfg, torch.Generator().manual_seed(0))
    for k in params:
        if k.startswith(("geometry.density_net", "material.albedo_net")):
            params[k] = torch.zeros_like(params[k])
    params["geometry.density_net.1.bias"] = torch.tensor([math.log(sigma)])
    params["material.albedo_net.1.bias"] = torch.full((3,), albedo_logit)
    return stack_params([params]), cfg


def _slots(cfg: NeRFConfig, p: int) -> dict:
    sets = []
    for k in range(p):
        g = torch.Generator().manual_seed(10 + k)
        params = init_nerf_params(cfg, g)
        params["geometry.encoding"] = params["geometry.encoding"] + 0.5 * torch.randn(
            params["geometry.encoding"].shape, generator=g
        )
        sets.append(params)
    return stack_params(sets)


def test_ray_sphere():
    o = torch.tensor([[0.0, 0.0, -3.0], [0.0, 2.0, -3.0], [0.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    near, far = ray_sphere(o, d, 1.0)
    assert torch.allclose(near, torch.tensor([2.0, 0.0, 0.0, 0.0]))
    assert torch.allclose(far, torch.tensor([4.0, 0.0, 1.0, 0.0]))  # miss, inside, sphere behind


@pytest.mark.parametrize("impact", [0.0, 0.6, 0.95])
def test_constant_density_sphere_opacity_matches_beer_lambert(impact):
    sigma = 0.7
    params, cfg = _constant(sigma)
    o = torch.tensor([[[impact, 0.0, -3.0]]])
    d = torch.tensor([[[0.0, 0.0, 1.0]]])
    out = render_rays(params, o, d, cfg, num_samples=32, generator=torch.Generator().manual_seed(1))
    chord = 2.0 * math.sqrt(1.0 - impact**2)
    assert abs(out["opacity"].item() - (1.0 - math.exp(-sigma * chord))) < 1e-3
    # grey albedo 0.5 over a white background
    expect_rgb = 0.5 * out["opacity"].item() + (1.0 - out["opacity"].item())
    assert torch.allclose(out["rgb"], torch.full((1, 1, 3), expect_rgb), atol=1e-5)
    # depth of an optically thin slab is near the middle of the chord (weights fall off slowly)
    assert 2.0 < out["depth"].item() / out["opacity"].item() < 3.0


def test_missing_ray_returns_background():
    params, cfg = _constant(5.0, background_color=(0.1, 0.2, 0.3))
    o = torch.tensor([[[0.0, 1.5, -3.0], [0.0, 0.0, -3.0]]])
    d = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]])
    out = render_rays(params, o, d, cfg, num_samples=16)
    assert out["opacity"][0, 0].item() == 0.0 and out["opacity"][0, 1].item() > 0.99
    assert torch.allclose(out["rgb"][0, 0], torch.tensor([0.1, 0.2, 0.3]))
    # an explicit background (random-colour augmentation) replaces it where the mask says so
    bg = torch.tensor([[[0.9, 0.8, 0.7]]])
    out = render_rays(
        params, o, d, cfg, num_samples=16, background=bg, background_mask=torch.tensor([[True, False]])
    )
    assert torch.allclose(out["rgb"][0, 0], torch.tensor([0.9, 0.8, 0.7]))


def test_slot_k_of_window_equals_single_render():
    cfg = NeRFConfig(**SMALL)
    params = _slots(cfg, 8)
    cams = [turntable(2, start_azimuth=30.0 * k) for k in range(8)]
    lights = torch.randn(8, 2, 3, generator=torch.Generator().manual_seed(3)) + 2.0
    modes = [["diffuse", "textureless"], ["albedo", "diffuse"]] * 4
    kw = dict(num_samples=12, shading_cfg=ShadingConfig())
    gens = [torch.Generator().manual_seed(50 + k) for k in range(8)]
    out = render_cameras(params, cams, 8, 8, cfg, generator=gens, shading=modes, light_positions=lights, **kw)
    for k in (0, 5):
        one = render_cameras(
            slot_params(params, k),
            [cams[k]],
            8,
            8,
            cfg,
            generator=[torch.Generator().manual_seed(50 + k)],
            shading=[modes[k]],
            light_positions=lights[k : k + 1],
            **kw,
        )
        for key in ("rgb", "opacity", "depth", "normal"):
            assert torch.allclose(out[key][k], one[key][0], atol=1e-5), key
    assert not torch.allclose(out["rgb"][0], out["rgb"][1])


def test_render_cameras_shapes_chunking_and_gradients():
    cfg = NeRFConfig(**SMALL)
    params = {k: v.requires_grad_(True) for k, v in _slots(cfg, 2).items()}
    cams = turntable(3)
    out = render_cameras(
        params, cams, 6, 5, cfg, num_samples=8, generator=torch.Generator().manual_seed(4), need_normals=True
    )
    assert out["rgb"].shape == (2, 3, 6, 5, 3) and out["opacity"].shape == (2, 3, 6, 5, 1)
    assert out["weights"].shape == (2, 90, 8) and out["normals_samples"].shape == (2, 90, 8, 3)
    chunked = render_cameras(
        params, cams, 6, 5, cfg, num_samples=8, generator=torch.Generator().manual_seed(4), ray_chunk=7
    )
    assert torch.allclose(chunked["rgb"], out["rgb"], atol=1e-6)
    out["rgb"].sum().backward()
    assert params["geometry.encoding"].grad.abs().sum() > 0
    assert params["material.albedo_net.0.weight"].grad.abs().sum() > 0


def test_shading_modes_on_a_constant_sphere():
    params, cfg = _constant(50.0, albedo_logit=math.log(0.6 / 0.4))
    cam = cameras_from_spherical(0.0, 0.0, 3.0, 20.0)
    sc = ShadingConfig(ambient=0.1, diffuse=0.9)
    render = lambda mode, light: render_cameras(  # noqa: E731
        params, cam, 1, 1, cfg, num_samples=64, shading=mode, shading_cfg=sc, light_positions=light
    )
    head = cam.position[None]  # light at the camera: facing surface fully lit
    albedo = render("albedo", head)["rgb"].flatten()
    assert torch.allclose(albedo, torch.full((3,), 0.6), atol=2e-3)
    # constant density has no gradient, hence no normal: light a dense blob instead (a thin shell of weight)
    blob = NeRFConfig(**SMALL, normal_mode="analytic", blob_density=200.0)
    bp = init_nerf_params(blob, torch.Generator().manual_seed(0))
    bp["material.albedo_net.1.weight"] = torch.zeros_like(bp["material.albedo_net.1.weight"])
    bp["material.albedo_net.1.bias"] = torch.full((3,), math.log(0.6 / 0.4))
    bp = stack_params([bp])
    run = lambda mode, light: render_cameras(  # noqa: E731
        bp, cam, 1, 1, blob, num_samples=128, shading=mode, shading_cfg=sc, light_positions=light
    )
    lit = run("diffuse", head)
    tl = run("textureless", head)
    behind = run("diffuse", -head)
    op = lit["opacity"].item()
    assert op > 0.99
    assert abs(lit["rgb"].flatten()[0].item() - 0.6 * 1.0) < 0.03  # ambient + diffuse = 1 facing the light
    assert abs(tl["rgb"].flatten()[0].item() - 1.0) < 0.03  # white albedo
    assert abs(behind["rgb"].flatten()[0].item() - 0.6 * 0.1) < 0.03  # ambient only
    normal = lit["normal"].flatten()
    assert normal[0] > 0.95  # the camera sits on +x; the visible normal faces it


def test_bad_inputs_raise():
    cfg = NeRFConfig(**SMALL)
    params = _slots(cfg, 2)
    with pytest.raises(SceneError, match="rays must"):
        render_rays(params, torch.zeros(1, 4, 3), torch.zeros(1, 4, 3), cfg, num_samples=4)
    with pytest.raises(SceneError, match="one generator per slot"):
        render_rays(
            params,
            torch.zeros(2, 4, 3),
            torch.ones(2, 4, 3),
            cfg,
            num_samples=4,
            generator=[torch.Generator()],
        )
    with pytest.raises(SceneError, match="unknown shading"):
        render_cameras(params, turntable(1), 2, 2, cfg, num_samples=4, shading="phong")
