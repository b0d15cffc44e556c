"""Texture refinement of a fixed UV mesh with SDS (DreamGaussian's second stage), as a Picard process.

State: the texture ``texture.image`` [S, S, 3] (stored before a sigmoid, so colours stay in (0, 1)),
its Adam state, and the mesh itself (``uvmesh.*``: constant buffers, so the checkpoint holds the whole
asset). ``unit_batch`` renders every slot's texture on the mesh from the cameras of ``StepRandom(seed,
t)`` with DreamFusion shading and runs ONE prior forward for all of them; ``unit`` is ``unit_batch``
with one slot. ``update`` is the optimizer step. The mesh and its first texture come from a finished
run (``texture.init_from``): its exported mesh, UV-unwrapped, with its vertex colours baked in.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

from dreampropeller.config.loading import ConfigError
from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.guidance.distillation import ScoreDistillation
from dreampropeller.guidance.sds import scheduled_value, sds_surrogate
from dreampropeller.optim import make_optimizer
from dreampropeller.picard.process import Drift, Process, State
from dreampropeller.scene.mesh_raster import mesh_topology
from dreampropeller.scene.uv_mesh import FACES, TEXTURE, UVS, VERTICES, UVMesh, render_textured
from dreampropeller.systems.views import raster_draws

EPS = 1e-3  # baked colours are clamped to [EPS, 1 - EPS] before the logit


def validate_texture_config(cfg: TextTo3DConfig) -> None:
    """Cheap checks of a texture run (one clear line per problem)."""
    t = cfg.texture
    if not t.init_from:
        raise ConfigError(
            "a texture run refines the mesh of a finished run: set texture.init_from=RUN_DIR "
            "(or run it as a stage, e.g. --config dreamgaussian)"
        )
    if cfg.guidance != "sds":
        raise ConfigError(f"texture runs use SDS guidance; got guidance={cfg.guidance!r}: set guidance=sds")
    if int(t.size) < 4:
        raise ConfigError(f"texture.size must be >= 4 texels, got {t.size}")
    if len(tuple(t.background)) != 3:
        raise ConfigError(f"texture.background needs 3 values, got {t.background}")


def texture_to_logits(texture: torch.Tensor) -> torch.Tensor:
    """The stored parameter of a texture in [0, 1]."""
    return torch.logit(texture.clamp(EPS, 1 - EPS))


class TextureTextTo3D(Process):
    """SDS on the texture of the UV mesh ``mesh`` starting from ``texture`` [S, S, 3] in [0, 1]."""

    unit_keys: tuple[str, ...] = (VERTICES, FACES, UVS)  # a unit reads the mesh besides the texture

    def __init__(
        self, cfg: TextTo3DConfig, guidance: ScoreDistillation, mesh: UVMesh, texture: torch.Tensor
    ) -> None:
        validate_texture_config(cfg)
        self.cfg = cfg
        self.guidance = guidance
        self.device = guidance.device
        self.seed = int(cfg.seed)
        self.mesh = mesh.to(self.device)
        self._topology: tuple[torch.Tensor, torch.Tensor] | None = None  # (faces, their topology)
        self.texture = texture
        t = cfg.texture
        self.optimizer = make_optimizer(
            t.optimizer or {"name": "adam", "lr": float(t.lr), "betas": [0.9, 0.99], "eps": 1e-15}
        )
        self.param_keys = (TEXTURE,)

    def initial_state(self) -> State:
        """The baked texture (as logits), fresh Adam state and the mesh buffers."""
        params = {TEXTURE: texture_to_logits(self.texture.to(self.device).float())}
        return {**self.optimizer.init_state(params), **self.mesh.state()}

    def _draws(self, t: int) -> dict[str, Any]:
        """Every random draw of step ``t``: cameras, lights, shading modes, SDS timesteps and noise."""
        return raster_draws(self.cfg, self.guidance, self.seed, t, self.cfg.texture.background)

    def topology(self, faces: torch.Tensor) -> torch.Tensor:
        """The antialiasing topology of the state's faces, computed once (the faces are a constant
        buffer, but a resumed run's come from its checkpoint, so they are read from the state)."""
        if self._topology is None or not torch.equal(self._topology[0], faces):
            self._topology = (faces, mesh_topology(faces))
        return self._topology[1]

    def unit(self, x: State, t: int) -> Drift:
        return self.unit_batch([x], [t])[0]

    def unit_batch(self, xs: Sequence[State], ts: Sequence[int]) -> list[Drift]:
        cfg = self.cfg
        p, b = len(xs), cfg.render.batch_size
        h, w = cfg.render.height, cfg.render.width
        leaves = torch.stack([x[TEXTURE].detach() for x in xs]).requires_grad_(True)
        draws = [self._draws(t) for t in ts]
        with torch.enable_grad():
            images = []
            for i, (d, x) in enumerate(zip(draws, xs, strict=True)):
                out = render_textured(
                    UVMesh.from_state(x),
                    torch.sigmoid(leaves[i]),
                    d["cameras"],
                    h,
                    w,
                    d["codes"],
                    d["lights"],
                    d["background"],
                    cfg.shading,
                    topology=self.topology(x[FACES]),
                )
                images.append(out["rgb"])
            rgb = torch.stack(images).reshape(p * b, h, w, 3).permute(0, 3, 1, 2)
            latents = self.guidance.encode(rgb)
            grad, _ = self.guidance.gradient(latents, draws, ts, xs)
            sds = sds_surrogate(latents, grad).reshape(p, b).mean(1)
            lam = torch.tensor([scheduled_value(cfg.loss.lambda_sds, t) for t in ts], device=self.device)
            (g,) = torch.autograd.grad((lam * sds).sum(), [leaves])
        return [{TEXTURE: g[i].detach()} for i in range(p)]

    def update(self, x: State, drift: Drift, t: int) -> State:
        """The optimizer step (the mesh buffers are carried along unchanged)."""
        return self.optimizer.apply(x, {TEXTURE: drift[TEXTURE]}, t)

    def replicate(self, device: torch.device) -> TextureTextTo3D:
        clone = copy.copy(self)
        clone.device = torch.device(device)
        clone.guidance = self.guidance.replicate(device)
        clone.mesh = self.mesh.to(device)
        clone._topology = None
        return clone
