"""Per-step random generators: every random draw of step ``t`` derives from ``(seed, t, stream)``.

A Picard unit must be a pure function of ``(state, t)``. Drawing from named streams (``"camera"``,
``"noise"``, ...) keeps draws independent of each other, so adding a new draw to a unit never shifts
the numbers an existing draw sees.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import torch

_MASK63 = (1 << 63) - 1


def derive_seed(seed: int, t: int, stream: str = "") -> int:
    """A 63-bit seed that depends only on ``(seed, t, stream)`` (stable across runs and platforms)."""
    digest = hashlib.blake2b(f"{int(seed)}:{int(t)}:{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _MASK63


def step_generator(
    seed: int, t: int, stream: str = "", device: torch.device | str = "cpu"
) -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded by ``(seed, t, stream)``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, t, stream))
    return gen


class StepRandom:
    """Named random streams of one step. ``StepRandom(seed, t).generator("camera")``."""

    def __init__(self, seed: int, t: int, device: torch.device | str = "cpu") -> None:
        self.seed = int(seed)
        self.t = int(t)
        self.device = torch.device(device)

    def generator(self, stream: str, device: torch.device | str | None = None) -> torch.Generator:
        """The generator of ``stream`` at this step (a new one each call, always the same draws)."""
        return step_generator(self.seed, self.t, stream, device or self.device)

    def rand(self, stream: str, *shape: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Uniform [0, 1) draws of ``stream``."""
        dev = torch.device(device or self.device)
        return torch.rand(*shape, generator=self.generator(stream, dev), device=dev)

    def randn(self, stream: str, *shape: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Standard normal draws of ``stream``."""
        dev = torch.device(device or self.device)
        return torch.randn(*shape, generator=self.generator(stream, dev), device=dev)

    def randint(
        self, stream: str, low: int, high: int, *shape: int, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Integer draws in ``[low, high)`` of ``stream``."""
        dev = torch.device(device or self.device)
        return torch.randint(low, high, shape, generator=self.generator(stream, dev), device=dev)


@contextlib.contextmanager
def seeded_global_rng(seed: int, t: int, devices: list[torch.device] | None = None) -> Iterator[None]:
    """Seed torch's global RNG from ``(seed, t)`` inside the block and restore it afterwards.

    For library code that draws from the global RNG (dropout, some schedulers). Not thread safe:
    under the ``devices`` executor units must use explicit generators instead.
    """
    cuda_devices = [d for d in (devices or []) if torch.device(d).type == "cuda"]
    with torch.random.fork_rng(devices=cuda_devices, device_type="cuda" if cuda_devices else "cpu"):
        torch.manual_seed(derive_seed(seed, t, "global"))
        yield
