"""Runs made of stages (Magic3D's coarse NeRF -> DMTet refine): each stage is a whole run, the next
starts from the one before.

A config with a ``stages`` list (``--config magic3d``) runs one stage after another. Each stage's config
is the run's config with the stage's own settings on top, then the command line's ``key=value``
overrides and flags (so ``--window 8`` propels every stage). A DMTet stage without ``dmtet.init_from``
starts from the previous stage's NeRF, a texture stage without ``texture.init_from`` from the
previous stage's mesh (DreamGaussian's second stage). The earlier stages are whole run directories under
``OUT/stages/<i>-<name>/``; the last stage is ``OUT`` itself, so ``eval``, ``report`` and the exports
read the final asset where a one-stage run has it. ``OUT/stages.yaml`` holds every stage's resolved
config, which is what ``--resume OUT`` continues from; ``OUT/metrics.json`` gains one summary per stage.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from dreampropeller.config.loading import ConfigError, build, merge_config, to_dict
from dreampropeller.config.schema import TextTo3DConfig
from dreampropeller.runs.directory import INCOMPLETE, log, prepare_output
from dreampropeller.systems.factory import validate

STAGES_FILE = "stages.yaml"
STAGES_DIR = "stages"
FREE_KEYS = ("optimizer", "stages")
#: representations that start from a finished run, and the config section naming it (``init_from``)
REFINES = {"dmtet": "dmtet", "texture": "texture"}  # free-form config mappings (not checked key by key)


@dataclass
class Stage:
    """One stage of a run: its name, its run directory and its whole config."""

    name: str
    out: Path
    cfg: TextTo3DConfig


def stage_settings(stages: Sequence[Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(name, settings)`` of every entry of a ``stages`` list (each a mapping with a ``name``)."""
    out: list[tuple[str, dict[str, Any]]] = []
    for i, entry in enumerate(stages):
        if not isinstance(entry, Mapping) or not str(entry.get("name", "")).strip():
            raise ConfigError(f"stages[{i}] must be a mapping: a name and config keys")
        name = str(entry["name"]).strip()
        if any(c in name for c in "/\\") or name in (".", ".."):
            raise ConfigError(f"stages[{i}].name {name!r} must be a plain name (it names a directory)")
        if name in (n for n, _ in out):
            raise ConfigError(f"stages[{i}].name {name!r} is used twice")
        settings = {k: v for k, v in entry.items() if k != "name"}
        if "stages" in settings:
            raise ConfigError(f"stages[{i}] cannot hold stages of its own")
        out.append((name, settings))
    return out


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """``key=value`` overrides split into the ones for every stage and ``(stage, key=value)`` for one
    stage (``stages.refine.steps=300`` or ``stages.1.steps=300``: by name or 0-based index)."""
    general: list[str] = []
    staged: list[tuple[str, str]] = []
    for item in overrides:
        if item.startswith("stages."):
            stage, _, rest = item[len("stages.") :].partition(".")
            if not stage or "=" not in rest or rest.startswith("="):
                raise ConfigError(f"override {item!r}: set one stage's key as stages.NAME.key=value")
            staged.append((stage, rest))
        else:
            general.append(item)
    return general, staged


def refuse_stage_overrides(overrides: Sequence[str], staged: bool) -> None:
    """Refuse ``stages.NAME.key=value`` overrides for a config that has no ``stages`` list."""
    if not staged and split_overrides(overrides)[1]:
        raise ConfigError("stages.NAME.key=value overrides need a staged config (e.g. --config magic3d)")


def plan_stages(
    stages: Sequence[Any],
    out: Path,
    files: Sequence[str] = (),
    overrides: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> list[Stage]:
    """Every stage's run directory and config: defaults + ``files`` + ``extra`` + the stage's settings +
    ``overrides`` (``stages.NAME.key=value`` ones for that stage only), checked like any run's config;
    a DMTet or texture stage starts from the stage before it."""
    plan: list[Stage] = []
    named = stage_settings(stages)
    if not named:
        raise ConfigError("stages is empty: give at least one stage, or no stages key")
    overrides, staged = split_overrides(overrides)
    names = [n for n, _ in named]
    for stage, item in staged:
        if stage not in names and not (stage.isdigit() and int(stage) < len(names)):
            raise ConfigError(
                f"override stages.{stage}.{item}: no stage {stage!r} (stages: {', '.join(names)})"
            )
    for i, (name, settings) in enumerate(named):
        last = i == len(named) - 1
        where = out if last else out / STAGES_DIR / f"{i + 1}-{name}"
        own = [item for stage, item in staged if stage in (name, str(i))]
        try:
            data = merge_config(
                TextTo3DConfig(),
                files,
                [*overrides, *own],
                free=FREE_KEYS,
                extra={**(extra or {}), **settings},
            )
        except ConfigError as err:
            raise ConfigError(f"stage {name!r}: {err}") from None
        data["stages"] = []
        section = REFINES.get(str(data.get("representation")))
        if section and not data[section].get("init_from"):
            if not plan:
                raise ConfigError(f"stage {name!r} ({section}) refines a finished run: put a stage before it")
            data[section]["init_from"] = str(plan[-1].out.resolve())
        cfg = build(TextTo3DConfig, data)
        try:
            validate(cfg)
        except ConfigError as err:
            raise ConfigError(f"stage {name!r}: {err}") from None
        if plan and cfg.representation == "dmtet" and plan[-1].cfg.representation != "nerf":
            raise ConfigError(f"stage {name!r} refines a NeRF; stage {plan[-1].name!r} is not one")
        plan.append(Stage(name, where, cfg))
    return plan


def save_plan(out: Path, plan: Sequence[Stage]) -> None:
    """``OUT/stages.yaml``: every stage's name, directory (relative to ``OUT``) and resolved config."""
    rows = [{"name": s.name, "dir": relative(s.out, out), "config": to_dict(s.cfg)} for s in plan]
    OmegaConf.save(OmegaConf.create({"stages": rows}), out / STAGES_FILE)


def load_plan(out: Path) -> list[Stage]:
    """The stages saved in ``OUT/stages.yaml`` (ConfigError when ``out`` holds no staged run)."""
    path = out / STAGES_FILE
    if not path.is_file():
        raise ConfigError(f"{str(out)!r} holds no staged run (no {STAGES_FILE})")
    rows = OmegaConf.to_container(OmegaConf.load(path), resolve=True)["stages"]  # type: ignore[index]
    return [Stage(r["name"], out / r["dir"], build(TextTo3DConfig, r["config"])) for r in rows]


def relative(path: Path, out: Path) -> str:
    """``path`` relative to the staged run's directory ``out`` (``.`` for ``out`` itself)."""
    return "." if path == out else str(path.relative_to(out))


def is_finished(run_dir: Path) -> bool:
    """Whether a stage's run directory holds a finished run (metrics written, no INCOMPLETE marker)."""
    return (run_dir / "metrics.json").is_file() and not (run_dir / INCOMPLETE).exists()


def stage_summary(stage: Stage, out: Path, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers of one stage that ``OUT/metrics.json`` lists: steps, Picard rounds, time, scores."""
    row: dict[str, Any] = {"name": stage.name, "dir": relative(stage.out, out)}
    row["representation"] = stage.cfg.representation
    for key in ("steps", "window", "iterations", "rounds_speedup", "units_per_step", "wall_clock_s"):
        if key in metrics:
            row[key] = metrics[key]
    scores = stage.out / "eval.json"
    if scores.is_file():
        values = json.loads(scores.read_text()).items()
        row["eval"] = {
            k: v for k, v in values if isinstance(v, int | float) and not isinstance(v, bool) and k != "views"
        }
    return row


def run_stages(
    plan: Sequence[Stage],
    out: Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    exports: bool = True,
) -> dict[str, Any]:
    """Run every stage of ``plan`` into ``out`` (skipping finished ones and resuming an interrupted one
    when ``resume``); returns the last stage's metrics with ``stages``: one summary per stage.
    ``exports=False`` skips every stage's video and meshes (a later stage starts from its
    predecessor's checkpoint, so benchmarks need none)."""
    from dreampropeller.runs.driver import run_text_to_3d

    out = Path(out)
    if not resume:
        prepare_output(out, overwrite)
        if out.exists() and overwrite:
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / INCOMPLETE).write_text("this staged run has not finished; resume it with --resume\n")
        save_plan(out, plan)
    summaries: list[dict[str, Any]] = []
    metrics: dict[str, Any] = {}
    for i, stage in enumerate(plan):
        if resume and is_finished(stage.out):
            metrics = json.loads((stage.out / "metrics.json").read_text())
        else:
            again = resume and (stage.out / "checkpoint.safetensors").is_file()
            kind = f"{stage.cfg.representation}, {stage.cfg.steps} steps"
            what = f"stage {i + 1}/{len(plan)} {stage.name} ({kind})"
            if progress:
                print(what)
            log(out, f"{what}: {'resume' if again else 'start'} in {stage.out}")
            metrics = run_text_to_3d(
                stage.cfg, stage.out, resume=again, progress=progress, exports=exports, existing_ok=True
            )
        summaries.append(stage_summary(stage, out, metrics))
    metrics = {**metrics, "stages": summaries}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / INCOMPLETE).unlink(missing_ok=True)
    return metrics
