"""Where the configs live, and the one guarded way to instantiate objects from them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import hydra.utils
from omegaconf import DictConfig, ListConfig, OmegaConf

from mtlssl.errors import UserError

ALLOWED_TARGETS = ("mtlssl.", "torch.", "torchvision.")
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


def _check_targets(node: Any, where: str, extra: tuple[str, ...]) -> None:
    if isinstance(node, DictConfig):
        target = node.get("_target_")
        if target is not None and not str(target).startswith(ALLOWED_TARGETS + extra):
            raise UserError(f"{where}._target_={target} is not allowed: configs may only build objects from "
                            f"{', '.join(ALLOWED_TARGETS + extra)}; add its module prefix to allowed_targets "
                            "if you trust it")
        for key in node:
            _check_targets(node._get_node(key), f"{where}.{key}", extra)
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            _check_targets(item, f"{where}[{i}]", extra)


def instantiate(node: DictConfig, where: str, allowed: tuple[str, ...] = (), **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` for trusted targets only; ``where`` names the config key in errors."""
    _check_targets(node, where, tuple(allowed))
    try:
        # plain containers, not OmegaConf ones: what is built (an optimizer's betas) ends up in checkpoints
        return hydra.utils.instantiate(node, _convert_="all", **kwargs)
    except hydra.errors.InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        raise UserError(f"cannot build {where}: {cause or err}") from err


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
