"""The run configuration schema: every section of a text- / image-to-3D run as a dataclass.

``TextTo3DConfig`` is the root of every run (NeRF or Gaussians, SDS or VSD, text or image); YAML
files and ``key=value`` overrides are merged on top by :mod:`dreampropeller.config.loading`.
Defaults: the embedded tiny prior on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dreampropeller.guidance.prompts import PromptConfig
from dreampropeller.guidance.sds import SDSConfig
from dreampropeller.guidance.vsd import VSDConfig
from dreampropeller.picard.solver import SolverConfig
from dreampropeller.scene.cameras import CameraSampler
from dreampropeller.scene.densify import DensifyConfig
from dreampropeller.scene.dmtet import DMTetShape
from dreampropeller.scene.nerf import NeRFConfig
from dreampropeller.scene.sdf import SdfShape
from dreampropeller.scene.shading import ShadingConfig

BACKGROUNDS = ("random", "white", "black")


def dreamgaussian_densify() -> DensifyConfig:
    """DreamGaussian's text-to-3D schedule (from step 100 every 50), sized to 32 px renders: gradient
    threshold 0.2 (the embedded prior's pixel-space gradients are ~10x DreamGaussian's latent ones; 0.01
    grew the set to 40,777 Gaussians in 600 steps) and at most 4,000 Gaussians (about 4 per pixel of a
    32 px view; 50,000 asked ~38 GiB at window 8, more than a shared CPU host had free)."""
    return DensifyConfig(start=100, interval=50, grad_threshold=0.2, max_count=4_000)


@dataclass
class GaussianConfig:
    """A 3D Gaussian set trained by SDS (DreamGaussian's defaults where they exist; count sized for CPUs).

    ``optimizer`` ``None`` means DreamGaussian's per-attribute Adam (see
    :func:`dreampropeller.systems.gaussians.dreamgaussian_optimizer`); a mapping replaces it.
    ``background``: per training view white or black with equal odds (``random``, DreamGaussian's for
    Stable Diffusion), or fixed: ``white`` by default, the only backdrop the embedded prior has seen
    (on black ones it paints a whitish halo round the object, which doubled the red cube's silhouette).
    ``radius``: the starting ball, DreamGaussian's 0.5 at camera distance 2.5 scaled to the default
    cameras' ~1.75 (a 0.5 ball is wider than most library shapes, and SDS did not carve it down).
    ``memory_limit_gb`` ``None``: the free memory of the device, measured before the run.
    """

    num_points: int = 1000
    radius: float = 0.3
    init_opacity: float = 0.1
    color_spread: float = 1.0 / 255.0
    sh_degree: int = 0
    color_mode: str = "sh"
    backend: str = "auto"
    background: str = "white"
    densify: DensifyConfig = field(default_factory=dreamgaussian_densify)
    optimizer: Any = None
    memory_limit_gb: float | None = None
    export_bound: float = 1.0
    # binary entropy of the rendered opacity of the SDS views (number or schedule): solid silhouettes
    lambda_opaque: Any = 0.0


@dataclass
class DmtetConfig:
    """A DMTet mesh trained by SDS (``representation=dmtet``; Magic3D's refine stage).

    Grid: ``resolution`` cells per axis over ``[-radius, radius]^3`` (Kuhn, 6 tetrahedra per cell).
    Start: a ball of ``init_radius``, or the density field of the finished NeRF run ``init_from`` at
    its isosurface level ``init_level`` (``auto``: the level its mesh export picks). Texture: a hash
    grid of ``n_levels`` from ``base_resolution`` to ``finest_resolution`` and an MLP. Losses besides
    SDS (numbers or schedules): normal consistency (1 - cos between neighbouring faces) and uniform
    Laplacian smoothness of the extracted mesh; the volume losses of ``loss`` do not apply. Adam's
    learning rates: ``geometry_lr`` for the SDF and deformation, ``texture_lr`` for the texture field
    (:func:`dreampropeller.systems.dmtet.dmtet_optimizer`); an ``optimizer`` mapping replaces it all.
    """

    resolution: int = 32
    radius: float = 0.75
    init_radius: float = 0.4
    init_from: str | None = None
    init_level: Any = "auto"
    # a coarse texture (2 levels, 16 and 32 cells): finer levels painted white patches on a red cube
    n_levels: int = 2
    n_features_per_level: int = 2
    log2_hashmap_size: int = 15
    base_resolution: int = 16
    finest_resolution: int = 32
    albedo_hidden: int = 64
    albedo_layers: int = 1
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    normals: str = "vertex"  # shading normals: vertex (smooth) or face (flat)
    supersample: int = 1  # training renders at this many times the size, box-filtered down
    # how silhouettes get their gradient: edges (edge sampling, right for sub-pixel triangles) or
    # antialias (nvdiffrast's blend, which misses most of a marching-tets outline; docs/dmtet.md)
    silhouette: str = "edges"
    # the embedded prior's SDS gradient on the SDF is ~1e4 times normal consistency's; with edge-sampled
    # silhouettes 0.003 turns a ball into the red cube and keeps a NeRF's cube (docs/dmtet.md)
    lambda_normal_consistency: Any = 1000.0
    lambda_laplacian: Any = 0.0
    geometry_lr: float = 0.003
    texture_lr: float = 0.01
    optimizer: Any = None

    @property
    def shape(self) -> DMTetShape:
        """The sizes of the grid and texture field."""
        return DMTetShape(
            resolution=int(self.resolution),
            radius=float(self.radius),
            n_levels=int(self.n_levels),
            n_features_per_level=int(self.n_features_per_level),
            log2_hashmap_size=int(self.log2_hashmap_size),
            base_resolution=int(self.base_resolution),
            finest_resolution=int(self.finest_resolution),
            albedo_hidden=int(self.albedo_hidden),
            albedo_layers=int(self.albedo_layers),
        )


@dataclass
class SdfConfig:
    """A signed distance field rendered by NeuS (``representation=sdf``; threestudio's implicit-sdf).

    Field: a hash grid of ``n_levels`` from ``base_resolution`` to ``finest_resolution`` cells over
    ``[-radius, radius]^3`` and an MLP, added to the sphere of ``init_radius``; the albedo reads the
    coarsest ``albedo_levels``. Levels switch on progressively: ``levels_start``, one more every
    ``levels_every`` steps (0: all at once). NeuS: inverse standard deviation ``exp(10 * variance)``,
    learned from ``init_variance``; ``cos_anneal_steps`` anneals NeuS's cosine (0: off); ``occupancy``
    skips empty space (threestudio's NeuS occupancy grid). Losses besides
    SDS (numbers or schedules): the eikonal term, rendered-normal smoothness and opacity entropy; the
    volume losses of ``loss`` do not apply. Adam: ``lr``, ``network_lr`` for the SDF MLP,
    ``variance_lr`` for the variance; an
    ``optimizer`` mapping replaces it (:func:`dreampropeller.systems.sdf.sdf_optimizer`).
    """

    n_levels: int = 8
    n_features_per_level: int = 2
    log2_hashmap_size: int = 15
    base_resolution: int = 16
    finest_resolution: int = 128
    sdf_hidden: int = 64
    sdf_layers: int = 1
    albedo_hidden: int = 64
    albedo_layers: int = 1
    albedo_levels: int | None = 4
    radius: float = 1.0
    init_radius: float = 0.5
    init_variance: float = 0.3
    normal_mode: str = "analytic"
    normal_eps: float = 0.01
    levels_start: int = 4
    levels_every: int = 60
    cos_anneal_steps: int = 0
    # empty-space skipping: a grid of the cells whose NeuS opacity (a cell-long section at the centre's
    # SDF) exceeds occupancy_alpha, recomputed every occupancy_every steps in the update (a state buffer)
    occupancy: bool = True
    occupancy_resolution: int = 32
    occupancy_every: int = 16
    occupancy_alpha: float = 0.001
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    lambda_eikonal: Any = 100.0
    lambda_normal_smooth: Any = 0.0
    lambda_opaque: Any = 0.0
    lr: float = 0.01
    # the SDF MLP moves the whole level set: threestudio's NeuS runs give it a tenth of the grid's rate
    network_lr: float = 0.001
    variance_lr: float = 0.001
    optimizer: Any = None

    @property
    def shape(self) -> SdfShape:
        """The sizes of the field."""
        return SdfShape(
            n_levels=int(self.n_levels),
            n_features_per_level=int(self.n_features_per_level),
            log2_hashmap_size=int(self.log2_hashmap_size),
            base_resolution=int(self.base_resolution),
            finest_resolution=int(self.finest_resolution),
            sdf_hidden=int(self.sdf_hidden),
            sdf_layers=int(self.sdf_layers),
            albedo_hidden=int(self.albedo_hidden),
            albedo_layers=int(self.albedo_layers),
            albedo_levels=None if self.albedo_levels is None else int(self.albedo_levels),
            radius=float(self.radius),
            init_radius=float(self.init_radius),
            init_variance=float(self.init_variance),
            normal_mode=str(self.normal_mode),
            normal_eps=float(self.normal_eps),
        )


@dataclass
class TextureConfig:
    """A fixed mesh's UV texture refined by SDS (``representation=texture``; DreamGaussian's stage 2).

    The mesh is the exported mesh of the finished run ``init_from`` (any representation), unwrapped
    into UV charts by xatlas, and the texture (``size`` x ``size`` texels) starts from its vertex
    colours baked in, spread ``gutter`` texels around the charts. Adam with ``lr`` on the texture's
    logits; an ``optimizer`` mapping replaces it. ``background``: the renders' backdrop.
    """

    init_from: str | None = None
    size: int = 128
    gutter: int = 4
    lr: float = 0.05
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    optimizer: Any = None


@dataclass
class ImageConfig:
    """Image-to-3D: a reference view (RGBA, or RGB on a white background) seen from a fixed camera.

    Losses at the reference camera: ``lambda_rgb * mse(rgb)`` and ``lambda_mask * mse(alpha)``
    (DreamGaussian's 10000 and 1000), both ramped up linearly over the run when ``warmup``.
    """

    path: str | None = None
    elevation: float = 0.0
    azimuth: float = 0.0
    distance: float = 1.75
    fovy: float = 50.0
    lambda_rgb: float = 10000.0
    lambda_mask: float = 1000.0
    warmup: bool = True


@dataclass
class RenderConfig:
    """Training renders: resolution, cameras per step, samples per ray."""

    height: int = 32
    width: int = 32
    batch_size: int = 2
    num_samples: int = 32


@dataclass
class LevelsConfig:
    """Progressive hash-grid levels: ``start`` levels at first, one more every ``every`` steps."""

    start: int = 4
    every: int = 60


@dataclass
class OccupancyConfig:
    """Empty-space skipping (as nerfacc's occupancy grid): samples in empty cells are not evaluated.

    The grid is a buffer of the Picard state, recomputed from the density in ``update`` every
    ``every`` steps from ``start`` on (deterministic, so rollouts replay it exactly).
    """

    enabled: bool = True
    resolution: int = 32
    every: int = 16
    start: int = 32
    level: float = 0.05


@dataclass
class LossConfig:
    """Loss weights (numbers or ``[start_step, start, end, end_step]`` schedules)."""

    lambda_sds: Any = 1.0
    lambda_orient: Any = 0.0
    lambda_sparsity: Any = 0.0
    lambda_z_variance: Any = 0.0
    lambda_normal_smooth: Any = 0.0  # rendered normal maps' neighbour differences
    lambda_opaque: Any = 0.0  # binary entropy of the rendered opacity: solid surfaces, no haze


@dataclass
class PicardConfig:
    """How the run is propelled (window 1 = the sequential loop).

    The default acceptance rule is the sound one: a fixed tolerance ``threshold`` in units of the exact
    step's squared length (plus ``atol`` in absolute mean squared difference). ``adaptive=true`` is the
    DreamPropeller authors' EMA rule (``threshold`` its start value, null = from the first window).
    The solver's knobs and their defaults are :class:`SolverConfig`'s (one source of truth).
    """

    window: Any = "auto"
    threshold: float | None = SolverConfig.threshold
    adaptive: bool = SolverConfig.adaptive
    atol: float = SolverConfig.atol
    damping: float = SolverConfig.damping
    ema: float = SolverConfig.ema
    aggregate: str = SolverConfig.aggregate
    init: str = SolverConfig.init
    scale: str = SolverConfig.scale
    max_threshold: float = SolverConfig.max_threshold
    linearize: bool = SolverConfig.linearize
    guesses: str = SolverConfig.guesses
    executor: str = "auto"
    devices: list = field(default_factory=list)
    max_batch: int | None = None


@dataclass
class ExportConfig:
    """What a finished run writes."""

    turntable_views: int = 120
    fps: int = 30
    video_size: int = 128
    video_samples: int = 64
    mesh_resolution: int = 96
    mesh_threshold: Any = "auto"
    # disconnected pieces with fewer faces than this fraction of the mesh are removed (floaters;
    # threestudio's isosurface outlier rule); 0 keeps every piece
    min_piece_fraction: float = 0.01
    elevation: float = 15.0
    distance: float = 2.0
    fovy: float = 50.0


def default_optimizer() -> dict[str, Any]:
    """DreamFusion's Adam: lr 0.01 (background 0.001), betas (0.9, 0.99), eps 1e-15."""
    return {
        "name": "adam",
        "lr": 0.01,
        "betas": [0.9, 0.99],
        "eps": 1e-15,
        "groups": [{"names": ["background.*"], "lr": 0.001}],
    }


@dataclass
class TextTo3DConfig:
    """Everything a text-to-3D run needs (defaults: the embedded tiny prior on a CPU)."""

    prompt: str = ""
    seed: int = 0
    steps: int = 600
    representation: str = "nerf"
    prior: str = "tiny"
    prior_path: str | None = None
    guidance: str = "sds"  # sds, or vsd (ProlificDreamer: dreampropeller.guidance.variational)
    device: str = "auto"
    logger: str = "none"  # none, or tensorboard: live logs in RUN_DIR/tensorboard (docs/report.md)
    render: RenderConfig = field(default_factory=RenderConfig)
    camera: CameraSampler = field(
        default_factory=lambda: CameraSampler(
            elevation_range=(-10.0, 60.0), distance_range=(1.5, 2.0), fovy_range=(40.0, 60.0)
        )
    )
    # the albedo from the coarsest level only: no per-texel speckle and no SDS over-saturation across a
    # face (bench quality: colour spread 0.0075 with 4 levels, 0.0034 with 1; docs/surfaces.md)
    nerf: NeRFConfig = field(
        default_factory=lambda: NeRFConfig(n_levels=8, finest_resolution=128, albedo_levels=1)
    )
    shading: ShadingConfig = field(default_factory=lambda: ShadingConfig(ambient_only_steps=0))
    prompt_processing: PromptConfig = field(default_factory=PromptConfig)
    sds: SDSConfig = field(
        default_factory=lambda: SDSConfig(guidance_scale=20.0, min_step_percent=0.02, max_step_percent=0.98)
    )
    optimizer: dict = field(default_factory=default_optimizer)
    levels: LevelsConfig = field(default_factory=LevelsConfig)
    occupancy: OccupancyConfig = field(default_factory=OccupancyConfig)
    # solid, smoothly shaded surfaces with the embedded prior (bench quality: colour spread halved,
    # silhouette IoU up); its SDS gradient is ~2000x a unit-weight regularizer's, hence the scale
    loss: LossConfig = field(
        default_factory=lambda: LossConfig(
            lambda_orient=1000.0, lambda_normal_smooth=300.0, lambda_opaque=300.0
        )
    )
    picard: PicardConfig = field(default_factory=PicardConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    vsd: VSDConfig = field(default_factory=VSDConfig)
    gaussians: GaussianConfig = field(default_factory=GaussianConfig)
    dmtet: DmtetConfig = field(default_factory=DmtetConfig)
    sdf: SdfConfig = field(default_factory=SdfConfig)
    texture: TextureConfig = field(default_factory=TextureConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    # a run made of stages (``--config magic3d``): each a name + config keys (dreampropeller.runs.stages)
    stages: list = field(default_factory=list)
