"""Text-to-3D with VSD (ProlificDreamer) as a Picard process, in two LoRA modes.

* ``worker`` (the authors'): the LoRA is NOT in the Picard state. Every worker (this process, or each
  replica of the ``devices`` executor) keeps its own LoRA and AdamW and trains it on the units it
  evaluates: one step per ``unit_batch`` call on the detached renders of all its slots (one step per
  unit under the sequential executor, one per window under the batched one). Units then depend on
  the worker's history, so a propelled run is not bit-equal to the sequential one.
* ``synchronized``: the LoRA parameters and their AdamW state are part of the state (``lora/<name>``,
  compared by ``distance``). The unit returns the LoRA gradient at the state's LoRA, and ``update``
  steps both optimizers, so the LoRA step is part of the rollout and threshold 0 reproduces the
  sequential run exactly.

Both modes use the same draws (``StepRandom(seed, t)``: ``sds`` for the VSD timestep and noise,
``lora`` for the LoRA loss) and the same math (:mod:`dreampropeller.guidance.vsd`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from dreampropeller.guidance.prior import DiffusionPrior, TextCondition, cat_conditions
from dreampropeller.guidance.vsd import (
    VSDConfig,
    add_lora,
    draw_lora,
    load_lora,
    lora_grads,
    lora_parameters,
    vsd_gradient,
)
from dreampropeller.optim import is_optim_key, make_optimizer, param_of
from dreampropeller.picard.process import Drift, State
from dreampropeller.picard.rng import StepRandom
from dreampropeller.systems.text_to_3d import TextTo3D, TextTo3DConfig

LORA = "lora/"


def is_lora_key(key: str) -> bool:
    """True for LoRA parameters and their optimizer state in a synchronized-mode state."""
    return key.startswith(LORA) or (is_optim_key(key) and param_of(key).startswith(LORA))


def vsd_config(value: Any) -> VSDConfig:
    """A :class:`VSDConfig` from a config section (dataclass or mapping)."""
    if isinstance(value, VSDConfig):
        return value
    data = dict(value or {})
    for key in ("lora_targets", "lora_betas"):
        if key in data and isinstance(data[key], list):
            data[key] = tuple(data[key])
    unknown = set(data) - set(VSDConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(
            f"unknown vsd config key(s) {sorted(unknown)}: valid are {sorted(VSDConfig.__dataclass_fields__)}"
        )
    return VSDConfig(**data)


class TextTo3DVSD(TextTo3D):
    """NeRF + VSD (see the module docstring). ``cfg.vsd`` holds the :class:`VSDConfig`."""

    def __init__(
        self,
        cfg: TextTo3DConfig,
        prior: DiffusionPrior,
        device: torch.device | str = "cpu",
        vsd: VSDConfig | None = None,
    ) -> None:
        super().__init__(cfg, prior, device)
        self.vsd = vsd or vsd_config(getattr(cfg, "vsd", None))
        if not hasattr(self.prior, "unet"):
            raise ValueError(f"VSD needs a prior with a diffusers UNet; prior {self.prior.name!r} has none")
        add_lora(self.prior, self.vsd)
        self.lora_names = tuple(lora_parameters(self.prior))
        self.synchronized = self.vsd.mode == "synchronized"
        self.lora_optimizer = make_optimizer(
            {
                "name": "adamw",
                "lr": self.vsd.lora_lr,
                "betas": list(self.vsd.lora_betas),
                "weight_decay": self.vsd.lora_weight_decay,
            }
        )
        if self.synchronized:
            self.param_keys = self.param_keys + tuple(LORA + n for n in self.lora_names)
        self._worker_state: dict[str, torch.Tensor] | None = None
        self._slots: Sequence[State] = ()
        self._lora_drifts: list[Drift] = []

    # -- state -------------------------------------------------------------------------------
    def lora_tensors(self) -> dict[str, torch.Tensor]:
        """Copies of the prior's current LoRA parameters, by name."""
        return {k: v.detach().clone() for k, v in lora_parameters(self.prior).items()}

    def initial_state(self) -> State:
        """NeRF + optimizer state; in synchronized mode also the LoRA and its AdamW state."""
        x = super().initial_state()
        if self.synchronized:
            lora = {LORA + k: v for k, v in self.lora_tensors().items()}
            x.update(self.lora_optimizer.init_state(lora))
        return x

    def update(self, x: State, drift: Drift, t: int) -> State:
        if not self.synchronized:
            return super().update(x, drift, t)
        nerf = {k: v for k, v in x.items() if not is_lora_key(k)}
        lora = {k: v for k, v in x.items() if is_lora_key(k)}
        out = self.optimizer.apply(nerf, {k: v for k, v in drift.items() if not k.startswith(LORA)}, t)
        out.update(self.lora_optimizer.apply(lora, {k: v for k, v in drift.items() if k.startswith(LORA)}, t))
        return self.refresh_occupancy(out, t)

    # -- the unit ------------------------------------------------------------------------------
    def unit_batch(self, xs: Sequence[State], ts: Sequence[int]) -> list[Drift]:
        self._slots, self._lora_drifts = xs, []
        try:
            drifts = super().unit_batch(xs, ts)
        finally:
            self._slots = ()
        for d, extra in zip(drifts, self._lora_drifts, strict=False):
            d.update(extra)
        self._lora_drifts = []
        return drifts

    def guidance_gradient(
        self, latents: torch.Tensor, draws: Sequence[dict[str, Any]], ts: Sequence[int]
    ) -> torch.Tensor:
        """VSD gradient w.r.t. ``latents`` [P*B, ...]; also the LoRA step (worker) or grads (synchronized)."""
        dev = self.device
        conds, unconds = zip(
            *(self.prompts.condition(d["cameras"].elevation, d["cameras"].azimuth) for d in draws)
        )
        cameras = [
            torch.stack([d["cameras"].elevation, d["cameras"].azimuth, d["cameras"].distance], -1).to(dev)
            for d in draws
        ]
        b = latents.shape[0] // len(draws)
        lora_draws = [self._lora_draws(t, b, tuple(latents.shape[1:])) for t in ts]
        sds = self.cfg.sds
        if not self.synchronized:
            grad = vsd_gradient(
                self.prior,
                latents,
                torch.cat([d["t"] for d in draws]).to(dev),
                torch.cat([d["noise"] for d in draws]).to(dev),
                cat_conditions(conds),
                cat_conditions(unconds),
                torch.cat(cameras),
                sds,
                self.vsd,
                step=ts[0],
            )
            joined = {k: torch.cat([ld[k] for ld in lora_draws]) for k in lora_draws[0]}
            self._worker_step(latents, cat_conditions(conds), torch.cat(cameras), joined)
            return grad
        grads = []
        for i, x in enumerate(self._slots):
            rows = slice(i * b, (i + 1) * b)
            load_lora(self.prior, {n: x[LORA + n] for n in self.lora_names})
            d = draws[i]
            grads.append(
                vsd_gradient(
                    self.prior,
                    latents[rows],
                    d["t"].to(dev),
                    d["noise"].to(dev),
                    conds[i],
                    unconds[i],
                    cameras[i],
                    sds,
                    self.vsd,
                    step=ts[i],
                )
            )
            g = lora_grads(self.prior, latents[rows], conds[i], cameras[i], lora_draws[i])
            self._lora_drifts.append({LORA + k: v for k, v in g.items()})
        return torch.cat(grads)

    def _lora_draws(self, t: int, n: int, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        return draw_lora(
            self.prior, n, shape, StepRandom(self.seed, t).generator("lora"), self.vsd.camera_dropout
        )

    def _worker_step(
        self, latents: torch.Tensor, cond: TextCondition, camera: torch.Tensor, draws: dict[str, torch.Tensor]
    ) -> None:
        """One AdamW step of this worker's LoRA on the detached renders it just evaluated."""
        if self._worker_state is None:
            self._worker_state = self.lora_optimizer.init(lora_parameters(self.prior))
        grads = lora_grads(self.prior, latents, cond, camera, draws)
        params = lora_parameters(self.prior)
        new_params, self._worker_state = self.lora_optimizer.step(params, grads, self._worker_state, 0)
        load_lora(self.prior, new_params)

    def replicate(self, device: torch.device) -> TextTo3DVSD:
        clone = super().replicate(device)
        clone._worker_state = None
        clone._slots, clone._lora_drifts = (), []
        return clone
