"""The registry of builders: exactly the ``_target_``s the shipped configs name, each under its own group."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra._internal.utils import _locate
from omegaconf import OmegaConf

from mtlssl.builders import BUILDERS, group_of
from mtlssl.config import config_dir
from mtlssl.weighting import METHODS

CONF = config_dir()


def package_of(yaml: Path) -> str:
    """Where Hydra puts a config file's keys: the root for ``# @package _global_`` and the primary configs,
    else its group's path (``encoder/small_cnn.yaml`` -> ``encoder``)."""
    header = yaml.read_text().splitlines()[:3]
    group = yaml.parent.relative_to(CONF)
    if any("@package _global_" in line for line in header) or group == Path("."):
        return ""
    return ".".join(group.parts)


def targets(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """(key of the node, target) of every ``_target_`` at any depth of a config file, as written (unresolved)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_":
                yield path, value
            else:
                yield from targets(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from targets(item, f"{path}[{i}]")


def shipped_targets() -> list[tuple[Path, str, str]]:
    """(file, key, target) for every ``_target_`` in conf/**/*.yaml."""
    found = []
    for yaml in sorted(CONF.rglob("*.yaml")):
        content = OmegaConf.to_container(OmegaConf.load(yaml), resolve=False)
        found += [(yaml, key, target) for key, target in targets(content, package_of(yaml))]
    return found


def test_every_target_of_every_config_option_is_registered_under_its_group() -> None:
    found = shipped_targets()
    written = sum(line.strip().startswith("_target_:") for yaml in CONF.rglob("*.yaml")
                  for line in yaml.read_text().splitlines())
    assert len(found) == written > 0  # the walk sees every target written, the run-dir guard callback included
    for yaml, key, target in found:
        group = group_of(key)
        assert group is not None, f"{yaml}: {key}._target_ is under no group of mtlssl.builders"
        assert target in BUILDERS[group], f"{yaml}: {key}._target_={target} is not a registered {group} builder"


def test_the_registry_holds_only_what_the_configs_name() -> None:
    named: dict[str, set[str]] = {group: set() for group in BUILDERS}
    for _, key, target in shipped_targets():
        named[group_of(key)].add(target)  # type: ignore[index]
    assert {group: set(names) for group, names in BUILDERS.items()} == named


@pytest.mark.parametrize("name", sorted(name for names in BUILDERS.values() for name in names))
def test_every_registered_name_is_a_callable_of_mtlssl_or_torch(name: str) -> None:
    assert name.startswith(("mtlssl.", "torch.optim.")) and callable(_locate(name))


def test_the_weighting_builders_are_the_registered_methods() -> None:
    assert BUILDERS["weighting"] == {f"{cls.__module__}.{cls.__qualname__}" for cls in METHODS.values()}


@pytest.mark.parametrize("path,group", [
    ("data", "data"), ("data.extra", "data"), ("data._args_[0]", "data"), ("encoder.arch", "encoder.arch"),
    ("encoder", None), ("pretrain.optim", "optim"), ("train_mtl.augmentation", "augmentation"),
    ("optim.data", "optim"), ("hydra.callbacks.run_dir_guard", "hydra.callbacks"), ("trainer", None), ("", None),
    ("database", None),
])
def test_a_target_belongs_to_the_first_group_on_its_path(path: str, group: str | None) -> None:
    assert group_of(path) == group
