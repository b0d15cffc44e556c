"""UV meshes: xatlas unwrapping, baking vertex colours into a texture, bilinear lookups, textured renders
and the UV-textured glb (checked against hand values, trimesh's own texture sampling and a UV sphere)."""

import numpy as np
import pytest
import torch
import trimesh

from dreampropeller.export.mesh import Mesh, piece_fractions, remove_small_pieces, write_glb
from dreampropeller.scene.cameras import cameras_from_spherical
from dreampropeller.scene.hashgrid import SceneError
from dreampropeller.scene.mesh_raster import sphere_mesh
from dreampropeller.scene.shading import ShadingConfig
from dreampropeller.scene.uv_mesh import UVMesh, bake, dilate, render_textured, sample_texture, unwrap


@pytest.fixture(scope="module")
def sphere():
    vertices, faces = sphere_mesh(12, 16, radius=0.5)
    mesh, source = unwrap(vertices.float().numpy(), faces.numpy())
    return vertices.float(), faces, mesh, source


def test_unwrap_keeps_every_face_and_splits_seams(sphere):
    vertices, faces, mesh, source = sphere
    assert mesh.faces.shape == faces.shape
    assert len(mesh.vertices) >= len(vertices)  # seam vertices are copied once per chart
    assert torch.equal(mesh.vertices, vertices[torch.from_numpy(source)])
    assert float(mesh.uvs.min()) >= 0.0 and float(mesh.uvs.max()) <= 1.0
    # the same triangles, in the same order, by position
    assert torch.allclose(mesh.vertices[mesh.faces], vertices[faces])
    # every triangle keeps a non-degenerate footprint in UV space
    uv = mesh.uvs[mesh.faces].double()
    e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    assert float((e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).abs().min()) > 0
    with pytest.raises(SceneError, match="without faces"):
        unwrap(vertices.numpy(), np.zeros((0, 3), np.int64))


def test_sample_texture_is_bilinear_between_texel_centres():
    tex = torch.tensor([[[0.0], [1.0]], [[2.0], [3.0]]]).float()  # 2 x 2, one channel; row 0 at v = 0
    at = lambda u, v: float(sample_texture(tex, torch.tensor([[u, v]]))[0, 0])  # noqa: E731
    assert at(0.25, 0.25) == pytest.approx(0.0)  # texel (row 0, col 0) centre
    assert at(0.75, 0.25) == pytest.approx(1.0)  # u runs along a row
    assert at(0.25, 0.75) == pytest.approx(2.0)  # v runs down the rows
    assert at(0.5, 0.5) == pytest.approx(1.5)  # the mean of all four
    assert at(0.5, 0.25) == pytest.approx(0.5)
    assert at(0.0, 0.0) == pytest.approx(0.0)  # clamped at the border


def test_dilate_fills_the_gutter_from_covered_neighbours():
    image = torch.zeros(3, 3, 1)
    image[1, 1] = 4.0
    covered = torch.zeros(3, 3, dtype=torch.bool)
    covered[1, 1] = True
    once = dilate(image, covered, 1)
    assert [float(once[i, j, 0]) for i, j in ((0, 1), (1, 0), (1, 2), (2, 1))] == [4.0] * 4
    assert float(once[0, 0, 0]) == 0.0  # diagonal: not a 4-neighbour yet
    image[1, 2] = 8.0
    covered[1, 2] = True
    twice = dilate(image, covered, 2)
    assert float(twice[0, 1, 0]) == 4.0 and float(twice[0, 2, 0]) == 8.0
    assert float(twice[0, 0, 0]) == pytest.approx(4.0)  # from (0, 1) and (1, 0), both 4 after step one
    assert float(twice[1, 1, 0]) == 4.0  # covered texels never change


def test_bake_interpolates_vertex_colours_over_each_triangle(sphere):
    _, _, mesh, _ = sphere
    colours = mesh.vertices * 0.8 + 0.5  # linear in position: a triangle's colour is linear inside it
    texture = bake(mesh, colours, 256)
    corners = mesh.uvs[mesh.faces]  # [F, 3, 2]
    centre = corners.mean(1)
    want = colours[mesh.faces].mean(1)
    got = sample_texture(texture, centre)
    # triangles a few texels wide: the centre's bilinear lookup is the mean of the three colours
    area = (
        0.5
        * (
            (corners[:, 1, 0] - corners[:, 0, 0]) * (corners[:, 2, 1] - corners[:, 0, 1])
            - (corners[:, 1, 1] - corners[:, 0, 1]) * (corners[:, 2, 0] - corners[:, 0, 0])
        ).abs()
    )
    big = area * 256**2 > 30
    assert int(big.sum()) > 20
    assert float((got[big] - want[big]).abs().max()) < 0.02


def test_textured_render_reads_the_texture_and_sends_its_gradient_back():
    # a square facing the camera (at +x, image right = +y, up = +z), its uv the square's own (y, z)
    v = torch.tensor([[0.0, -0.5, -0.5], [0.0, 0.5, -0.5], [0.0, 0.5, 0.5], [0.0, -0.5, 0.5]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    mesh = UVMesh(v, faces, v[:, 1:] + 0.5)
    cams = cameras_from_spherical(torch.tensor([0.0]), torch.tensor([0.0]), 2.0, 40.0)
    args = (torch.zeros(1, dtype=torch.long), cams.position, torch.ones(1, 3), ShadingConfig())
    ramp = (torch.arange(8.0) / 7).expand(8, 8)[..., None].repeat(1, 1, 3)  # texel column / 7
    with torch.no_grad():
        out = render_textured(mesh, ramp, cams, 32, 32, *args)
    alpha, red = out["alpha"][0, ..., 0], out["rgb"][0, ..., 0]
    assert float(alpha[16, 16]) == 1.0 and float(alpha[0, 0]) == 0.0
    assert torch.allclose(out["rgb"][0, 0, 0], torch.ones(3))  # the background
    # bilinear lookups of a linear ramp are linear in u: 0.5 at the image centre, growing to the right
    assert float(red[15:17, 15:17].mean()) == pytest.approx(0.5, abs=1e-4)
    step = (red[16, 17] - red[16, 16]).item()
    assert step > 0 and (red[16, 18] - red[16, 17]).item() == pytest.approx(step, rel=1e-3)
    assert (red[10, 16] - red[20, 16]).abs().item() < 1e-5  # v (up the image) does not change it

    texture = torch.rand(8, 8, 3, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    out = render_textured(mesh, texture, cams, 32, 32, *args)
    alpha = out["alpha"][0, ..., 0].detach()
    inside = torch.nn.functional.max_pool2d(-alpha[None, None], 3, 1, 1)[0, 0] == -1  # 3x3 fully covered
    loss = (out["rgb"][0, ..., 0] * inside).sum()
    (grad,) = torch.autograd.grad(loss, texture)
    # albedo = bilinear texture lookup, whose weights sum to one per pixel
    assert float(grad[..., 0].sum()) == pytest.approx(float(inside.sum()), rel=1e-5)
    assert float(grad[..., 1:].abs().sum()) == 0.0


def test_textured_glb_round_trips_through_trimesh(tmp_path, sphere):
    _, _, mesh, _ = sphere
    texture = torch.zeros(16, 16, 3)
    texture[:8] = torch.tensor([1.0, 0.0, 0.0])  # v < 0.5: red
    texture[8:] = torch.tensor([0.0, 0.0, 1.0])  # v > 0.5: blue
    colours = sample_texture(texture, mesh.uvs)
    m = Mesh(
        mesh.vertices.numpy(),
        mesh.faces.numpy(),
        colours.numpy(),
        uvs=mesh.uvs.numpy(),
        texture=texture.numpy(),
    )
    write_glb(m, tmp_path / "m.glb")
    loaded = trimesh.load(tmp_path / "m.glb", force="mesh")
    assert loaded.visual.kind == "texture"
    image = loaded.visual.material.baseColorTexture
    assert image.size == (16, 16)
    sampled = loaded.visual.to_color().vertex_colors[:, :3] / 255.0
    away = (mesh.uvs[:, 1] - 0.5).abs().numpy() > 0.1  # clear of the red / blue border
    want = np.where(mesh.uvs[:, 1:2].numpy() < 0.5, [1.0, 0.0, 0.0], [0.0, 0.0, 1.0])
    assert np.abs(sampled[away] - want[away]).max() < 0.02
    # the seams' copies are one piece, and cleaning keeps the uvs with their vertices
    assert piece_fractions(m).tolist() == [1.0]
    assert remove_small_pieces(m, 0.01) is m
