"""`bench prior`: SDS units per second of a Stable Diffusion prior by batch size (no download).

One SDS unit is one camera's share of a step's prior work: a 64x64 render resized to the model
resolution and VAE-encoded with gradient, the classifier-free-guided UNet forward (2 samples per
camera), and the backward of the SDS surrogate to the render. The UNet and VAE have the exact Stable
Diffusion 2.1-base architecture with random weights (built from configs), fp16 on CUDA. On a CPU (or
with ``small``) a scaled-down model keeps the run under a minute. Units per second at batch B over
units per second at batch 1 is the ceiling of the batched Picard executor on one device.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from dreampropeller.bench.random_models import sd_components
from dreampropeller.guidance.sds import SDSConfig, sds_gradient, sds_surrogate
from dreampropeller.guidance.stable_diffusion import StableDiffusionPrior
from dreampropeller.picard.device import resolve_device

BATCHES = (1, 2, 4, 8, 16)
RENDER = 64


def make_sd_prior(arch: str, device: torch.device, attention: str = "sdpa") -> StableDiffusionPrior:
    """A random-weight :class:`StableDiffusionPrior` of ``arch`` on ``device`` (fp16 on CUDA)."""
    prior = StableDiffusionPrior(**sd_components(arch))
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    prior = prior.to(device=device, dtype=dtype).eval().requires_grad_(False)
    prior.alphas_cumprod = prior.alphas_cumprod.float()
    prior.configure(attention)
    return prior


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sds_unit_time(
    prior: StableDiffusionPrior, batch: int, device: torch.device, repeats: int, warmup: int = 1
) -> float:
    """Median seconds of one batched SDS call (encode with grad, CFG forward, backward to the render)."""
    cfg = SDSConfig(guidance_scale=100.0, cfg_convention="threestudio")
    cond = prior.encode_text(["a photograph of an astronaut riding a horse"] * batch)
    uncond = prior.encode_text([""] * batch)
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(batch, 3, RENDER, RENDER, generator=g).to(device).requires_grad_(True)
    times = []
    for i in range(warmup + repeats):
        _sync(device)
        t0 = time.perf_counter()
        latents = prior.encode_images(rgb)
        t = torch.randint(20, 980, (batch,), generator=g).to(device)
        noise = torch.randn(latents.shape, generator=g).to(device)
        grad = sds_gradient(prior, latents, t, noise, cond, uncond, None, cfg)
        (rgb_grad,) = torch.autograd.grad(sds_surrogate(latents, grad).sum(), [rgb])
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        del rgb_grad
    return sorted(times)[len(times) // 2]


def bench_prior(
    device: str | None = None,
    small: bool | None = None,
    batches: Sequence[int] = BATCHES,
    repeats: int = 3,
) -> dict[str, Any]:
    """Units/s per batch size; ``small`` defaults to True on a CPU (fp32) and False on CUDA (fp16)."""
    dev = resolve_device(device)
    small = dev.type != "cuda" if small is None else small
    arch = "small" if small else "sd21-base"
    prior = make_sd_prior(arch, dev)
    rows = []
    for b in batches:
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        s = sds_unit_time(prior, int(b), dev, repeats)
        row = {"batch": int(b), "seconds_per_call": s, "units_per_s": b / s}
        if dev.type == "cuda":
            row["peak_memory_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
        rows.append(row)
    base = rows[0]["units_per_s"] if rows else 1.0
    for row in rows:
        row["speedup_vs_batch1"] = row["units_per_s"] / base
    return {
        "architecture": arch,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "dtype": "float16" if dev.type == "cuda" else "float32",
        "image_size": prior.image_size,
        "render_size": RENDER,
        "unet_parameters": sum(p.numel() for p in prior.unet.parameters()),
        "rows": rows,
    }


def format_prior_table(result: dict[str, Any]) -> str:
    """A plain-text table of :func:`bench_prior`'s rows."""
    lines = [
        f"SDS units/s, {result['architecture']} UNet ({result['unet_parameters'] / 1e6:.0f} M params), "
        f"{result['dtype']} on {result['device']}, {result['render_size']} px renders -> "
        f"{result['image_size']} px",
        f"{'batch':>6} {'s/call':>9} {'units/s':>9} {'x batch1':>9}",
    ]
    for r in result["rows"]:
        cells = (r["seconds_per_call"], r["units_per_s"], r["speedup_vs_batch1"])
        lines.append(f"{r['batch']:>6} {cells[0]:>9.4f} {cells[1]:>9.2f} {cells[2]:>9.2f}")
    return "\n".join(lines)
