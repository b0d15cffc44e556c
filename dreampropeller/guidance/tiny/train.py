"""Training of the tiny prior: seeded, resumable, stops at a step count or a wall-clock budget.

Data are rendered on the training device (``data.py``); the held-out combinations never appear.
Loss: epsilon MSE with min-SNR-gamma weighting (faster convergence on short budgets). Text is dropped
10% of the time (and each slot alone 5%) for classifier-free guidance, the camera 5%. AdamW with
warmup and a cosine tail, EMA of the weights; the EMA weights are exported in the shipped format.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from dreampropeller.guidance.tiny.data import allowed_combos, build_pool, draw_batch
from dreampropeller.guidance.tiny.model import TinyPrior, TinyPriorConfig, camera_features
from dreampropeller.guidance.tiny.text import drop_tokens
from dreampropeller.picard.device import resolve_device


@dataclass
class TrainConfig:
    """Options of a training run (the CLI's flags)."""

    out: str
    steps: int | None = None
    minutes: float | None = None
    batch: int | None = None  # default: 512 on CUDA, 32 on the CPU
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 200
    decay_fraction: float = 0.3  # cosine decay of the lr over this final fraction of the run
    ema_decay: float = 0.999
    text_dropout: float = 0.1
    slot_dropout: float = 0.05
    camera_dropout: float = 0.05
    min_snr_gamma: float = 5.0
    seed: int = 0
    device: str = "auto"
    views_per_shape: int | None = None  # default: 16384 on CUDA, 256 on the CPU
    checkpoint_every: int = 1000
    log_every: int = 50
    resume: bool = False
    safe: bool = False  # CUDA without bf16 autocast, channels-last, fused AdamW or cuDNN autotuning

    def resolved_device(self) -> torch.device:
        """The device to train on ("auto": CUDA when present)."""
        return resolve_device(self.device)


def lr_factor(step: int, progress: float, warmup: int, decay_fraction: float) -> float:
    """Linear warmup over ``warmup`` steps, then constant, then cosine to 0.1 over the last fraction."""
    w = min(1.0, (step + 1) / max(1, warmup))
    start = 1.0 - decay_fraction
    if decay_fraction <= 0.0 or progress <= start:
        return w
    x = min(1.0, (progress - start) / decay_fraction)
    return w * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * x)))


class Trainer:
    """One training run; ``run()`` trains until the step or time budget, checkpoints and exports."""

    def __init__(self, cfg: TrainConfig, log=print) -> None:
        if cfg.steps is None and cfg.minutes is None:
            raise ValueError("give --steps or --minutes (or both) so that training knows when to stop")
        if cfg.steps is not None and cfg.steps < 1:
            raise ValueError(f"--steps must be positive, got {cfg.steps}")
        if cfg.minutes is not None and cfg.minutes <= 0:
            raise ValueError(f"--minutes must be positive, got {cfg.minutes}")
        self.cfg, self.log = cfg, log
        self.device = cfg.resolved_device()
        cuda = self.device.type == "cuda"
        self.fast = cuda and not cfg.safe
        self.batch = cfg.batch or (512 if cuda else 32)
        if self.batch < 1:
            raise ValueError(f"--batch must be positive, got {self.batch}")
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = self.fast
        self.prior = TinyPrior(TinyPriorConfig()).to(self.device).train()
        if self.fast:
            self.prior.unet.to(memory_format=torch.channels_last)
        params = [p for p in self.prior.parameters() if p.requires_grad]
        self.params = params
        self.opt = torch.optim.AdamW(
            params,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            betas=(0.9, 0.99),
            **({"fused": True} if self.fast else {}),
        )
        self.ema = [p.detach().clone().float() for p in params]
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.step, self.elapsed_before = 0, 0.0
        self.last_loss = float("nan")
        views = cfg.views_per_shape or (16384 if cuda else 256)
        if cfg.resume:
            self._load_checkpoint()
        t0 = time.perf_counter()
        pool_dtype = torch.float16 if cuda else torch.float32
        self.pool = build_pool(views, seed=cfg.seed + 1, device=self.device, dtype=pool_dtype)
        self.allowed = allowed_combos(include_held_out=False, device=self.device)
        self.log(
            f"prior train: device {self.device}, batch {self.batch}, "
            f"{self.prior.num_parameters() / 1e6:.2f} M parameters, geometry pool {len(self.pool)} views "
            f"traced in {time.perf_counter() - t0:.1f} s"
        )

    # -- one step -----------------------------------------------------------------------------------
    def _loss(self) -> torch.Tensor:
        cfg, b, gen, dev = self.cfg, self.batch, self.gen, self.device
        data = draw_batch(self.pool, b, gen, self.allowed)
        x0 = data.rgb * 2.0 - 1.0
        u = torch.rand(b, 4, generator=gen, device=dev)
        tokens = drop_tokens(
            torch.stack([data.shape_ids, data.colour_ids], 1),
            drop_both=u[:, 0] < cfg.text_dropout,
            drop_shape=u[:, 1] < cfg.slot_dropout,
            drop_colour=u[:, 2] < cfg.slot_dropout,
        )
        cam = camera_features(data.camera, b, dev) * (u[:, 3:4] >= cfg.camera_dropout)
        t = torch.randint(0, self.prior.num_train_timesteps, (b,), generator=gen, device=dev)
        noise = torch.randn(x0.shape, generator=gen, device=dev)
        noisy = self.prior.add_noise(x0, noise, t)
        if self.fast:
            noisy = noisy.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.fast):
            cond = self.prior.condition(tokens)
            labels = torch.cat([cond["pooled"], cam], -1)
            pred = self.prior.unet(
                noisy, t, encoder_hidden_states=cond["hidden_states"], class_labels=labels
            ).sample
        per_sample = F.mse_loss(pred.float(), noise, reduction="none").mean(dim=(1, 2, 3))
        a = self.prior.alphas_cumprod[t]
        snr = a / (1.0 - a)
        weight = snr.clamp(max=cfg.min_snr_gamma) / snr if cfg.min_snr_gamma > 0 else torch.ones_like(snr)
        return (weight * per_sample).mean()

    def _progress(self, run_seconds: float) -> float:
        cfg = self.cfg
        parts = []
        if cfg.steps is not None:
            parts.append(self.step / cfg.steps)
        if cfg.minutes is not None:
            parts.append(run_seconds / (60.0 * cfg.minutes))
        return max(parts)

    def run(self) -> Path:
        """Train, checkpoint, export the EMA weights; returns the exported weights path."""
        cfg = self.cfg
        start = time.perf_counter()
        window_loss, window_n, window_t, window_step = None, 0, start, self.step
        try:
            while True:
                run_seconds = time.perf_counter() - start
                if self._progress(run_seconds) >= 1.0:
                    break
                lr = cfg.lr * lr_factor(
                    self.step, self._progress(run_seconds), cfg.warmup, cfg.decay_fraction
                )
                for group in self.opt.param_groups:
                    group["lr"] = lr
                loss = self._loss()
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.params, 1.0)
                self.opt.step()
                decay = min(cfg.ema_decay, (1.0 + self.step) / (10.0 + self.step))
                torch._foreach_lerp_(self.ema, [p.detach().float() for p in self.params], 1.0 - decay)
                self.step += 1
                window_loss = loss.detach() if window_loss is None else window_loss + loss.detach()
                window_n += 1
                if self.step % cfg.log_every == 0 or self.step == 1:
                    now = time.perf_counter()
                    self.last_loss = float(window_loss) / window_n
                    rate = (self.step - window_step) / max(now - window_t, 1e-9)
                    self.log(
                        f"step {self.step} loss {self.last_loss:.4f} lr {lr:.2e} {rate:.1f} it/s "
                        f"{rate * self.batch:.0f} img/s elapsed {self.elapsed_before + now - start:.0f} s"
                    )
                    window_loss, window_n, window_t, window_step = None, 0, now, self.step
                if self.step % cfg.checkpoint_every == 0:
                    self._save_checkpoint(time.perf_counter() - start)
        except KeyboardInterrupt:
            self.log("prior train: interrupted, saving a checkpoint")
            self._save_checkpoint(time.perf_counter() - start)
            raise
        if window_n:
            self.last_loss = float(window_loss) / window_n
        seconds = time.perf_counter() - start
        self._save_checkpoint(seconds)
        path = self.export(seconds)
        self.log(
            f"prior train: {self.step} steps in {seconds:.0f} s, final loss {self.last_loss:.4f}, "
            f"weights {path} ({path.stat().st_size / 1e6:.1f} MB)"
        )
        return path

    # -- checkpoints and export ---------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def _save_checkpoint(self, run_seconds: float) -> None:
        state = {
            "model": self.prior.state_dict(),
            "ema": self.ema,
            "opt": self.opt.state_dict(),
            "step": self.step,
            "elapsed": self.elapsed_before + run_seconds,
            "generator": self.gen.get_state(),
            "config": asdict(self.cfg),
            "batch": self.batch,
        }
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint_path)

    def _load_checkpoint(self) -> None:
        path = self.checkpoint_path
        if not path.is_file():
            self.log(f"prior train: no checkpoint at {path}, starting from scratch")
            return
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.prior.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        for e, saved in zip(self.ema, state["ema"]):
            e.copy_(saved)
        self.step, self.elapsed_before = int(state["step"]), float(state["elapsed"])
        self.gen.set_state(state["generator"].cpu())
        self.log(f"prior train: resumed from {path} at step {self.step}")

    def ema_prior(self) -> TinyPrior:
        """A TinyPrior holding the EMA weights (on the CPU)."""
        prior = TinyPrior(TinyPriorConfig())
        params = [p for p in prior.parameters() if p.requires_grad]
        with torch.no_grad():
            for p, e in zip(params, self.ema):
                p.copy_(e.cpu())
        return prior.eval()

    def export(self, run_seconds: float) -> Path:
        """Write the EMA weights and provenance to ``OUT/export/tiny.{safetensors,json}``."""
        prior = self.ema_prior()
        dev = self.device
        prior.config.info = {
            "steps": self.step,
            "batch": self.batch,
            "seed": self.cfg.seed,
            "train_seconds": round(self.elapsed_before + run_seconds, 1),
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "final_loss": round(self.last_loss, 5),
            "lr": self.cfg.lr,
            "views_per_shape": self.cfg.views_per_shape or (16384 if dev.type == "cuda" else 256),
            "torch": torch.__version__,
        }
        path = prior.save(self.out / "export")
        (self.out / "train_summary.json").write_text(json.dumps(prior.config.info, indent=2) + "\n")
        return path


def train(cfg: TrainConfig, log=print) -> Path:
    """Run (or resume) a training run; returns the exported weights path."""
    return Trainer(cfg, log).run()
