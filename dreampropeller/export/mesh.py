"""Mesh extraction by marching cubes from any density field, with vertex colours, and mesh writers.

Generic over the representation: give ``extract_mesh`` a density function and a colour function of
world points. The isosurface threshold ``"auto"`` picks the density level whose solid best matches
what a renderer shows as opaque: for each axis it integrates the density along grid lines
(orthographic render, opacity ``1 - exp(-sum sigma * dx)``), marks pixels above 50 % opacity, and
chooses the level whose occupied region {sigma > level} projects onto the same silhouettes (highest
mean IoU over the three axes; ties go to the lower level, which keeps thin parts connected). A
fixed threshold for a NeRF trained from a blob (threestudio uses 25) often eats thin parts or
inflates the shape; the silhouette match adapts to each field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mcubes
import numpy as np
import torch

from dreampropeller.export.errors import ExportError

DensityFn = Callable[[torch.Tensor], torch.Tensor]
ColorFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Mesh:
    """A triangle mesh in world coordinates (z-up), colours in [0, 1]."""

    vertices: np.ndarray  # [V, 3] float32
    faces: np.ndarray  # [F, 3] int64
    colors: np.ndarray  # [V, 3] float32
    threshold: float = float("nan")  # the isosurface level used
    pieces_removed: int = 0  # small disconnected pieces dropped by ``remove_small_pieces``
    faces_removed: int = 0
    uvs: np.ndarray | None = None  # [V, 2] texture coordinates in [0, 1] (a UV-textured mesh)
    texture: np.ndarray | None = None  # [S, S, 3] in [0, 1], row 0 at v = 0


def sample_grid(fn: DensityFn, bound: float, resolution: int, chunk: int = 65536) -> np.ndarray:
    """``fn`` on a ``resolution``^3 grid of [-bound, bound]^3, as a [N, N, N] array indexed (x, y, z)."""
    axis = torch.linspace(-bound, bound, resolution)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    out = []
    with torch.no_grad():
        for s in range(0, grid.shape[0], chunk):
            out.append(fn(grid[s : s + chunk]).detach().float().cpu().reshape(-1))
    return torch.cat(out).numpy().reshape(resolution, resolution, resolution)


def auto_threshold(
    density: np.ndarray, voxel: float, opacity_level: float = 0.5, candidates: int = 64
) -> float:
    """The density level whose occupied region best reproduces the opaque silhouettes (see module doc)."""
    density = np.nan_to_num(density.astype(np.float64), nan=0.0, posinf=1e30)
    opaque = [1.0 - np.exp(-density.sum(axis=a) * voxel) > opacity_level for a in range(3)]
    hi = float(density.max())
    if not any(o.any() for o in opaque) or hi <= 0:
        raise ExportError(
            "the field renders fully transparent (no pixel reaches 50% opacity); nothing to mesh — "
            "train longer or pass an explicit threshold"
        )
    positive = density[density > 0]
    lo = max(float(positive.min()), hi * 1e-6)
    levels = np.geomspace(lo, hi, candidates, endpoint=False)
    best, best_iou = float(levels[0]), -1.0
    for level in levels:
        occ = density > level
        ious = []
        for a in range(3):
            proj = occ.any(axis=a)
            union = np.logical_or(proj, opaque[a]).sum()
            ious.append(np.logical_and(proj, opaque[a]).sum() / max(union, 1))
        iou = float(np.mean(ious))
        if iou > best_iou + 1e-9:
            best, best_iou = float(level), iou
    return best


def fill_cavities(density: np.ndarray, level: float) -> tuple[np.ndarray, int]:
    """``density`` with every empty cell that the outside cannot reach raised above ``level``.

    A closed hollow inside an object (a NeRF is often emptier inside than on its skin) would otherwise
    give marching cubes an inner surface: a separate piece nobody can see. The outside is the empty
    region 6-connected to the grid's border (flood fill by repeated dilation). Returns the filled grid
    and the number of cells filled.
    """
    empty = torch.from_numpy(np.ascontiguousarray(density <= level))
    outside = torch.zeros_like(empty)
    outside[0, :, :] = outside[-1, :, :] = outside[:, 0, :] = outside[:, -1, :] = True
    outside[:, :, 0] = outside[:, :, -1] = True
    outside &= empty
    kernel = torch.zeros(1, 1, 3, 3, 3)
    kernel[0, 0, 1, 1, :] = kernel[0, 0, 1, :, 1] = kernel[0, 0, :, 1, 1] = 1.0
    while True:
        grown = torch.nn.functional.conv3d(outside[None, None].float(), kernel, padding=1)[0, 0] > 0
        grown &= empty
        if torch.equal(grown, outside):
            break
        outside = grown
    cavity = (empty & ~outside).numpy()
    if not cavity.any():
        return density, 0
    filled = density.copy()
    filled[cavity] = level + max(abs(level), 1e-6)
    return filled, int(cavity.sum())


def extract_mesh(
    density_fn: DensityFn,
    color_fn: ColorFn | None = None,
    bound: float = 1.0,
    resolution: int = 128,
    threshold: float | str = "auto",
    chunk: int = 65536,
    cavities: bool = False,
) -> Mesh:
    """Marching cubes of ``density_fn(points [N, 3]) -> [N]`` on a ``resolution``^3 grid of
    [-bound, bound]^3 at ``threshold`` (a density or ``"auto"``), colours from ``color_fn(points) -> [N, 3]``
    (grey without one). Faces are wound so normals point outward (positive volume). Closed hollows
    inside the object are filled first (:func:`fill_cavities`) unless ``cavities``."""
    if resolution < 8:
        raise ExportError(f"mesh resolution must be >= 8, got {resolution}")
    if bound <= 0:
        raise ExportError(f"mesh bound must be > 0, got {bound}")
    density = sample_grid(density_fn, bound, resolution, chunk)
    voxel = 2.0 * bound / (resolution - 1)
    if threshold == "auto":
        level = auto_threshold(density, voxel)
    elif isinstance(threshold, int | float):
        level = float(threshold)
    else:
        raise ExportError(f"threshold must be a number or 'auto', got {threshold!r}")
    if not cavities:
        density, _ = fill_cavities(density, level)
    # pad with empty space so surfaces touching the box are closed
    padded = np.pad(density, 1, mode="constant", constant_values=min(float(density.min()), level) - 1.0)
    verts, faces = mcubes.marching_cubes(padded, level)
    if len(faces) == 0:
        raise ExportError(
            f"no surface at density level {level:.4g} "
            f"(field range {density.min():.4g}..{density.max():.4g}); "
            "lower the threshold or use 'auto'"
        )
    verts = (verts - 1.0) * voxel - bound
    faces = faces.astype(np.int64)
    if _signed_volume(verts, faces) < 0:
        faces = faces[:, ::-1].copy()
    colors = np.full((len(verts), 3), 0.7, dtype=np.float32)
    if color_fn is not None:
        pts = torch.from_numpy(verts.astype(np.float32))
        with torch.no_grad():
            cols = [color_fn(pts[s : s + chunk]).detach().float().cpu() for s in range(0, len(pts), chunk)]
        colors = torch.cat(cols).clamp(0, 1).numpy()
    return Mesh(verts.astype(np.float32), faces, colors.astype(np.float32), level)


def connected_components(faces: np.ndarray, n_vertices: int) -> np.ndarray:
    """Component label [F] of every face (faces sharing a vertex are connected), labels 0..K-1.

    Union-find by repeated min-label propagation over the faces with pointer jumping, all in numpy.
    """
    labels = np.arange(n_vertices)
    if len(faces) == 0:
        return np.zeros(0, dtype=np.int64)
    while True:
        low = labels[faces].min(axis=1)
        new = labels.copy()
        for k in range(3):
            np.minimum.at(new, faces[:, k], low)
        new = new[new]  # pointer jumping: point at the root's label
        while not np.array_equal(new, new[new]):
            new = new[new]
        if np.array_equal(new, labels):
            break
        labels = new
    _, compact = np.unique(labels[faces[:, 0]], return_inverse=True)
    return compact.astype(np.int64)


def welded_faces(mesh: Mesh) -> np.ndarray:
    """``mesh.faces`` with vertices at the same position merged: a UV-unwrapped mesh splits its seams
    into copies, which must not count as separate pieces."""
    _, first = np.unique(mesh.vertices, axis=0, return_inverse=True)
    return first.reshape(-1)[mesh.faces]


def remove_small_pieces(mesh: Mesh, min_fraction: float) -> Mesh:
    """``mesh`` without its disconnected pieces of fewer than ``min_fraction`` of all faces (floaters).

    The largest piece always stays; ``min_fraction`` 0 keeps everything. Unused vertices are dropped,
    and the mesh records how many pieces and faces went (``pieces_removed``, ``faces_removed``).
    """
    if not 0.0 <= min_fraction < 1.0:
        raise ExportError(f"min_piece_fraction must be in [0, 1), got {min_fraction}")
    if min_fraction == 0.0 or len(mesh.faces) == 0:
        return mesh
    label = connected_components(welded_faces(mesh), len(mesh.vertices))
    sizes = np.bincount(label)
    keep_piece = sizes >= min_fraction * len(mesh.faces)
    keep_piece[int(sizes.argmax())] = True
    if keep_piece.all():
        return mesh
    faces = mesh.faces[keep_piece[label]]
    used = np.unique(faces)
    remap = np.full(len(mesh.vertices), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return Mesh(
        mesh.vertices[used],
        remap[faces],
        mesh.colors[used],
        mesh.threshold,
        mesh.pieces_removed + int((~keep_piece).sum()),
        mesh.faces_removed + int(len(mesh.faces) - len(faces)),
        None if mesh.uvs is None else mesh.uvs[used],
        mesh.texture,
    )


def piece_fractions(mesh: Mesh) -> np.ndarray:
    """Face fraction of every connected piece of ``mesh``, largest first."""
    if len(mesh.faces) == 0:
        return np.zeros(0)
    sizes = np.bincount(connected_components(welded_faces(mesh), len(mesh.vertices)))
    return np.sort(sizes)[::-1] / len(mesh.faces)


def _signed_volume(verts: np.ndarray, faces: np.ndarray) -> float:
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def to_y_up(vertices: np.ndarray) -> np.ndarray:
    """z-up world -> y-up (glTF / most viewers): (x, y, z) -> (x, z, -y), a proper rotation."""
    return np.stack([vertices[:, 0], vertices[:, 2], -vertices[:, 1]], axis=1)


def write_obj(mesh: Mesh, path: str | Path, y_up: bool = True) -> Path:
    """Wavefront OBJ with per-vertex colours (``v x y z r g b``), 1-based faces."""
    path = Path(path)
    v = to_y_up(mesh.vertices) if y_up else mesh.vertices
    with path.open("w") as fh:
        fh.write(f"# dreampropeller mesh: {len(v)} vertices, {len(mesh.faces)} faces\n")
        np.savetxt(fh, np.hstack([v, mesh.colors]), fmt="v %.6f %.6f %.6f %.4f %.4f %.4f")
        np.savetxt(fh, mesh.faces + 1, fmt="f %d %d %d")
    return path


def _trimesh(mesh: Mesh, y_up: bool):
    import trimesh

    v = to_y_up(mesh.vertices) if y_up else mesh.vertices
    if mesh.uvs is not None and mesh.texture is not None:  # the texture image, read bottom-up (glTF's v)
        from PIL import Image

        texels = (np.clip(mesh.texture, 0, 1)[::-1] * 255).round().astype(np.uint8)
        visual = trimesh.visual.TextureVisuals(
            uv=mesh.uvs, image=Image.fromarray(np.ascontiguousarray(texels))
        )
        return trimesh.Trimesh(v, mesh.faces, visual=visual, process=False)
    rgba = np.concatenate([mesh.colors, np.ones((len(mesh.colors), 1), np.float32)], axis=1)
    return trimesh.Trimesh(v, mesh.faces, vertex_colors=(rgba * 255).round().astype(np.uint8), process=False)


def write_glb(mesh: Mesh, path: str | Path, y_up: bool = True) -> Path:
    """Binary glTF (y-up, as glTF requires) with its UV texture, or else vertex colours."""
    path = Path(path)
    path.write_bytes(_trimesh(mesh, y_up).export(file_type="glb"))
    return path


def write_ply(mesh: Mesh, path: str | Path, y_up: bool = True) -> Path:
    """Binary PLY with vertex colours."""
    path = Path(path)
    path.write_bytes(_trimesh(mesh, y_up).export(file_type="ply"))
    return path


def save_mesh(mesh: Mesh, path: str | Path, y_up: bool = True) -> Path:
    """Write ``mesh`` in the format named by the suffix of ``path`` (.obj, .glb, .ply)."""
    writers = {".obj": write_obj, ".glb": write_glb, ".ply": write_ply}
    suffix = Path(path).suffix.lower()
    if suffix not in writers:
        raise ExportError(f"unknown mesh format {suffix!r} for {path}; use one of {sorted(writers)}")
    return writers[suffix](mesh, path, y_up)
