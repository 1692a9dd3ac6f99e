"""Where the configs live, and the one guarded way to instantiate objects from them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import hydra.utils
from omegaconf import DictConfig, ListConfig, OmegaConf

from mtlssl.builders import BUILDERS, group_of
from mtlssl.errors import UserError

MAX_DIRNAME = 120  # longer override lists are shortened with a hash: file names stop at 255 bytes


def sweep_subdir(overrides: str, seed: Any) -> str:
    """A sweep job's directory, ``<overrides without seed>/seed=<n>``: readable, grouped by setting, and
    unique per job. No overrides -> ``default``; a very long override list keeps its start plus a hash."""
    name = overrides.replace("/", "_") or "default"
    if len(name) > MAX_DIRNAME:
        name = f"{name[:MAX_DIRNAME - 11]}-{hashlib.sha1(name.encode()).hexdigest()[:10]}"
    return f"{name}/seed={seed}"


OmegaConf.register_new_resolver("mtlssl_sweep_subdir", sweep_subdir, replace=True)


# Overrides that say how a job runs, not what it trains (conf/common.yaml leaves them out of sweep directory
# names too): summarize does not group by them and reproduce does not replay them.
RUN_MANAGEMENT_KEYS = ("resume", "sweep_name", "objective", "launcher", "hparams_search")


def override_key(override: str) -> str:
    """The config key a command-line override sets (``+a.b=1``, ``~a.b`` and ``++a.b=1`` all set ``a.b``)."""
    return override.split("=", 1)[0].lstrip("+~")


def config_dir() -> Path:
    """The packaged configs (``mtlssl/conf`` in a wheel) or the source tree's ``conf/`` (editable installs)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "train_mtl.yaml").is_file():
            return candidate
    raise RuntimeError(f"mtlssl's configs are missing (looked in {here / 'conf'} and {here.parent / 'conf'}); "
                       "reinstall mtlssl")


def _where(origin: str | None) -> str:
    return f" (in {origin})" if origin else ""


def resolved(node: Any, key: str, origin: str | None = None) -> Any:
    """``node`` as plain data with every interpolation resolved (``${oc.env:X}``, ``${other.key}``): what Hydra
    builds from it. A value that does not resolve is a UserError naming ``key``."""
    if not isinstance(node, (DictConfig, ListConfig)):
        return node
    try:
        return OmegaConf.to_container(node, resolve=True)
    except Exception as err:  # a missing key or variable, a loop, a resolver's own error: all name the key
        raise UserError(f"{key}{_where(origin)} does not resolve: {err}; fix or remove that value") from err


def _targets(plain: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(config key, value) of every ``_target_`` in plain data, at any depth (``_args_`` and other lists too)."""
    if isinstance(plain, dict):
        for key, value in plain.items():
            if key == "_target_":
                yield path, value
            else:
                yield from _targets(value, f"{path}.{key}" if path else str(key))
    elif isinstance(plain, list):
        for i, item in enumerate(plain):
            yield from _targets(item, f"{path}[{i}]")


def _interpolations(plain: Any, path: str) -> Iterator[tuple[str, str]]:
    """Strings that still read as an interpolation once resolved (``${oc.env:X}`` with X='${other}', an escaped
    ``\\${...}``): Hydra would resolve them again, after the targets were checked."""
    if isinstance(plain, str) and "${" in plain:
        yield path, plain
    elif isinstance(plain, dict):
        for key, value in plain.items():
            yield from _interpolations(value, f"{path}.{key}")
    elif isinstance(plain, list):
        for i, item in enumerate(plain):
            yield from _interpolations(item, f"{path}[{i}]")


def check_target(key: str, target: Any, group: str, origin: str | None = None) -> None:
    """Refuse a ``_target_`` that is not one of ``group``'s builders (mtlssl.builders.BUILDERS), by exact name."""
    allowed = BUILDERS[group]
    if not (isinstance(target, str) and target in allowed):
        raise UserError(f"{key}._target_={target} is not allowed{_where(origin)}: {group} may only name "
                        f"{', '.join(sorted(allowed))} (a new builder is added to mtlssl/builders.py)")


def checked(node: DictConfig | Mapping[str, Any], group: str, origin: str | None = None,
            key: str | None = None) -> DictConfig:
    """``node`` resolved, with every ``_target_`` at any depth checked against ``group``'s builders: the plain
    config that ``instantiate`` hands to Hydra, so what was checked is exactly what is built. ``key``: the node's
    config key in the errors (default: ``group``)."""
    key = key or group
    plain = resolved(node if isinstance(node, DictConfig) else OmegaConf.create(dict(node)), key, origin)
    for path, value in _interpolations(plain, key):
        raise UserError(f"{path}={value!r}{_where(origin)} is still an interpolation once resolved, which building "
                        f"{group} would resolve again; write the value itself")
    for path, target in _targets(plain, key):
        check_target(path, target, group, origin)
    return OmegaConf.create(plain)


def check_config_targets(cfg: DictConfig, origin: str | None = None) -> None:
    """Every ``_target_`` anywhere in ``cfg`` names a builder of the group it sits in (``pretrain.optim._target_``:
    an optimizer); one under no group is refused too. A stage checks its whole config before it builds anything.
    A ``hydra`` node (present when composed with ``return_hydra_config``) is Hydra's own and left out: only the
    command line and config files set it, and reproduce checks the callbacks of a replay itself."""
    task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]) if "hydra" in cfg else cfg
    check_plain_targets(resolved(task, "the config", origin), origin)


def check_plain_targets(plain: Any, origin: str | None = None) -> None:
    """``check_config_targets`` of a config already resolved to plain data."""
    for path, target in _targets(plain, ""):
        group = group_of(path)
        if group is None:
            raise UserError(f"{path or '<top level>'}._target_={target}{_where(origin)}: no builder may be named "
                            f"there; only the nodes of {', '.join(BUILDERS)} build objects")
        check_target(path, target, group, origin)


def instantiate(node: DictConfig | Mapping[str, Any], group: str, origin: str | None = None, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` of a node of config group ``group`` (its key, for the errors), once every
    ``_target_`` in it, at any depth and after resolving, is one of the group's builders. ``origin`` says where a
    config that did not come from the command line was read (e.g. a checkpoint)."""
    node = checked(node, group, origin)
    try:
        # plain containers, not OmegaConf ones: what is built (an optimizer's betas) ends up in checkpoints
        return hydra.utils.instantiate(node, _convert_="all", **kwargs)
    except hydra.errors.InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        raise UserError(f"cannot build {group}{_where(origin)}: {cause or err}") from err


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python data (safe to store in a weights-only checkpoint)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def _kind(value: Any) -> str | None:
    """The type an override must keep: bool, integer, number, list or mapping; None when anything goes (a string,
    or a default of null, whose type is unknown)."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, (list, ListConfig)):
        return "a list"
    if isinstance(value, (dict, DictConfig)):
        return "a mapping"
    return None


def _fits(value: Any, kind: str) -> bool:
    if value is None:  # null is allowed everywhere (e.g. trainer.grad_clip=null)
        return True
    checks = {"true or false": lambda v: isinstance(v, bool),
              "an integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "a number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "a list": lambda v: isinstance(v, (list, ListConfig)), "a mapping": lambda v: isinstance(v, (dict,
                                                                                                         DictConfig))}
    return checks[kind](value)


def check_override_types(cfg: DictConfig, defaults: DictConfig, overrides: list[str]) -> None:
    """Refuse a command-line value whose type differs from its default's (``optim.lr=abc``, ``trainer.epochs=2.5``):
    one message naming the key, what it needs and its default, instead of a traceback deep in the run.
    ``defaults`` is the same config composed without the value overrides."""
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or key.startswith(("~", "hydra.", "+hydra.")):
            continue
        key = override_key(override)
        default, value = OmegaConf.select(defaults, key, default=None), OmegaConf.select(cfg, key, default=None)
        kind = _kind(default)
        if kind is not None and not _fits(value, kind):
            shown = (json.dumps(OmegaConf.to_container(default), separators=(",", ":"))
                     if isinstance(default, (DictConfig, ListConfig)) else str(default).lower()
                     if isinstance(default, bool) else default)
            raise UserError(f"{key}={raw}: {key} needs {kind} (its default is {shown}); write e.g. {key}={shown}")
