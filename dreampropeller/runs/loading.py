"""Reading a run directory back: its config, exact state and step, and the asset they make."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from dreampropeller.config.loading import ConfigError, build
from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.picard.process import State
from dreampropeller.runs.assets import Asset, asset_of
from dreampropeller.runs.directory import CONFIG, load_run_checkpoint


@dataclass
class Run:
    """A run directory's config, checkpointed state and step."""

    cfg: TextTo3DConfig
    state: State
    step: int

    @property
    def asset(self) -> Asset:
        """The asset of the checkpointed state (render, mesh)."""
        return asset_of(self.cfg, self.state, self.step)


def load_run(run_dir: str | Path, device: torch.device | str = "cpu") -> Run:
    """The :class:`Run` in ``run_dir`` (ConfigError when it is not a run directory)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise ConfigError(f"{str(run_dir)!r} is not a run directory (no config.yaml)")
    data = OmegaConf.to_container(OmegaConf.load(run_dir / CONFIG), resolve=True)
    cfg = build(TextTo3DConfig, data)  # type: ignore[arg-type]
    state, step, _ = load_run_checkpoint(run_dir, device)
    return Run(cfg, state, step)
