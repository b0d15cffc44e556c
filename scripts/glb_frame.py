"""Render four views of a UV-textured ``mesh.glb`` exactly as trimesh reads it (the README's frame).

    python scripts/glb_frame.py RUN_DIR/mesh.glb frame.png

The glb's own vertices, uvs and base-colour texture go through the package's textured rasterizer, so
the picture shows what a viewer gets from the file, not the run's state.
"""

from __future__ import annotations

import sys

import imageio.v2 as imageio
import numpy as np
import torch
import trimesh

from dreampropeller.scene.cameras import cameras_from_spherical
from dreampropeller.scene.shading import ShadingConfig, mode_code
from dreampropeller.scene.uv_mesh import UVMesh, render_textured

SIZE = 192


def main(glb: str, out: str) -> None:
    """Write the frame of ``glb`` to ``out``."""
    m = trimesh.load(glb, force="mesh")
    if m.visual.kind != "texture":
        sys.exit(f"{glb}: not a UV-textured mesh")
    v = np.asarray(m.vertices, np.float32)
    v = np.stack([v[:, 0], -v[:, 2], v[:, 1]], 1)  # glTF's y-up -> the package's z-up
    texels = np.asarray(m.visual.material.baseColorTexture.convert("RGB"), np.float32)[::-1] / 255
    faces = torch.from_numpy(np.asarray(m.faces, np.int64))
    mesh = UVMesh(torch.from_numpy(v), faces, torch.from_numpy(np.asarray(m.visual.uv, np.float32)))
    azimuths = torch.tensor([30.0, 120.0, 210.0, 300.0])
    cams = cameras_from_spherical(torch.full((4,), 20.0), azimuths, 2.2, 40.0)
    codes = torch.full((4,), mode_code("diffuse"))
    with torch.no_grad():
        r = render_textured(
            mesh,
            torch.from_numpy(np.ascontiguousarray(texels)),
            cams,
            SIZE,
            SIZE,
            codes,
            cams.position * 1.5,
            torch.ones(4, 3),
            ShadingConfig(ambient=0.4, diffuse=0.6),
        )
    frame = (r["rgb"].clamp(0, 1) * 255).round().byte().permute(1, 0, 2, 3).reshape(SIZE, 4 * SIZE, 3)
    imageio.imwrite(out, frame.numpy())


if __name__ == "__main__":
    main(*sys.argv[1:3])
