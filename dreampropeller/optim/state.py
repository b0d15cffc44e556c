"""Naming of optimizer state inside a flat Picard state, and splitting / merging of such states.

Optimizer entries are ``"optim/<slot>/<param>"`` (e.g. ``optim/exp_avg/encoding.grid``), so they can
never clash with a parameter name that does not itself start with ``optim/``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import Tensor

from .errors import OptimConfigError

PREFIX = "optim/"
STEP = "step"


def state_key(slot: str, param: str) -> str:
    """The flat-state key of optimizer slot ``slot`` (``exp_avg``, ``step``, ...) of parameter ``param``."""
    return f"{PREFIX}{slot}/{param}"


def is_optim_key(key: str) -> bool:
    """True for keys that hold optimizer state."""
    return key.startswith(PREFIX)


def param_of(key: str) -> str:
    """The parameter an optimizer-state key belongs to (``optim/exp_avg/a.b`` -> ``a.b``)."""
    if not is_optim_key(key) or "/" not in key[len(PREFIX) :]:
        raise OptimConfigError(f"{key!r} is not an optimizer-state key (expected 'optim/<slot>/<param>')")
    return key[len(PREFIX) :].split("/", 1)[1]


def managed_params(x: Mapping[str, Tensor]) -> list[str]:
    """Parameters of ``x`` that carry optimizer state (those with an ``optim/step/<name>`` entry)."""
    marker = PREFIX + STEP + "/"
    return [k[len(marker) :] for k in x if k.startswith(marker)]


def split_state(
    x: Mapping[str, Tensor], param_keys: Iterable[str] | None = None
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
    """Split a flat state into ``(params, opt_state, rest)`` without copying tensors.

    ``param_keys`` defaults to the parameters that carry optimizer state (:func:`managed_params`).
    """
    keys = list(managed_params(x) if param_keys is None else param_keys)
    missing = [k for k in keys if k not in x]
    if missing:
        raise OptimConfigError(f"parameter(s) {missing} are not in the state; pass keys that exist")
    params = {k: x[k] for k in keys}
    opt_state = {k: v for k, v in x.items() if is_optim_key(k)}
    rest = {k: v for k, v in x.items() if k not in params and k not in opt_state}
    return params, opt_state, rest


def merge_state(*parts: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """One flat state from disjoint parts (a key in two parts is an error)."""
    out: dict[str, Tensor] = {}
    for part in parts:
        clash = [k for k in part if k in out]
        if clash:
            raise OptimConfigError(f"state parts overlap on {clash}; give each entry one owner")
        out.update(part)
    return out
