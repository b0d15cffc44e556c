"""VSD (ProlificDreamer) as a score-distillation object, in three LoRA modes.

* ``synchronized``: the LoRA parameters and their AdamW state are part of the Picard state
  (``lora/<name>``, compared by ``distance``). :meth:`gradient` returns the LoRA gradient at each slot's
  LoRA and :meth:`update` steps the LoRA's optimizer, so the LoRA step is part of the rollout: it is
  taken on accepted iterates only, and threshold 0 reproduces the sequential run exactly.
* ``worker`` (the authors'): the LoRA is NOT in the Picard state. Every worker (this object, or each
  replica of the ``devices`` executor) keeps its own LoRA and AdamW and takes one step per
  :meth:`gradient` call on the detached renders of all its slots (one step per unit under the
  sequential executor, one per window under the batched one), rejected speculative slots included.
* ``accepted``: one LoRA outside the Picard state, used by every unit of a window; after each Picard
  iteration the solver reports the accepted steps (:meth:`accept`) and the LoRA takes one AdamW step on
  their renders, cached when their units were evaluated. Sequentially (and at threshold 0) it is the
  sequential ProlificDreamer loop; propelled, a window's units share the LoRA of its start.

Outside-the-state LoRAs (worker, accepted) are saved in checkpoints through :meth:`worker_state` /
:meth:`load_worker_state` (the LoRA and AdamW state, in the synchronized mode's key layout).

All modes use the same draws (``StepRandom(seed, t)``: ``sds`` for the VSD timestep and noise,
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
from dreampropeller.picard.process import Drift, State, clone_state
from dreampropeller.picard.rng import StepRandom

LORA = "lora/"


def is_lora_key(key: str) -> bool:
    """True for LoRA parameters and their optimizer state in a synchronized-mode state."""
    return key.startswith(LORA) or (is_optim_key(key) and param_of(key).startswith(LORA))


def lora_steps(guidance: Any, state: State) -> int | None:
    """How many AdamW steps the run's LoRA took: from the state (synchronized) or the guidance's own
    (worker, accepted); None for a guidance without a LoRA."""
    if not isinstance(guidance, VariationalScoreDistillation):
        return None
    source = state if guidance.synchronized else guidance.worker_state()
    counts = [float(v) for k, v in source.items() if k.startswith("optim/step/" + LORA)]
    return int(max(counts)) if counts else 0


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
        self._worker: State | None = None  # worker / accepted: the LoRA + AdamW, flat (lora/<name> keys)
        self._pending: dict[int, tuple[torch.Tensor, TextCondition, torch.Tensor]] = {}

    # -- the LoRA's part of the state (synchronized mode) ------------------------------------------
    def owns(self, key: str) -> bool:
        return self.synchronized and is_lora_key(key)

    def lora_tensors(self) -> dict[str, torch.Tensor]:
        """Copies of the prior's current LoRA parameters, by name."""
        return {k: v.detach().clone() for k, v in lora_parameters(self.prior).items()}

    def initial_state(self) -> State:
        """The LoRA and its AdamW state in synchronized mode; nothing otherwise."""
        if not self.synchronized:
            return {}
        return self._fresh()

    def _fresh(self) -> State:
        """The prior's current LoRA with a fresh AdamW state, flat (``lora/<name>``, ``optim/*/lora/*``)."""
        return self.lora_optimizer.init_state({LORA + k: v for k, v in self.lora_tensors().items()})

    def update(self, x: State, drift: Drift, t: int) -> State:
        return self.lora_optimizer.apply(x, drift, t) if self.synchronized else {}

    # -- the LoRA outside the state (worker, accepted modes) ---------------------------------------
    def worker_state(self) -> State:
        """Copies of this worker's LoRA and AdamW state (empty in synchronized mode)."""
        if self.synchronized:
            return {}
        return clone_state(self._worker if self._worker is not None else self._fresh())

    def load_worker_state(self, state: State) -> None:
        """Restore :meth:`worker_state` (a checkpoint's): the LoRA into the prior, and its AdamW state."""
        if self.synchronized or not state:
            return
        expected = set(self._fresh())
        if set(state) != expected:
            raise ValueError(
                f"the checkpoint's VSD LoRA does not fit this run ({len(state)} entries, expected "
                f"{len(expected)}): resume with the vsd settings it was started with"
            )
        self._set_worker({k: v.to(self.device) for k, v in state.items()})

    def _set_worker(self, state: State) -> None:
        self._worker = state
        load_lora(self.prior, {n: state[LORA + n] for n in self.lora_names})

    def _lora_step(
        self, latents: torch.Tensor, cond: TextCondition, camera: torch.Tensor, ts: Sequence[int]
    ) -> None:
        """One AdamW step of the outside LoRA on the detached ``latents`` of steps ``ts`` (rows split
        evenly over them, each step's rows with that step's LoRA draws)."""
        b = latents.shape[0] // len(ts)
        draws = [self._lora_draws(t, b, tuple(latents.shape[1:])) for t in ts]
        joined = {k: torch.cat([d[k] for d in draws]) for k in draws[0]}
        grads = lora_grads(self.prior, latents, cond, camera, joined)
        x = self._worker if self._worker is not None else self._fresh()
        self._set_worker(self.lora_optimizer.apply(x, {LORA + k: v for k, v in grads.items()}, 0))

    def accept(self, first: int, count: int) -> None:
        """Accepted mode: one LoRA step on the renders of the accepted steps ``[first, first + count)``
        (cached by :meth:`gradient`); the cache is cleared."""
        pending, self._pending = self._pending, {}
        if self.vsd.mode != "accepted":
            return
        steps = [t for t in range(first, first + count) if t in pending]
        if len(steps) != count:
            raise RuntimeError(
                f"vsd.mode=accepted: the renders of accepted steps {first}..{first + count - 1} were not "
                "evaluated by this process (run it on the sequential or batched executor)"
            )
        rows = [pending[t] for t in steps]
        self._lora_step(
            torch.cat([r[0] for r in rows]),
            cat_conditions([r[1] for r in rows]),
            torch.cat([r[2] for r in rows]),
            steps,
        )

    # -- the gradient ------------------------------------------------------------------------------
    def gradient(
        self,
        latents: torch.Tensor,
        draws: Sequence[dict[str, Any]],
        ts: Sequence[int],
        slots: Sequence[State] = (),
    ) -> tuple[torch.Tensor, list[Drift]]:
        """VSD gradient w.r.t. ``latents`` [P*B, ...]; then a LoRA step (worker), the renders cached
        for :meth:`accept` (accepted), or the LoRA drifts per slot (synchronized)."""
        dev = self.device
        conds, unconds = self.conditions(draws)
        cameras = camera_rows(draws, dev)
        b = latents.shape[0] // len(draws)
        if not self.synchronized:
            if self._worker is None:
                self._worker = self._fresh()
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
            if self.vsd.mode == "worker":
                self._lora_step(latents.detach(), cat_conditions(conds), torch.cat(cameras), ts)
            else:
                for i, t in enumerate(ts):
                    self._pending[int(t)] = (latents[i * b : (i + 1) * b].detach(), conds[i], cameras[i])
            return grad, []
        lora_draws = [self._lora_draws(t, b, tuple(latents.shape[1:])) for t in ts]
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

    def replicate(self, device: torch.device | str) -> VariationalScoreDistillation:
        """A replica on ``device`` with the prior's current LoRA and a copy of this worker's AdamW state."""
        clone = super().replicate(device)
        assert isinstance(clone, VariationalScoreDistillation)
        clone._worker = (
            None if self._worker is None else {k: v.to(device) for k, v in clone_state(self._worker).items()}
        )
        clone._pending = {}
        return clone
