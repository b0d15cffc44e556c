import math

import pytest
import torch

from dreampropeller.guidance.tiny.library import colour_table
from dreampropeller.guidance.tiny.render import render, trace
from dreampropeller.scene.cameras import cameras_from_spherical


@pytest.mark.parametrize(("distance", "fovy"), [(2.0, 50.0), (1.5, 40.0)])
def test_sphere_silhouette_area_matches_projection(distance, fovy):
    size = 64
    cams = cameras_from_spherical(torch.tensor([0.0, 35.0]), torch.tensor([0.0, 120.0]), distance, fovy)
    out = render(["sphere", "sphere"], ["red", "red"], cams, size)
    focal = 0.5 * size / math.tan(math.radians(fovy) / 2)
    radius_px = focal * math.tan(math.asin(0.42 / distance))
    expected = math.pi * radius_px**2
    area = out.alpha.sum(dim=(1, 2, 3))
    assert torch.allclose(area, torch.full_like(area, expected), rtol=0.02)


def test_render_outputs_white_background_colour_depth_normals():
    cams = cameras_from_spherical(20.0, 30.0, 2.0, 50.0, batch=1)
    out = render(["sphere"], ["blue"], cams, 33)
    assert out.rgb.shape == (1, 3, 33, 33) and out.alpha.shape == (1, 1, 33, 33)
    assert torch.allclose(out.rgb[0, :, 0, 0], torch.ones(3))  # corner: white background
    assert out.alpha[0, 0, 0, 0] == 0 and out.depth[0, 0, 0, 0] == 0
    centre = out.rgb[0, :, 16, 16]
    # light at the camera, normal facing it: ambient + diffuse = full albedo
    assert torch.allclose(centre, colour_table()[5], atol=0.02)
    assert abs(out.depth[0, 0, 16, 16].item() - (2.0 - 0.42)) < 2e-3
    normal = out.normal[0, :, 16, 16]
    assert torch.allclose(normal, torch.nn.functional.normalize(cams.position[0], dim=0), atol=0.02)


def test_shading_darkens_away_from_the_light_and_jitter_is_seeded():
    cams = cameras_from_spherical(0.0, 0.0, 2.0, 50.0, batch=1)
    a = render(["cube"], ["yellow"], cams, 32, generator=torch.Generator().manual_seed(3))
    b = render(["cube"], ["yellow"], cams, 32, generator=torch.Generator().manual_seed(3))
    c = render(["cube"], ["yellow"], cams, 32, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.rgb, b.rgb) and not torch.equal(a.rgb, c.rgb)
    sphere = render(["sphere"], ["yellow"], cams, 32)
    lum = sphere.rgb.sum(1)[0]
    assert lum[16, 16] > lum[16, 11] + 0.1  # centre is lit more than near the rim


def test_shapes_have_distinct_silhouettes():
    cams = cameras_from_spherical(15.0, 30.0, 1.8, 50.0, batch=1)
    alphas = [trace(torch.tensor([s]), cams, 32, 32).alpha for s in range(6)]
    for i in range(6):
        for j in range(i + 1, 6):
            assert (alphas[i] - alphas[j]).abs().sum() > 20


def test_mismatched_batch_raises():
    cams = cameras_from_spherical(0.0, 0.0, 2.0, 50.0, batch=2)
    with pytest.raises(ValueError, match="one shape per camera"):
        trace(torch.tensor([0]), cams, 8, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_render_on_cuda_matches_cpu():
    cams = cameras_from_spherical(15.0, 30.0, 1.8, 50.0, batch=2)
    cpu = render(["cone", "torus"], ["red", "green"], cams, 32)
    gpu = render(["cone", "torus"], ["red", "green"], cams.to("cuda"), 32)
    assert torch.allclose(cpu.rgb, gpu.rgb.cpu(), atol=1e-3)
