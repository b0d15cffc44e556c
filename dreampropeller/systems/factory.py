"""From a run's config to its Picard process: cheap checks first, then guidance + representation.

``validate`` runs before anything is loaded or written; ``make_guidance`` builds the one
score-distillation object a process holds (SDS or VSD, text or unconditional); ``build_process``
puts it together with the representation (NeRF, Gaussians with an optional reference view, DMTet,
or a NeuS SDF).
"""

from __future__ import annotations

import torch

from dreampropeller.config.loading import ConfigError
from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.guidance.distillation import ScoreDistillation
from dreampropeller.guidance.prior import DiffusionPrior
from dreampropeller.guidance.prompts import EMPTY_PROMPT
from dreampropeller.picard.process import Process
from dreampropeller.scene.uv_mesh import UVMesh
from dreampropeller.systems.dmtet import DmtetTextTo3D, validate_dmtet_config
from dreampropeller.systems.gaussians import GaussianTextTo3D, validate_gaussian_config
from dreampropeller.systems.image_to_3d import ReferenceView, load_reference_image
from dreampropeller.systems.nerf import NerfTextTo3D
from dreampropeller.systems.sdf import SdfTextTo3D, validate_sdf_config
from dreampropeller.systems.texture import TextureTextTo3D, validate_texture_config

REPRESENTATIONS = ("nerf", "gaussians", "dmtet", "sdf", "texture")
GUIDANCES = ("sds", "vsd")


def validate(cfg: TextTo3DConfig) -> None:
    """Cheap checks before anything is loaded or written (one line per problem, ConfigError)."""
    if (not cfg.prompt or not cfg.prompt.strip()) and not cfg.image.path:
        raise ConfigError(EMPTY_PROMPT)
    if not isinstance(cfg.steps, int) or cfg.steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {cfg.steps!r}")
    if cfg.representation not in REPRESENTATIONS:
        raise ConfigError(
            f"representation {cfg.representation!r} is not available: use {', '.join(REPRESENTATIONS)}"
        )
    if cfg.guidance not in GUIDANCES:
        raise ConfigError(f"guidance must be sds or vsd, got {cfg.guidance!r}")
    if cfg.image.path and cfg.representation not in ("gaussians", "texture"):
        raise ConfigError("image-to-3D (--image) needs --representation gaussians")
    if cfg.representation == "gaussians":
        validate_gaussian_config(cfg)
        if cfg.guidance != "sds":
            raise ConfigError(
                f"Gaussian runs use SDS guidance; got guidance={cfg.guidance!r}: set guidance=sds"
            )
        if cfg.image.path:
            load_reference_image(cfg.image.path, cfg.render.height, cfg.render.width)
    if cfg.representation == "dmtet":
        validate_dmtet_config(cfg)
    if cfg.representation == "sdf":
        validate_sdf_config(cfg)
    if cfg.representation == "texture":
        validate_texture_config(cfg)
    if cfg.guidance == "vsd":
        mode, executor = cfg.vsd.mode, cfg.picard.executor
        if mode == "accepted" and executor in ("devices", "distributed"):
            raise ConfigError(
                f"vsd.mode=accepted trains one LoRA on the renders of accepted steps, which the {executor} "
                "executor evaluates elsewhere: use the batched or sequential executor, or synchronized mode"
            )
        if mode == "worker" and executor == "distributed":
            raise ConfigError(
                "vsd.mode=worker keeps a LoRA on every rank, which a checkpoint cannot hold: "
                "use vsd.mode=synchronized with the distributed executor"
            )
    for name in ("height", "width", "batch_size", "num_samples"):
        if int(getattr(cfg.render, name)) < 1:
            raise ConfigError(f"render.{name} must be >= 1, got {getattr(cfg.render, name)}")


def make_guidance(
    cfg: TextTo3DConfig, prior: DiffusionPrior, device: torch.device | str, allow_empty: bool = False
) -> ScoreDistillation:
    """The run's score-distillation object: VSD when ``guidance=vsd``, else SDS (unconditional for an
    empty prompt when ``allow_empty``: image-to-3D without a text)."""
    if cfg.guidance not in GUIDANCES:
        raise ConfigError(f"guidance must be sds or vsd, got {cfg.guidance!r}")
    if cfg.guidance == "vsd":
        from dreampropeller.guidance.variational import VariationalScoreDistillation

        return VariationalScoreDistillation(
            prior, cfg.prompt, cfg.sds, cfg.vsd, cfg.prompt_processing, device, seed=cfg.seed
        )
    return ScoreDistillation(prior, cfg.prompt, cfg.sds, cfg.prompt_processing, device, allow_empty)


def build_process(
    cfg: TextTo3DConfig,
    prior: DiffusionPrior,
    device: torch.device | str = "cpu",
    image: tuple[torch.Tensor, torch.Tensor] | None = None,
    init_sdf: torch.Tensor | None = None,
    uv_start: tuple[UVMesh, torch.Tensor] | None = None,
) -> Process:
    """The run's process for a loaded prior: NeRF (SDS or VSD), Gaussians (text, or image when
    ``cfg.image.path`` or ``image`` (rgb, mask) is given), DMTet (from a ball, or ``init_sdf``), or a
    NeuS SDF (from a sphere), or the texture of a fixed UV mesh (``uv_start``: the mesh and its first
    texture, from the run ``texture.init_from``)."""
    if cfg.representation == "dmtet":
        return DmtetTextTo3D(cfg, make_guidance(cfg, prior, device), init_sdf)
    if cfg.representation == "sdf":
        return SdfTextTo3D(cfg, make_guidance(cfg, prior, device))
    if cfg.representation == "texture":
        if uv_start is None:
            raise ConfigError("a texture run needs its UV mesh and first texture (from texture.init_from)")
        anchored = bool(cfg.image.path)  # the texture stage of an image-to-3D run may have no text
        guidance = ScoreDistillation(prior, cfg.prompt, cfg.sds, cfg.prompt_processing, device, anchored)
        return TextureTextTo3D(cfg, guidance, *uv_start)
    if cfg.representation == "gaussians":
        validate_gaussian_config(cfg)
        anchored = image is not None or bool(cfg.image.path)
        reference = ReferenceView.from_config(cfg, device, image) if anchored else None
        guidance = ScoreDistillation(prior, cfg.prompt, cfg.sds, cfg.prompt_processing, device, anchored)
        return GaussianTextTo3D(cfg, guidance, reference)
    return NerfTextTo3D(cfg, make_guidance(cfg, prior, device))
