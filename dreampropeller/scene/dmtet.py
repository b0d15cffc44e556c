"""DMTet (Shen et al. 2021, as Magic3D's refine stage uses it): a tetrahedral grid with a signed
distance and a bounded deformation per vertex, meshed by differentiable marching tetrahedra, coloured
by a texture field (hash grid + small MLP) and drawn by the mesh rasterizer with DreamFusion shading.

Parameters are one flat dict (state layout, no slot dimension): ``dmtet.sdf`` [V], ``dmtet.deformation``
[V, 3] (vertices move by ``tanh(deformation) * cell / 2``, so a tetrahedron cannot be crossed by its
neighbour's vertex), ``texture.encoding`` [L, T, F] and ``texture.albedo_net.*`` (the NeRF's hash
grid and MLP helpers). Each slot of a Picard window has its own mesh (the topology changes with the
SDF), so rendering goes slot by slot; everything else in a step is batched by the caller.

The SDF is negative inside. :func:`sphere_sdf` starts from a ball; Magic3D starts from a NeRF's density
field (:func:`sdf_from_density`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from dreampropeller.scene.cameras import Cameras
from dreampropeller.scene.hashgrid import HashGridConfig, SceneError, hashgrid_encode, init_hashgrid_tables
from dreampropeller.scene.marching_tets import edge_face_pairs, face_normals, marching_tets, vertex_normals
from dreampropeller.scene.mesh_raster import (
    antialias,
    interpolate,
    mesh_edges,
    mesh_topology,
    rasterize,
    silhouette_edges,
    to_clip,
)
from dreampropeller.scene.nerf import batched_mlp, init_mlp
from dreampropeller.scene.shading import ShadingConfig, shade
from dreampropeller.scene.tetgrid import cell_size, tet_grid

Params = dict[str, Tensor]
SDF = "dmtet.sdf"
DEFORMATION = "dmtet.deformation"
ENCODING = "texture.encoding"
ALBEDO_NET = "texture.albedo_net"
NORMALS = ("vertex", "face")
SILHOUETTES = ("edges", "antialias")


@dataclass(frozen=True)
class DMTetShape:
    """Sizes of a DMTet: the grid (``resolution`` cells per axis over ``[-radius, radius]^3``) and the
    texture field (hash grid levels from ``base_resolution`` to ``finest_resolution``, MLP)."""

    resolution: int = 32
    radius: float = 0.75
    n_levels: int = 4
    n_features_per_level: int = 2
    log2_hashmap_size: int = 15
    base_resolution: int = 16
    finest_resolution: int = 64
    albedo_hidden: int = 64
    albedo_layers: int = 1

    def __post_init__(self) -> None:
        if self.resolution < 2 or not self.radius > 0:
            raise SceneError(
                f"dmtet needs resolution >= 2 and radius > 0, got {self.resolution}, {self.radius}"
            )
        if self.albedo_hidden < 1 or self.albedo_layers < 0:
            raise SceneError("dmtet albedo MLP sizes must be positive (hidden >= 1, layers >= 0)")
        if self.finest_resolution < self.base_resolution:
            raise SceneError("dmtet texture finest_resolution must be >= base_resolution")
        self.grid  # noqa: B018 - validates the texture grid now

    @property
    def grid(self) -> HashGridConfig:
        return HashGridConfig.spanning(
            self.n_levels,
            self.n_features_per_level,
            self.log2_hashmap_size,
            self.base_resolution,
            self.finest_resolution,
        )

    @property
    def cell(self) -> float:
        return cell_size(self.resolution, self.radius)


class DMTet:
    """The static part of a DMTet (grid vertices and tetrahedra, per device) and its functions of
    parameter dicts."""

    def __init__(self, shape: DMTetShape, device: torch.device | str = "cpu") -> None:
        self.shape = shape
        self.device = torch.device(device)
        verts, tets = tet_grid(shape.resolution, shape.radius)
        self.grid_vertices = verts.to(self.device)
        self.tets = tets.to(self.device)

    def to(self, device: torch.device | str) -> DMTet:
        return self if torch.device(device) == self.device else DMTet(self.shape, device)

    @cached_property
    def keys(self) -> tuple[str, ...]:
        """The parameter names, in state order."""
        return tuple(self.init_params(torch.zeros(0), torch.Generator().manual_seed(0)))

    # -- parameters ------------------------------------------------------------------------------
    def init_params(self, sdf: Tensor, generator: torch.Generator) -> Params:
        """Parameters with the given per-vertex ``sdf`` [V] (empty: ``sphere_sdf`` of radius 0.4; used
        for the key list), zero deformation and a fresh texture field drawn from ``generator``."""
        s = self.shape
        if sdf.numel() == 0:
            sdf = sphere_sdf(self.grid_vertices, 0.4)
        if sdf.shape != self.grid_vertices.shape[:1]:
            raise SceneError(f"dmtet sdf must be [{self.grid_vertices.shape[0]}], got {tuple(sdf.shape)}")
        params: Params = {
            SDF: sdf.to(self.device, torch.float32),
            DEFORMATION: torch.zeros_like(self.grid_vertices),
            ENCODING: init_hashgrid_tables(s.grid, generator).to(self.device),
        }
        sizes = [s.grid.output_dim] + [s.albedo_hidden] * s.albedo_layers + [3]
        params |= {k: v.to(self.device) for k, v in init_mlp(ALBEDO_NET, sizes, generator).items()}
        return params

    # -- geometry -----------------------------------------------------------------------------------
    def vertices(self, params: Mapping[str, Tensor]) -> Tensor:
        """Deformed grid vertices [V, 3] of one parameter set."""
        return self.grid_vertices + torch.tanh(params[DEFORMATION]) * (self.shape.cell / 2)

    def mesh(self, params: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``(vertices [M, 3], faces [F, 3])`` of one parameter set, differentiable in sdf and deformation."""
        return marching_tets(self.vertices(params), params[SDF], self.tets)

    # -- texture ------------------------------------------------------------------------------------
    def albedo(self, params: Mapping[str, Tensor], points: Tensor) -> Tensor:
        """Albedo [N, 3] in [0, 1] at world points [N, 3] of one parameter set."""
        s = self.shape
        unit = ((points + s.radius) / (2 * s.radius))[None]
        tex = {k: v[None] for k, v in params.items() if k.startswith("texture.")}
        feats = hashgrid_encode(tex[ENCODING], unit, s.grid)
        return torch.sigmoid(batched_mlp(tex, ALBEDO_NET, feats))[0]

    def albedo_fn(self, params: Mapping[str, Tensor]) -> Callable[[Tensor], Tensor]:
        """``points [N, 3] -> albedo [N, 3]`` of one (detached) parameter set."""
        fixed = {k: v.detach() for k, v in params.items()}
        return lambda pts: self.albedo(fixed, pts.to(self.device))

    # -- rendering ----------------------------------------------------------------------------------
    def render(
        self,
        params: Mapping[str, Tensor],
        cameras: Cameras,
        height: int,
        width: int,
        codes: Tensor,
        lights: Tensor,
        background: Tensor,
        shading_cfg: ShadingConfig,
        mesh: tuple[Tensor, Tensor] | None = None,
        normals: str = "vertex",
        silhouette: str = "antialias",
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Renders of one parameter set from ``cameras`` (B of them): ``rgb`` [B, H, W, 3] composited on
        ``background`` [B, 3], ``alpha`` [B, H, W, 1], ``normal`` [B, H, W, 3] (unit where covered, 0
        elsewhere), and the mesh (``vertices``, ``faces``). ``codes`` [B] are the per-camera shading modes
        (:data:`~dreampropeller.scene.shading.SHADING_MODES`), ``lights`` [B, 3] point lights. ``mesh``:
        the already extracted ``self.mesh(params)`` (exports render one mesh many times). ``normals``:
        shading normals interpolated from the vertices' (smooth) or the faces' own (flat).
        ``silhouette``: how the outline gets its gradient, ``antialias`` (blended edges,
        :func:`~dreampropeller.scene.mesh_raster.antialias`) or ``edges`` (the image as rasterized,
        edge-sampled gradients, :func:`~dreampropeller.scene.mesh_raster.silhouette_edges`, jittered
        by ``generator``; right where triangles are smaller than pixels)."""
        if normals not in NORMALS:
            raise SceneError(f"dmtet normals must be one of {NORMALS}, got {normals!r}")
        if silhouette not in SILHOUETTES:
            raise SceneError(f"dmtet silhouette must be one of {SILHOUETTES}, got {silhouette!r}")
        verts, faces = self.mesh(params) if mesh is None else mesh
        b = len(cameras)
        dev, dtype = verts.device, verts.dtype
        bg = background.to(dev, dtype)[:, None, None, :].expand(b, height, width, 3)
        if faces.shape[0] == 0:  # nothing to draw: the background, still connected to the parameters
            zero = 0 * (params[SDF].sum() + params[DEFORMATION].sum())
            alpha = verts.new_zeros(b, height, width, 1) + zero
            return {"rgb": bg + zero, "alpha": alpha, "normal": bg * 0, "vertices": verts, "faces": faces}
        clip = to_clip(verts, cameras.to(dev), (height, width))
        rast = rasterize(clip, faces, (height, width))
        mask = (rast[..., 3:] > 0).to(dtype)
        points = interpolate(verts, rast, faces).reshape(-1, 3)
        if normals == "vertex":
            normal = interpolate(vertex_normals(verts, faces), rast, faces)
        else:
            fn = torch.cat([verts.new_zeros(1, 3), face_normals(verts, faces)])  # row 0: no face
            normal = fn[rast[..., 3].detach().round().long()]
        normal = torch.nn.functional.normalize(normal, dim=-1, eps=1e-12)
        cov = mask.reshape(-1).nonzero().squeeze(1)
        cam_of = torch.div(cov, height * width, rounding_mode="floor")
        pts = points[cov]
        col = shade(
            self.albedo(params, pts),
            normal.reshape(-1, 3)[cov],
            pts,
            lights.to(dev, dtype)[cam_of],
            codes.to(dev)[cam_of],
            shading_cfg,
        )
        img = col.new_zeros(b * height * width, 3).index_put((cov,), col).reshape(b, height, width, 3)
        img = torch.cat([img + (1 - mask) * bg, mask, normal], -1)
        if silhouette == "edges":
            img = silhouette_edges(img, rast, clip, faces, edges=mesh_edges(faces), generator=generator)
        else:
            img = antialias(img, rast, clip, faces, topology=mesh_topology(faces))
        return {
            "rgb": img[..., :3],
            "alpha": img[..., 3:4],
            "normal": normal * mask,
            "vertices": verts,
            "faces": faces,
        }


# ---------------------------------------------------------------------------------------------- fields


def sphere_sdf(points: Tensor, radius: float) -> Tensor:
    """Signed distance [N] to a ball of ``radius`` at the origin (negative inside)."""
    return points.norm(dim=-1) - radius


def sdf_from_density(density: Tensor, level: float, scale: float) -> Tensor:
    """An SDF-like field [N] from densities [N] at an isosurface ``level`` (Magic3D's init from a NeRF):
    ``(level - density) / level * scale`` is negative where the density exceeds the level, zero on the
    level set; ``scale`` (a cell) keeps its values near the size of a grid step. Clamped to
    ``[-scale, scale] * 4`` so deep inside and far outside do not dominate the optimizer's moments."""
    if not level > 0:
        raise SceneError(f"the density level must be > 0, got {level}")
    return ((level - density) / level * scale).clamp(-4 * scale, 4 * scale)


# ------------------------------------------------------------------------------------------ regularizers


def normal_consistency(vertices: Tensor, faces: Tensor) -> Tensor:
    """Mean ``1 - cos`` of the angle between the normals of faces sharing an edge (0 for a plane)."""
    if faces.shape[0] == 0:
        return vertices.sum() * 0
    with torch.no_grad():
        pairs = edge_face_pairs(faces)[1]
    if pairs.shape[0] == 0:
        return vertices.sum() * 0
    n = torch.nn.functional.normalize(face_normals(vertices, faces), dim=-1, eps=1e-12)
    return (1 - (n[pairs[:, 0]] * n[pairs[:, 1]]).sum(-1)).mean()


def laplacian_smoothness(vertices: Tensor, faces: Tensor) -> Tensor:
    """Mean squared length of the uniform Laplacian (a vertex minus the mean of its neighbours)."""
    if faces.shape[0] == 0:
        return vertices.sum() * 0
    with torch.no_grad():
        edges = edge_face_pairs(faces)[0]
    i = torch.cat([edges[:, 0], edges[:, 1]])
    j = torch.cat([edges[:, 1], edges[:, 0]])
    deg = torch.zeros(vertices.shape[0], dtype=vertices.dtype, device=vertices.device).index_add(
        0, i, torch.ones_like(i, dtype=vertices.dtype)
    )
    mean = vertices.new_zeros(vertices.shape).index_add(0, i, vertices[j]) / deg.clamp_min(1)[:, None]
    return (vertices - mean).square().sum(-1).mean()
