"""Loading a run configuration: dataclass defaults, YAML files and ``key=value`` overrides (OmegaConf).

Defaults come from the dataclasses; a YAML file and overrides are merged on top. Unknown keys are an
error naming the key (a typo must not silently do nothing).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A bad config file, key or value."""


def to_dict(obj: Any) -> Any:
    """Dataclasses -> plain dicts / lists (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    return obj


def _check_keys(defaults: Mapping[str, Any], given: Mapping[str, Any], prefix: str, free: set[str]) -> None:
    for key, value in given.items():
        name = f"{prefix}{key}"
        if key not in defaults:
            raise ConfigError(f"unknown config key {name!r}; valid keys here: {', '.join(sorted(defaults))}")
        if name in free:
            continue
        if isinstance(defaults[key], Mapping) and isinstance(value, Mapping):
            _check_keys(defaults[key], value, name + ".", free)


def resolve_config_path(name: str) -> Path:
    """A config file path, or a bundled config by name (``dreamfusion-sd`` -> configs/dreamfusion-sd.yaml)."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {name!r} not found")
        return path
    bundled = CONFIG_DIR / f"{name}.yaml"
    if not bundled.is_file():
        names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(
            f"no config file {name!r} and no bundled config of that name (bundled: {', '.join(names)})"
        )
    return bundled


def with_prior_overlays(files: Sequence[str], prior: str) -> list[str]:
    """``files`` with, after each bundled config ``NAME``, its overlay for ``prior`` when one is shipped
    (``configs/<prior>/NAME.yaml``: the recipe sized for that prior, e.g. ProlificDreamer on the
    embedded tiny prior)."""
    out: list[str] = []
    for name in files:
        out.append(name)
        path = Path(name)
        overlay = CONFIG_DIR / str(prior) / f"{name}.yaml"
        if path.suffix not in (".yaml", ".yml") and not path.exists() and overlay.is_file():
            out.append(str(overlay))
    return out


def merge_config(
    defaults: Any,
    files: Sequence[str] = (),
    overrides: Sequence[str] = (),
    free: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
    overlays: bool = True,
) -> dict[str, Any]:
    """Defaults (a dataclass) + YAML files + ``extra`` + ``key=value`` overrides, checked for unknown keys.

    Keys in ``free`` (dotted) are free-form mappings whose contents are not checked. A bundled config
    with an overlay for the merged ``prior`` (:func:`with_prior_overlays`) gets it right after it
    (``overlays=False``: never).
    """
    base = to_dict(defaults)
    merged = OmegaConf.create(base)
    layers: list[Any] = []
    for name in files:
        path = resolve_config_path(name)
        try:
            layers.append(OmegaConf.load(path))
        except Exception as err:  # yaml.YAMLError, OSError, OmegaConf errors: all one line for the user
            raise ConfigError(f"cannot read config file {str(path)!r}: {str(err).splitlines()[0]}") from None
    if extra:
        layers.append(OmegaConf.create(dict(extra)))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
    try:
        if overrides:
            layers.append(OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as err:
        raise ConfigError(f"bad override: {str(err).splitlines()[0]}") from None
    for layer in layers:
        plain = OmegaConf.to_container(layer, resolve=True)
        if not isinstance(plain, dict):
            raise ConfigError("a config must be a mapping of keys to values")
        _check_keys(base, plain, "", set(free))
        merged = OmegaConf.merge(merged, layer)
    out = OmegaConf.to_container(merged, resolve=True)
    assert isinstance(out, dict)
    if overlays:
        layered = with_prior_overlays(files, out.get("prior", ""))  # e.g. prolificdreamer on the tiny prior
        if len(layered) > len(files):
            return merge_config(defaults, layered, overrides, free, extra, overlays=False)
    return out


def build(cls: type, data: Mapping[str, Any]) -> Any:
    """A dataclass instance from a (nested) dict: nested dataclass fields are built recursively."""
    kwargs = {}
    hints = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in data.items():
        f = hints[key]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore[misc]
        if dataclasses.is_dataclass(default) and isinstance(value, Mapping):
            kwargs[key] = build(type(default), value)
        elif isinstance(default, tuple) and isinstance(value, list):
            kwargs[key] = tuple(value)
        elif isinstance(default, float) and not isinstance(default, bool) and isinstance(value, int | str):
            try:
                kwargs[key] = float(value)  # YAML reads "nan", "1e-3" without a dot as strings
            except ValueError:
                raise ConfigError(f"{cls.__name__}.{key} must be a number, got {value!r}") from None
        elif isinstance(default, int) and not isinstance(default, bool) and isinstance(value, str):
            try:
                kwargs[key] = int(value)
            except ValueError:
                raise ConfigError(f"{cls.__name__}.{key} must be an integer, got {value!r}") from None
        else:
            kwargs[key] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"bad value in config section {cls.__name__}: {err}") from None
