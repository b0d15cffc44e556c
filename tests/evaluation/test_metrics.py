import mcubes
import numpy as np
import pytest
import torch

from dreampropeller.evaluation.metrics import (
    chamfer_to_shape,
    frechet_distance,
    nearest_colour,
    point_triangle_distance,
    silhouette_iou,
    surface_samples,
)
from dreampropeller.guidance.tiny.library import COLOUR_NAMES, colour_table, shape_sdf


def _marching_cubes(shape: str, res: int = 64):
    lin = torch.linspace(-0.6, 0.6, res)
    grid = torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), -1)
    values = shape_sdf(shape, grid).numpy()
    verts, faces = mcubes.marching_cubes(-values, 0.0)
    verts = verts / (res - 1) * 1.2 - 0.6
    return torch.tensor(verts, dtype=torch.float32), torch.tensor(faces.astype(np.int64))


def test_silhouette_iou_known_cases():
    a = torch.zeros(2, 1, 4, 4)
    a[:, :, :2] = 1.0  # top half
    b = torch.zeros(2, 1, 4, 4)
    b[0, :, :2] = 1.0
    b[1, :, 1:3] = 1.0
    assert silhouette_iou(a, b).tolist() == pytest.approx([1.0, 4 / 12])
    assert silhouette_iou(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)).item() == 1.0


def test_point_triangle_distance_regions():
    tri = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    pts = torch.tensor([[0.2, 0.2, 0.5], [2.0, 0.0, 0.0], [-1.0, -1.0, 0.0], [0.5, -1.0, 1.0]])
    d = point_triangle_distance(pts, tri.expand(4, 3, 3))
    assert d.tolist() == pytest.approx([0.5, 1.0, 2**0.5, 2**0.5], abs=1e-6)


@pytest.mark.parametrize("shape", ["cube", "torus"])
def test_chamfer_of_true_marching_cubes_mesh_is_near_zero(shape):
    verts, faces = _marching_cubes(shape)
    assert chamfer_to_shape(verts, faces, shape, n=4000) < 0.002


def test_chamfer_grows_for_the_wrong_shape_or_placement():
    verts, faces = _marching_cubes("sphere", 48)
    right = chamfer_to_shape(verts, faces, "sphere", n=3000)
    wrong = chamfer_to_shape(verts, faces, "cube", n=3000)
    shifted = chamfer_to_shape(verts + torch.tensor([0.1, 0.0, 0.0]), faces, "sphere", n=3000)
    assert right < 0.002 and wrong > 0.04 and shifted > 0.04
    with pytest.raises(ValueError, match="vertices"):
        chamfer_to_shape(verts[:, :2], faces, "sphere")


def test_surface_samples_lie_on_the_surface():
    pts = surface_samples("octahedron", 2000, torch.Generator().manual_seed(0))
    assert pts.shape == (2000, 3)
    assert shape_sdf("octahedron", pts).abs().max() < 1e-3
    # roughly uniform: each of the 8 faces gets its share
    counts = torch.bincount(((pts > 0).long() * torch.tensor([1, 2, 4])).sum(-1), minlength=8)
    assert counts.min() > 150


def test_nearest_colour_is_brightness_invariant():
    for i, name in enumerate(COLOUR_NAMES):
        for k in (0.3, 0.6, 1.0):
            assert nearest_colour(colour_table()[i] * k) == name


def test_frechet_distance():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(500, 4, generator=gen)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = frechet_distance(a, a + torch.tensor([2.0, 0.0, 0.0, 0.0]))
    assert shifted == pytest.approx(4.0, abs=1e-6)
    b = torch.randn(500, 4, generator=gen) * 2
    assert frechet_distance(a, b) > 2.0


def test_colour_spread_is_zero_for_a_shaded_uniform_colour_and_matches_a_hand_computation():
    from dreampropeller.evaluation.metrics import colour_spread

    alpha = torch.ones(1, 1, 2, 2)
    red = torch.tensor([0.8, 0.2, 0.1])
    brightness = torch.tensor([1.0, 0.5, 0.25, 0.9]).reshape(1, 1, 2, 2)
    shaded = red.reshape(1, 3, 1, 1) * brightness  # shading only scales: chromaticity stays
    assert colour_spread(shaded, alpha) == pytest.approx(0.0, abs=1e-9)
    # three grey pixels (chromaticity 1/3 each) and one pure red one (1, 0, 0): the median is grey,
    # so the RMS distance is sqrt(((2/3)^2 + 2 (1/3)^2) / 4) = sqrt(6/9 / 4)
    rgb = torch.full((1, 3, 2, 2), 0.5)
    rgb[0, :, 1, 1] = torch.tensor([1.0, 0.0, 0.0])
    assert colour_spread(rgb, alpha) == pytest.approx((6 / 9 / 4) ** 0.5, rel=1e-6)
    # pixels under the alpha threshold do not count; half-transparent ones count by their own colour
    edge = alpha.clone()
    edge[0, 0, 1, 1] = 0.5
    assert colour_spread(rgb, edge) == pytest.approx(0.0, abs=1e-9)
    faint = shaded.clone()
    faint[0, :, 0, 0] = 0.6 * red * 0.5 + 0.4 * 1.0  # 60% of a darker red over the white background
    see_through = alpha.clone()
    see_through[0, 0, 0, 0] = 0.6
    assert colour_spread(faint, see_through) == pytest.approx(0.0, abs=1e-6)
    assert colour_spread(faint, alpha) > 0.05  # read as opaque, the washed-out pixel is off-colour
    assert colour_spread(rgb, torch.zeros_like(alpha)) == 0.0
