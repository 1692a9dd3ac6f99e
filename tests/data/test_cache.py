"""The decode cache: built once, never trusted when a file is not the entry asked for (rebuilt with a warning
naming it), cache advice when it cannot be written, and a run's results independent of its state."""

from __future__ import annotations

import errno
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import mtlssl.io
from mtlssl.data.cache import cached, images_and_labels, images_and_targets, uint8_images
from mtlssl.data.imagefolder import imagefolder
from mtlssl.data.shapes import shapes
from mtlssl.reproduce import read_metrics, verdict
from mtlssl.stages import train_mtl
from tests.conftest import TINY_ENCODER, TINY_TRAIN, compose_config
from tests.data.test_build import assert_same_data, write_folder_images, write_manifest

KEY = {"name": "toy", "n": 3}


def toy() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    return torch.arange(3 * 4, dtype=torch.uint8).reshape(3, 1, 2, 2), {"t": torch.arange(3)}


def counting(build: Callable[[], Any]) -> tuple[Callable[[], Any], list[int]]:
    calls: list[int] = []

    def counted() -> Any:
        calls.append(1)
        return build()
    return counted, calls


def same_toy(value: Any) -> bool:
    images, targets = toy()
    return torch.equal(value[0], images) and torch.equal(value[1]["t"], targets["t"])


def entry_file(cache: Path) -> Path:
    (path,) = cache.glob("toy-*.pt")
    return path


def test_builds_once_and_caching_off_builds_every_time(tmp_path: Path) -> None:
    build, calls = counting(toy)
    assert same_toy(cached(KEY, build, tmp_path, images_and_targets))
    assert same_toy(cached(KEY, build, tmp_path, images_and_targets)) and len(calls) == 1
    cached(KEY, build, None, images_and_targets)
    assert len(calls) == 2


def _list(path: Path) -> None:
    torch.save(["not", "an", "entry"], path)


def _tensor(path: Path) -> None:
    torch.save(torch.zeros(3), path)


def _one_tuple(path: Path) -> None:  # the shape that said "not enough values to unpack"
    torch.save((torch.zeros(2, 1, 2, 2, dtype=torch.uint8),), path)


def _old_format(path: Path) -> None:  # a bare value, as the first cache format stored it
    torch.save(toy(), path)


def _float_images(path: Path) -> None:  # the right key around a value of the wrong kind
    entry = torch.load(path, weights_only=True)
    entry["value"] = (entry["value"][0].float(), entry["value"][1])
    torch.save(entry, path)


def _short_targets(path: Path) -> None:
    entry = torch.load(path, weights_only=True)
    entry["value"][1]["t"] = torch.arange(2)
    torch.save(entry, path)


def _other_data(path: Path) -> None:  # another dataset's entry, copied over this one
    other = cached({"name": "other", "n": 2}, lambda: (torch.zeros(2, 1, 2, 2, dtype=torch.uint8), {}),
                   path.parent / "elsewhere", images_and_targets)
    assert other[0].shape[0] == 2
    shutil.copy(next((path.parent / "elsewhere").glob("other-*.pt")), path)


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _garbage(path: Path) -> None:
    path.write_bytes(b"garbage")


@pytest.mark.parametrize("spoil", [_list, _tensor, _one_tuple, _old_format, _float_images, _short_targets,
                                   _other_data, _truncated, _empty, _garbage])
def test_a_file_that_is_not_the_entry_is_rebuilt_with_a_warning_naming_it(
        spoil: Callable[[Path], None], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    build, calls = counting(toy)
    cached(KEY, build, tmp_path, images_and_targets)
    path = entry_file(tmp_path)
    spoil(path)
    with caplog.at_level(logging.WARNING, logger="mtlssl.data.cache"):
        assert same_toy(cached(KEY, build, tmp_path, images_and_targets)) and len(calls) == 2
    (warning,) = [r.getMessage() for r in caplog.records]
    assert str(path) in warning and "delete the file" in warning
    assert same_toy(cached(KEY, build, tmp_path, images_and_targets)) and len(calls) == 2, "the file was replaced"


def test_a_folder_in_place_of_the_file_is_rebuilt_every_time(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    build, calls = counting(toy)
    cached(KEY, build, tmp_path, images_and_targets)
    path = entry_file(tmp_path)
    path.unlink()
    (path / "inside").mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="mtlssl.data.cache"):
        assert same_toy(cached(KEY, build, tmp_path, images_and_targets))
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert str(path) in messages and "delete the file" in messages and "data.cache_dir" in messages
    assert (path / "inside").is_dir(), "nothing of the user's is removed"


@pytest.mark.parametrize("family", ["shapes", "imagefolder"])
def test_a_real_builder_rebuilds_a_cache_file_of_the_wrong_type(family: str, tmp_path: Path) -> None:
    """The probe's case: a valid torch file holding a list where a builder expects a pair (or a tensor)."""
    root = tmp_path / "images"
    write_folder_images(root)
    build: Callable[[Path | None], Any] = {
        "shapes": lambda cache: shapes(size=8, n_unlabeled=4, n_train=4, n_val=2, n_test=2, cache_dir=cache),
        "imagefolder": lambda cache: imagefolder(str(root), size=8, num_workers=0, cache_dir=cache),
    }[family]
    cache = tmp_path / "cache"
    build(cache)
    for path in cache.iterdir():
        torch.save([torch.zeros(1)], path)
    assert_same_data(build(cache), build(None))


def _file_in_the_way(cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("in the way")
    return cache / "sub"


def _read_only_filesystem(cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    def refuse(src: object, dst: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(mtlssl.io.os, "replace", refuse)
    return cache


@pytest.mark.parametrize("unwritable", [_file_in_the_way, _read_only_filesystem])
def test_an_unwritable_cache_is_slower_not_fatal_and_the_warning_says_what_to_do_with_the_cache(
        unwritable: Callable[[Path, pytest.MonkeyPatch], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    cache = unwritable(tmp_path / "cache", monkeypatch)
    with caplog.at_level(logging.WARNING, logger="mtlssl.data.cache"):
        assert same_toy(cached(KEY, toy, cache, images_and_targets))
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "could not write cache file" in warning and str(cache) in warning
    assert "data.cache_dir" in warning and "$MTLSSL_CACHE" in warning and "data.cache_dir=null" in warning
    assert "hydra.run.dir" not in warning and "relaunch" not in warning, "run-directory advice for a cache"
    assert not list(tmp_path.rglob(".*.tmp*")), "no temporary file left behind"


U8 = torch.zeros(2, 1, 3, 3, dtype=torch.uint8)


@pytest.mark.parametrize(("check", "value", "problem"), [
    (uint8_images, U8, None),
    (uint8_images, U8.float(), "float32"),
    (uint8_images, U8[0], "[1, 3, 3]"),
    (uint8_images, [U8], "a list of 1 items"),
    (images_and_labels, (U8, torch.arange(2)), None),
    (images_and_labels, (U8,), "not a pair"),
    (images_and_labels, (U8, torch.arange(3)), "labels"),
    (images_and_labels, (U8, "labels"), "labels a str"),
    (images_and_targets, (U8, {"a": torch.arange(2), "b": torch.zeros(2, 3)}), None),
    (images_and_targets, (U8, {}), None),
    (images_and_targets, (U8, [torch.arange(2)]), "targets a list"),
    (images_and_targets, (U8, {"a": torch.tensor(1.0)}), "targets 'a'"),
    (images_and_targets, {"images": U8}, "a dict with keys ['images']"),
])
def test_each_check_names_what_is_wrong(check: Callable[[Any], str | None], value: Any, problem: str | None) -> None:
    found = check(value)
    assert found is None if problem is None else problem in found


# --- a run's results do not depend on the state of the cache ------------------------------------------------


def _prepare(family: str, root: Path) -> list[str]:
    """Write ``family``'s tiny data under ``root``; the data overrides of a train-mtl run on it."""
    if family == "csv":
        manifest = write_manifest(root)
        return ["data=csv", f"data.manifest={manifest}", "data.num_workers=0",
                "data.tasks={label: {kind: binary, column: label}}"]
    if family == "imagefolder":
        write_folder_images(root)
        return ["data=imagefolder", f"data.root={root}", "data.num_workers=0"]
    return ["data.n_unlabeled=16", "data.n_train=16", "data.n_val=8", "data.n_test=8"]  # shapes


def _results(run_dir: Path) -> dict[str, Any]:
    """metrics.json without its throughput numbers (wall-clock speed is not a result)."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if not k.endswith("_per_s")}
        return [strip(v) for v in value] if isinstance(value, list) else value
    return strip(json.loads((run_dir / "metrics.json").read_text()))


@pytest.mark.parametrize("family", ["csv", "imagefolder", "shapes"])
def test_train_mtl_gives_the_same_metrics_with_a_cold_a_warm_and_no_cache(family: str, tmp_path: Path) -> None:
    data = _prepare(family, tmp_path / "data")
    cache = tmp_path / "cache"
    runs = {}
    for name, cache_dir in (("cold", cache), ("warm", cache), ("none", "null")):
        cfg = compose_config("train_mtl", ["device=cpu", *TINY_ENCODER, *TINY_TRAIN, "trainer.batch_size=4",
                                           "data.size=8", *data, f"data.cache_dir={cache_dir}"])
        train_mtl.run(cfg, tmp_path / name)
        runs[name] = tmp_path / name
        if name == "cold":
            assert any(cache.iterdir()), "the cold run filled the cache"
    assert _results(runs["cold"]) == _results(runs["warm"]) == _results(runs["none"])
    for name in ("warm", "none"):  # what `mtlssl reproduce` would say
        assert verdict(read_metrics(runs["cold"]), read_metrics(runs[name])).startswith("identical")
