"""A fixed mesh with a UV texture (DreamGaussian's second stage): unwrapping, baking and rendering.

``unwrap`` cuts a mesh into charts and packs them into the unit square with xatlas (a wheel, no
build); vertices on a seam are split, so the result has more vertices than the input. ``bake`` paints
a texture from per-vertex colours by rasterizing the triangles in UV space, then spreads the colours
of the charts a few texels into the empty gutter between them (so bilinear lookups and mipmaps near a
seam do not blend in black). ``render_textured`` draws the mesh with the texture looked up bilinearly
at every covered pixel and DreamFusion shading, through the torch rasterizer of :mod:`.mesh_raster`:
differentiable in the texture.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from dreampropeller.scene.cameras import Cameras
from dreampropeller.scene.hashgrid import SceneError
from dreampropeller.scene.marching_tets import vertex_normals
from dreampropeller.scene.mesh_raster import antialias, interpolate, mesh_topology, rasterize, to_clip
from dreampropeller.scene.shading import ShadingConfig, shade

#: Picard-state keys of a UV mesh (constant buffers) and its texture (the parameter).
VERTICES, FACES, UVS, TEXTURE = "uvmesh.vertices", "uvmesh.faces", "uvmesh.uvs", "texture.image"


@dataclass
class UVMesh:
    """Vertices [V, 3] (world, z-up), faces [F, 3] (long) and texture coordinates [V, 2] in [0, 1]
    (``u`` to the right, ``v`` up, as glTF's images are read bottom-up by trimesh)."""

    vertices: Tensor
    faces: Tensor
    uvs: Tensor

    def to(self, device: torch.device | str) -> UVMesh:
        """The mesh on ``device``."""
        return UVMesh(self.vertices.to(device), self.faces.to(device), self.uvs.to(device))

    def state(self) -> dict[str, Tensor]:
        """The mesh as constant Picard-state buffers (checkpointed with the texture)."""
        return {VERTICES: self.vertices, FACES: self.faces, UVS: self.uvs}

    @classmethod
    def from_state(cls, state: Mapping[str, Tensor]) -> UVMesh:
        """The mesh held in a state by :meth:`state`."""
        return cls(state[VERTICES], state[FACES], state[UVS])


def unwrap(vertices: np.ndarray, faces: np.ndarray) -> tuple[UVMesh, np.ndarray]:
    """``(mesh, source)``: the mesh cut into UV charts by xatlas, and for each new vertex the index of
    the input vertex it copies (seam vertices appear once per chart)."""
    try:
        import xatlas
    except ImportError:  # pragma: no cover - a core dependency; only a broken install lacks it
        raise SceneError("UV unwrapping needs xatlas: pip install xatlas") from None
    if len(faces) == 0:
        raise SceneError("cannot unwrap a mesh without faces")
    source, new_faces, uvs = xatlas.parametrize(
        np.ascontiguousarray(vertices, np.float32), np.ascontiguousarray(faces, np.uint32)
    )
    mesh = UVMesh(
        torch.from_numpy(np.asarray(vertices, np.float32)[source]),
        torch.from_numpy(new_faces.astype(np.int64)),
        torch.from_numpy(uvs.astype(np.float32)),
    )
    return mesh, source.astype(np.int64)


def uv_clip(uvs: Tensor) -> Tensor:
    """Clip positions [1, V, 4] that draw UV space as an image: texel row 0 is ``v = 0``."""
    xy = uvs * 2 - 1
    return torch.cat([xy, torch.zeros_like(xy[:, :1]), torch.ones_like(xy[:, :1])], -1)[None]


def bake(mesh: UVMesh, colours: Tensor, size: int, gutter: int = 4) -> Tensor:
    """A texture [size, size, 3] (row 0 at ``v = 0``) with ``colours`` [V, 3] interpolated over every
    triangle, and the charts' border colours spread ``gutter`` texels into the empty space."""
    rast = rasterize(uv_clip(mesh.uvs.float()), mesh.faces, (size, size))
    image = interpolate(colours.float(), rast, mesh.faces)[0]
    covered = rast[0, ..., 3] > 0
    return dilate(image, covered, gutter)


def dilate(image: Tensor, covered: Tensor, steps: int) -> Tensor:
    """``image`` [H, W, C] with uncovered texels next to covered ones set to the mean of their covered
    4-neighbours, ``steps`` times (the gutter a texture needs around its charts)."""
    image, covered = image.clone(), covered.clone()
    for _ in range(steps):
        total = torch.zeros_like(image)
        count = torch.zeros_like(image[..., :1])
        for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            shifted_cov = _shift(covered[..., None].to(image.dtype), dy, dx)
            total += _shift(image, dy, dx) * shifted_cov
            count += shifted_cov
        grow = (~covered) & (count[..., 0] > 0)
        image[grow] = total[grow] / count[grow]
        covered = covered | grow
    return image


def _shift(x: Tensor, dy: int, dx: int) -> Tensor:
    """``x`` [H, W, C] moved by (dy, dx) texels, zeros shifted in."""
    out = torch.zeros_like(x)
    h, w = x.shape[:2]
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def sample_texture(texture: Tensor, uv: Tensor) -> Tensor:
    """Bilinear texture [S, S, C] lookups at ``uv`` [..., 2] (texel centres; borders clamped)."""
    grid = (uv * 2 - 1).reshape(1, -1, 1, 2)
    img = texture.permute(2, 0, 1)[None]
    out = torch.nn.functional.grid_sample(
        img, grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    return out[0, :, :, 0].T.reshape(*uv.shape[:-1], texture.shape[-1])


def render_textured(
    mesh: UVMesh,
    texture: Tensor,
    cameras: Cameras,
    height: int,
    width: int,
    codes: Tensor,
    lights: Tensor,
    background: Tensor,
    shading_cfg: ShadingConfig,
    topology: Tensor | None = None,
) -> dict[str, Tensor]:
    """``rgb`` [B, H, W, 3] (on ``background`` [B, 3]) and ``alpha`` [B, H, W, 1] of the textured mesh
    from B ``cameras``, each view shaded by its mode ``codes`` [B] with the point light ``lights``
    [B, 3] (smooth vertex normals). Differentiable in ``texture``; the silhouette is antialiased."""
    if texture.dim() != 3 or texture.shape[-1] != 3:
        raise SceneError(f"a texture must be [S, S, 3], got {tuple(texture.shape)}")
    verts, faces = mesh.vertices.to(texture), mesh.faces.to(texture.device)
    b = len(cameras)
    clip = to_clip(verts, cameras.to(texture.device), (height, width))
    rast = rasterize(clip, faces, (height, width))
    mask = (rast[..., 3:] > 0).to(texture.dtype)
    cov = mask.reshape(-1).nonzero().squeeze(1)
    cam_of = torch.div(cov, height * width, rounding_mode="floor")
    uv = interpolate(mesh.uvs.to(texture), rast, faces).reshape(-1, 2)[cov]
    points = interpolate(verts, rast, faces).reshape(-1, 3)[cov]
    normal = interpolate(vertex_normals(verts, faces), rast, faces).reshape(-1, 3)[cov]
    normal = torch.nn.functional.normalize(normal, dim=-1, eps=1e-12)
    colour = shade(
        sample_texture(texture, uv),
        normal,
        points,
        lights.to(texture)[cam_of],
        codes.to(texture.device)[cam_of],
        shading_cfg,
    )
    img = colour.new_zeros(b * height * width, 3).index_put((cov,), colour).reshape(b, height, width, 3)
    bg = background.to(texture)[:, None, None, :]
    img = torch.cat([img + (1 - mask) * bg, mask], -1)
    img = antialias(img, rast, clip, faces, topology=mesh_topology(faces) if topology is None else topology)
    return {"rgb": img[..., :3], "alpha": img[..., 3:]}
