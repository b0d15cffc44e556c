"""VSD (ProlificDreamer) as a score-distillation object, in two LoRA modes.

* ``worker`` (the authors'): the LoRA is NOT in the Picard state. Every worker (this object, or each
  replica of the ``devices`` executor) keeps its own LoRA and AdamW and trains it on the units it
  evaluates: one step per :meth:`gradient` call on the detached renders of all its slots (one step per
  unit under the sequential executor, one per window under the batched one). Units then depend on
  the worker's history, so a propelled run is not bit-equal to the sequential one.
* ``synchronized``: the LoRA parameters and their AdamW state are part of the state (``lora/<name>``,
  compared by ``distance``). :meth:`gradient` returns the LoRA gradient at each slot's LoRA, and
  :meth:`update` steps the LoRA's optimizer, so the LoRA step is part of the rollout and threshold 0
  reproduces the sequential run exactly.

Both modes use the same draws (``StepRandom(seed, t)``: ``sds`` for the VSD timestep and noise,
``lora`` for the LoRA loss) and the same math (:mod:`dreampropeller.guidance.vsd`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from dreampropeller.guidance.distillation import ScoreDistillation, camera_rows
from dreampropeller.guidance.prior import DiffusionPrior, TextCondition, cat_conditions
from dreampropeller.guidance.prompts import PromptConfig
from dreampropeller.guidance.sds import SDSConfig, row_steps
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

LORA = "lora/"


def is_lora_key(key: str) -> bool:
    """True for LoRA parameters and their optimizer state in a synchronized-mode state."""
    return key.startswith(LORA) or (is_optim_key(key) and param_of(key).startswith(LORA))


class VariationalScoreDistillation(ScoreDistillation):
    """VSD with a LoRA on the prior (see the module docstring); ``seed`` keys the LoRA draws."""

    def __init__(
        self,
        prior: DiffusionPrior,
        prompt: str | None,
        sds: SDSConfig,
        vsd: VSDConfig,
        prompt_cfg: PromptConfig | None = None,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ) -> None:
        super().__init__(prior, prompt, sds, prompt_cfg, device)
        self.vsd, self.seed = vsd, int(seed)
        if not hasattr(self.prior, "unet"):
            raise ValueError(f"VSD needs a prior with a diffusers UNet; prior {self.prior.name!r} has none")
        add_lora(self.prior, vsd)
        self.lora_names = tuple(lora_parameters(self.prior))
        self.synchronized = vsd.mode == "synchronized"
        self.lora_optimizer = make_optimizer(
            {
                "name": "adamw",
                "lr": vsd.lora_lr,
                "betas": list(vsd.lora_betas),
                "weight_decay": vsd.lora_weight_decay,
            }
        )
        self.param_keys = tuple(LORA + n for n in self.lora_names) if self.synchronized else ()
        self._worker_state: dict[str, torch.Tensor] | None = None

    # -- the LoRA's part of the state (synchronized mode) ------------------------------------------
    def owns(self, key: str) -> bool:
        return self.synchronized and is_lora_key(key)

    def lora_tensors(self) -> dict[str, torch.Tensor]:
        """Copies of the prior's current LoRA parameters, by name."""
        return {k: v.detach().clone() for k, v in lora_parameters(self.prior).items()}

    def initial_state(self) -> State:
        """The LoRA and its AdamW state in synchronized mode; nothing in worker mode."""
        if not self.synchronized:
            return {}
        return self.lora_optimizer.init_state({LORA + k: v for k, v in self.lora_tensors().items()})

    def update(self, x: State, drift: Drift, t: int) -> State:
        return self.lora_optimizer.apply(x, drift, t) if self.synchronized else {}

    # -- the gradient ------------------------------------------------------------------------------
    def gradient(
        self,
        latents: torch.Tensor,
        draws: Sequence[dict[str, Any]],
        ts: Sequence[int],
        slots: Sequence[State] = (),
    ) -> tuple[torch.Tensor, list[Drift]]:
        """VSD gradient w.r.t. ``latents`` [P*B, ...]; LoRA step (worker) or LoRA drifts (synchronized)."""
        dev = self.device
        conds, unconds = self.conditions(draws)
        cameras = camera_rows(draws, dev)
        b = latents.shape[0] // len(draws)
        lora_draws = [self._lora_draws(t, b, tuple(latents.shape[1:])) for t in ts]
        if not self.synchronized:
            grad = vsd_gradient(
                self.prior,
                latents,
                torch.cat([d["t"] for d in draws]).to(dev),
                torch.cat([d["noise"] for d in draws]).to(dev),
                cat_conditions(conds),
                cat_conditions(unconds),
                torch.cat(cameras),
                self.sds,
                self.vsd,
                step=row_steps(ts, latents.shape[0]),
            )
            joined = {k: torch.cat([ld[k] for ld in lora_draws]) for k in lora_draws[0]}
            self._worker_step(latents, cat_conditions(conds), torch.cat(cameras), joined)
            return grad, []
        grads, lora_drifts = [], []
        for i, x in enumerate(slots):
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
                    self.sds,
                    self.vsd,
                    step=ts[i],
                )
            )
            g = lora_grads(self.prior, latents[rows], conds[i], cameras[i], lora_draws[i])
            lora_drifts.append({LORA + k: v for k, v in g.items()})
        return torch.cat(grads), lora_drifts

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

    def replicate(self, device: torch.device | str) -> VariationalScoreDistillation:
        clone = super().replicate(device)
        assert isinstance(clone, VariationalScoreDistillation)
        clone._worker_state = None
        return clone
