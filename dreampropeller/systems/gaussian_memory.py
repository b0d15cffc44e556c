"""Peak memory of a Gaussian run, estimated before it starts (count x resolution x batch x window),
so that a run too large for the device fails with one line instead of an out-of-memory error later."""

from __future__ import annotations

import math
import os

import torch

from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.scene.densify import STAT_KEYS, densify_due
from dreampropeller.scene.gaussians import GaussianError

#: Bytes kept per (slot, view, Gaussian) instance by the projection and its autograd graph (measured
#: order of magnitude, rounded up).
BYTES_PER_INSTANCE = 512
#: Bytes kept per (Gaussian, pixel) pair by the torch compositor and its autograd graph (rounded up).
BYTES_PER_PAIR = 256
#: Floats of state per Gaussian and parameter float: value + two Adam moments.
STATE_COPIES = 3


def peak_gaussians(cfg: TextTo3DConfig) -> int:
    """The most Gaussians the run may hold: the densification cap when it densifies within the run."""
    g = cfg.gaussians
    grows = any(densify_due(g.densify, t) for t in range(min(cfg.steps, g.densify.end)))
    return max(int(g.num_points), int(g.densify.max_count)) if grows else int(g.num_points)


def estimate_memory_bytes(cfg: TextTo3DConfig, window: int, extra_views: int = 0) -> int:
    """Rough peak memory of a Gaussian run: count x resolution x batch x window.

    Terms: the window's states (about ``2 window + 2`` of them live at once; parameters and two Adam
    moments each), the projection of every (slot, view, Gaussian) instance kept for the backward pass,
    and the (Gaussian, pixel) pairs of the compositor, with a screen footprint estimated from the
    point spacing at the peak count seen from the closest camera (twice that, for anisotropy).
    """
    g, r = cfg.gaussians, cfg.render
    n = peak_gaussians(cfg)
    floats = 14 + (9 if g.sh_degree == 1 else 0) + len(STAT_KEYS)
    states = (2 * window + 2) * n * floats * 4 * STATE_COPIES
    views = window * (r.batch_size + extra_views)
    fovy = min(cfg.camera.fovy_range)
    focal = 0.5 * r.height / math.tan(math.radians(fovy) / 2)
    spacing = g.radius * max(n, 1) ** (-1.0 / 3.0)  # Gaussian size ~ point spacing at that count
    sigma_px = spacing * focal / max(min(cfg.camera.distance_range), 0.1)
    side = 2 * math.ceil(3.0 * math.sqrt(sigma_px**2 + 0.3)) + 1
    footprint = min(2.0 * side * side, float(r.height * r.width))
    render = views * n * (BYTES_PER_INSTANCE + footprint * BYTES_PER_PAIR)
    return int(states + render)


def available_memory_bytes(device: torch.device) -> int:
    """Free memory of ``device``: CUDA's free bytes, or the host's MemAvailable."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def check_memory(cfg: TextTo3DConfig, window: int, device: torch.device, extra_views: int = 0) -> int:
    """Raise one clear line when the run's estimated peak memory exceeds what the device has."""
    need = estimate_memory_bytes(cfg, window, extra_views)
    limit = cfg.gaussians.memory_limit_gb
    have = int(float(limit) * 2**30) if limit is not None else available_memory_bytes(device)
    if need > have:
        r = cfg.render
        raise GaussianError(
            f"{peak_gaussians(cfg)} Gaussians x {r.height}x{r.width} px x batch {r.batch_size} x window "
            f"{window} need about {need / 2**30:.1f} GiB but {device} has {have / 2**30:.1f} GiB: lower "
            "gaussians.num_points / gaussians.densify.max_count, the resolution, the batch or the window"
        )
    return need
