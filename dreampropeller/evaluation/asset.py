"""Scoring a generated asset against the library truth of its prompt, whatever renders the asset.

``evaluate_asset`` asks a :data:`~dreampropeller.scene.views.RenderFn` (``render_fn(cameras) ->
(rgb [B, H, W, 3], alpha [B, H, W, 1])``, the contract the exporters use too) for a fixed set of
evaluation views, compares the silhouettes with every library shape (the prompt's shape must win), reads the
colour, runs the learned evaluator, and, given a mesh, measures the chamfer distance to the true
surface in its canonical placement.
"""

from __future__ import annotations

from typing import Any

import torch

from dreampropeller.evaluation.classifier import LibraryClassifier, load_classifier
from dreampropeller.evaluation.metrics import (
    chamfer_to_shape,
    colour_distances,
    colour_spread,
    foreground_colour,
    frechet_distance,
    library_silhouettes,
    shape_ious,
)
from dreampropeller.guidance.tiny.library import COLOUR_NAMES, SHAPE_NAMES, parse_prompt
from dreampropeller.guidance.tiny.render import render
from dreampropeller.scene.cameras import Cameras, cameras_from_spherical
from dreampropeller.scene.views import RenderFn


def evaluation_cameras() -> Cameras:
    """The fixed 8 evaluation views: every 45 degrees of azimuth, elevations alternating 15 and 40."""
    azimuth = torch.arange(8, dtype=torch.float32) * 45.0
    elevation = torch.tensor([15.0, 40.0] * 4)
    return cameras_from_spherical(elevation, azimuth, 1.8, 50.0, batch=8)


def library_render_fn(shape: str, colour: str) -> RenderFn:
    """A ``render_fn`` of the true library object (light at the camera): the reference asset."""

    def render_fn(cameras: Cameras, resolution: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        out = render([shape] * len(cameras), [colour] * len(cameras), cameras, resolution)
        return out.rgb.permute(0, 2, 3, 1), out.alpha.permute(0, 2, 3, 1)

    return render_fn


def _mesh_arrays(mesh: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(mesh, tuple | list) and len(mesh) == 2:
        vertices, faces = mesh
    elif hasattr(mesh, "vertices") and hasattr(mesh, "faces"):
        vertices, faces = mesh.vertices, mesh.faces
    else:
        raise ValueError(
            "mesh must be (vertices [V, 3], faces [F, 3]) or an object with .vertices and .faces"
        )
    return torch.as_tensor(vertices, dtype=torch.float32), torch.as_tensor(faces, dtype=torch.long)


def _channels_first(rgb: torch.Tensor, alpha: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a render against the contract and permute it to [B, C, H, W] (what the metrics read)."""
    if rgb.ndim != 4 or rgb.shape[0] != n or rgb.shape[-1] != 3:
        raise ValueError(f"render_fn must return rgb [{n}, H, W, 3], got {tuple(rgb.shape)}")
    if alpha.shape != (*rgb.shape[:-1], 1):
        raise ValueError(f"render_fn must return alpha [{n}, H, W, 1] matching rgb, got {tuple(alpha.shape)}")
    return rgb.permute(0, 3, 1, 2), alpha.permute(0, 3, 1, 2)


@torch.no_grad()
def evaluate_asset(
    render_fn: RenderFn,
    prompt: str,
    mesh: Any = None,
    *,
    classifier: LibraryClassifier | None = None,
    cameras: Cameras | None = None,
    albedo_fn: RenderFn | None = None,
) -> dict[str, Any]:
    """Metrics of one asset generated for ``prompt`` (which must name a library shape and colour).

    Returns ``shape_r_precision`` (1.0 when the prompt's shape has the best mean silhouette IoU among
    all library shapes), ``silhouette_iou`` (with the true shape), ``colour_accuracy`` (1.0 when the
    nearest library colour in chromaticity is the prompt's), the learned evaluator's
    ``clf_r_precision`` (the prompt's combination ranks first of all shape x colour pairs),
    ``clf_shape_accuracy`` / ``clf_colour_accuracy`` (fractions of views), ``feature_distance``
    (Fréchet distance of evaluator features to the true object's renders of the same views), the
    per-shape IoUs and predictions, ``colour_spread`` (:func:`colour_spread` of the unlit renders of
    ``albedo_fn``, else of ``render_fn``'s; the library truth scores ~0), and ``chamfer`` when a mesh
    (vertices, faces) is given.
    """
    shape, colour = parse_prompt(prompt)
    cams = cameras if cameras is not None else evaluation_cameras()
    rgb, alpha = _channels_first(*render_fn(cams), len(cams))
    rgb, alpha = rgb.detach().float().cpu(), alpha.detach().float().cpu()
    h, w = rgb.shape[-2:]
    s_idx, c_idx = SHAPE_NAMES.index(shape), COLOUR_NAMES.index(colour)

    ious = shape_ious(alpha, library_silhouettes(cams, h, w))
    colour_dist = colour_distances(foreground_colour(rgb, alpha))

    model = classifier if classifier is not None else load_classifier()
    device = next(model.parameters()).device
    shape_logits, colour_logits, feats = model(rgb.to(device))
    truth = render([shape] * len(cams), [colour] * len(cams), cams, h, w)
    _, _, true_feats = model(truth.rgb.to(device))
    joint = shape_logits.log_softmax(-1).mean(0)[:, None] + colour_logits.log_softmax(-1).mean(0)[None, :]
    best = int(joint.flatten().argmax())

    result: dict[str, Any] = {
        "prompt": prompt,
        "shape": shape,
        "colour": colour,
        "views": len(cams),
        "shape_r_precision": float(int(ious.argmax()) == s_idx),
        "silhouette_iou": float(ious[s_idx]),
        "shape_ious": {name: round(float(v), 4) for name, v in zip(SHAPE_NAMES, ious)},
        "predicted_shape": SHAPE_NAMES[int(ious.argmax())],
        "colour_accuracy": float(int(colour_dist.argmin()) == c_idx),
        "predicted_colour": COLOUR_NAMES[int(colour_dist.argmin())],
        "clf_r_precision": float(best == s_idx * len(COLOUR_NAMES) + c_idx),
        "clf_shape_accuracy": float((shape_logits.argmax(-1) == s_idx).float().mean()),
        "clf_colour_accuracy": float((colour_logits.argmax(-1) == c_idx).float().mean()),
        "feature_distance": frechet_distance(feats.cpu(), true_feats.cpu()),
    }
    unlit, unlit_alpha = (rgb, alpha) if albedo_fn is None else _channels_first(*albedo_fn(cams), len(cams))
    result["colour_spread"] = colour_spread(unlit.detach().float().cpu(), unlit_alpha.detach().float().cpu())
    if mesh is not None:
        vertices, faces = _mesh_arrays(mesh)
        result["chamfer"] = chamfer_to_shape(vertices, faces, shape)
    return result
