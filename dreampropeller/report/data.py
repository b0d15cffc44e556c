"""What a report shows of one run directory, read from its files only (no model, no torch state):
metrics, config, per-iteration trace, log, eval scores and the bytes of the mesh, video, image and
splats.

Eval scores are the ones given (``dreampropeller report`` computes them), else ``eval.json`` in the
run directory when it is newer than the checkpoint (``dreampropeller eval RUN --json RUN/eval.json``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from dreampropeller.report.splats import pack_splats
from dreampropeller.report.trace import read_trace

METRICS, CONFIG, LOG, EVAL, CHECKPOINT = (
    "metrics.json",
    "config.yaml",
    "log.txt",
    "eval.json",
    "checkpoint.safetensors",
)
MESH, VIDEO, VIEWS, PLY, INCOMPLETE = "mesh.glb", "turntable.mp4", "views.png", "gaussians.ply", "INCOMPLETE"


@dataclass
class RunData:
    """One run directory as the report sees it."""

    path: Path
    metrics: dict[str, Any]
    config: dict[str, Any]
    config_text: str
    trace: list[dict[str, Any]]
    log_text: str = ""
    scores: dict[str, Any] | None = None
    complete: bool = True
    files: dict[str, bytes] = field(default_factory=dict)
    """Embedded files by name: ``mesh.glb``, ``turntable.mp4``, ``views.png``, ``splats`` (packed)."""

    @property
    def name(self) -> str:
        """The run's label: its directory's name."""
        return self.path.name or str(self.path)

    def info(self, key: str, default: Any = None) -> Any:
        """``key`` from the metrics (the resolved run), else from the config as given."""
        if key in self.metrics:
            return self.metrics[key]
        return self.config.get(key, default)

    def iterations(self) -> list[dict[str, Any]]:
        """Per-iteration rows: the trace, or for a run without ``trace.jsonl`` the rows ``metrics.json``
        can tell (accepted steps and threshold)."""
        if self.trace:
            return self.trace
        rows, step = [], int(self.metrics.get("start", 0))
        window = int(self.metrics.get("window") or 1)
        steps = int(self.metrics.get("steps", 0))
        thresholds = self.metrics.get("threshold_trace", [])
        for i, accepted in enumerate(self.metrics.get("accepted_trace", [])):
            units = min(window, steps - step) if steps else None
            threshold = thresholds[i] if i < len(thresholds) else None
            row = {"iteration": i + 1, "start": step, "step": step + accepted, "accepted": accepted}
            rows.append({**row, "units": units, "threshold": threshold, "errors": []})
            step += accepted
        return rows


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def viewer_glb(data: bytes) -> bytes:
    """``mesh.glb`` as the report's viewer reads it: a UV-textured mesh (a texture run) is given its
    texture sampled at the vertices (COLOR_0), which the viewer shows; any other glb is unchanged."""
    import io

    import trimesh

    mesh = trimesh.load(io.BytesIO(data), file_type="glb", force="mesh", process=False)
    if getattr(mesh.visual, "kind", None) != "texture":
        return data
    mesh.visual = mesh.visual.to_color()
    return mesh.export(file_type="glb")


def load_run_data(run_dir: str | Path, scores: dict[str, Any] | None = None) -> RunData:
    """Read ``run_dir`` (FileNotFoundError when it has no ``metrics.json`` or ``config.yaml``)."""
    path = Path(run_dir)
    if not (path / CONFIG).is_file():
        raise FileNotFoundError(f"{str(path)!r} is not a run directory (no {CONFIG})")
    if not (path / METRICS).is_file():
        raise FileNotFoundError(f"{str(path)!r} has no {METRICS}: the run has not finished (resume it first)")
    config_text = (path / CONFIG).read_text()
    if scores is None and (path / EVAL).is_file():
        checkpoint = path / CHECKPOINT
        if not checkpoint.is_file() or (path / EVAL).stat().st_mtime >= checkpoint.stat().st_mtime:
            scores = json.loads((path / EVAL).read_text())
    files = {name: data for name in (MESH, VIDEO, VIEWS) if (data := _read(path / name)) is not None}
    if MESH in files:
        files[MESH] = viewer_glb(files[MESH])
    if (path / PLY).is_file():
        files["splats"] = pack_splats(path / PLY)
    return RunData(
        path=path,
        metrics=json.loads((path / METRICS).read_text()),
        config=OmegaConf.to_container(OmegaConf.create(config_text)) or {},  # type: ignore[arg-type]
        config_text=config_text,
        trace=read_trace(path),
        log_text=(path / LOG).read_text() if (path / LOG).is_file() else "",
        scores=scores,
        complete=not (path / INCOMPLETE).exists(),
        files=files,
    )
