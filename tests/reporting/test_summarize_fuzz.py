"""Fuzzing ``mtlssl summarize``'s reader: any content of ``.hydra/overrides.yaml`` and ``metrics.json`` makes a
run ``Failed`` (with a reason) or a ``Run``; it never raises, never hangs, and the summary is still written."""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mtlssl.errors import UserError
from mtlssl.reporting import summarize as summ
from mtlssl.reporting.console import console

pytestmark = pytest.mark.filterwarnings("ignore:Glyph .* missing from font:UserWarning")  # random text in plots

# Reproducible in CI (no example database, derandomized) and quick: a few seconds per test on 2 cores.
FUZZ = settings(max_examples=250, deadline=5000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

# ---- strategies --------------------------------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=10**300, max_value=10**320)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20))
# Text without "$": matplotlib reads $...$ in plot labels as mathtext (see test_dollar_signs_in_labels below).
safe_text = st.text(st.characters(exclude_characters="$"), max_size=12)
override = (st.sampled_from(["seed=0", "seed=1", "weighting=equal", "weighting=pcgrad", "tasks=[shape]",
                             "hydra.run.dir=x", "+a.b=1", "~c", "device=cpu", "=", ""])
            | safe_text | st.builds("{}={}".format, safe_text, safe_text))
metric_key = (st.builds("{}/{}/{}".format, st.sampled_from(["test", "val", "tes", ""]),
                        st.sampled_from(["shape", "size", "", "a/b"]) | safe_text,
                        st.sampled_from(["accuracy", "mae", "loss", "macro_f1", ""]) | safe_text)
              | safe_text)
metric_value = (st.floats(allow_nan=True, allow_infinity=True) | st.integers() | st.booleans() | st.none()
                | st.integers(min_value=10**300, max_value=10**400) | st.text(max_size=5) | st.lists(st.integers()))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def metrics_dict() -> st.SearchStrategy[dict]:
    """A metrics.json object: train-mtl's flat keys, or a pipeline's nested per-init results."""
    flat = st.dictionaries(metric_key, metric_value, max_size=6)
    pipeline = st.fixed_dictionaries({"stage": st.sampled_from(["pipeline", "train_mtl", 3])},
                                     optional={"pretrained": flat | json_values, "scratch": flat | json_values})
    return flat | pipeline


def alias_bomb(width: int, depth: int, as_list: bool) -> str:
    """A YAML "billion laughs": ``depth`` levels of ``width`` aliases each to the level below."""
    lines = [f"{'- ' if as_list else 'l0: '}&l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, depth + 1):
        refs = ", ".join([f"*l{i - 1}"] * width)
        lines.append(f"{'- ' if as_list else f'l{i}: '}&l{i} [{refs}]")
    return "\n".join(lines) + "\n"


def deep(n: int, opening: str, closing: str) -> str:
    return opening * n + closing * n


overrides_text = st.one_of(
    st.lists(override, max_size=5).map(lambda os: yaml.safe_dump(os, allow_unicode=True)),
    json_values.map(lambda v: yaml.safe_dump(v, allow_unicode=True)),
    st.text(max_size=60),
    st.builds(alias_bomb, st.integers(1, 9), st.integers(1, 12), st.booleans()),
    st.builds(deep, st.integers(1, 1200), st.just("["), st.just("]")),
    st.builds(deep, st.integers(1, 1200), st.just("{a: "), st.just("}")),
    st.integers(1, 3000).map(lambda n: "- " * n + "x"),  # block nesting: RecursionError past the limit
    st.sampled_from(["- &a seed=1\n- *a\n", "!!python/object:os.system ls\n", "- !!binary aGk=\n", "? [a]\n: b\n",
                     "--- a\n--- b\n", "%YAML 9.9\n---\n- a\n", '- "\\ud800=x"\n', "\ufeff- seed=1\n"]),
).map(str.encode) | st.binary(max_size=60)

metrics_text = st.one_of(
    metrics_dict().map(lambda d: json.dumps(d, allow_nan=True)),
    json_values.map(lambda v: json.dumps(v, allow_nan=True)),
    st.text(max_size=60),
    st.builds(deep, st.integers(1, 200_000), st.just("["), st.just("]")),
    st.builds("{{\"test/a/accuracy\": 1{}}}".format, st.integers(300, 6000).map(lambda n: "0" * n)),
    st.sampled_from(['{"test/a/accuracy": NaN, "test/a/mae": -Infinity}', '{"test/a/accuracy": 0.', "",
                     '{"test/\\ud800/accuracy": 0.5}', '{"test/a/accuracy": 1e999}', "null", "[]", '"x"']),
).map(str.encode) | st.binary(max_size=60)
good_metrics = st.dictionaries(st.builds("test/{}/{}".format, st.sampled_from(["shape", "size", "colour"]),
                                         st.sampled_from(["accuracy", "macro_f1", "mae", "rmse", "auroc"])),
                               st.floats(0, 1) | st.sampled_from([1e308, -1.7e308, 1e300, 5e-324]),
                               min_size=1, max_size=4)
good_run = st.tuples(st.lists(override, max_size=4).map(lambda os: yaml.safe_dump(os).encode()),
                     good_metrics.map(lambda d: json.dumps(d).encode())
                     | good_metrics.map(lambda d: json.dumps({"stage": "pipeline", "pretrained": d}).encode()))
fuzzed_run = st.tuples(overrides_text, st.none() | metrics_dict().map(lambda d: json.dumps(d).encode()) | metrics_text)


# ---- helpers -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("summarize_fuzz")


@pytest.fixture(autouse=True)
def quiet_console(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(console, "quiet", True)  # hundreds of tables would only slow the run down
    yield


def write_run(path: Path, overrides: bytes, metrics: bytes | None) -> Path:
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_bytes(overrides)
    if metrics is not None:
        (path / "metrics.json").write_bytes(metrics)
    return path


def check_loaded(loaded: list[summ.Run | summ.Failed], path: Path) -> None:
    """What load_run promises: at least one result, all for ``path``, runs with finite metrics, writable text."""
    assert loaded and all(isinstance(r, summ.Run | summ.Failed) and r.path == path for r in loaded)
    for r in loaded:
        if isinstance(r, summ.Failed):
            assert r.reason
            r.reason.encode("utf-8")
            continue
        assert r.metrics and all(math.isfinite(v) and isinstance(v, float) for v in r.metrics.values())
        assert all(k.count("/") >= 1 and "loss" not in k.split("/")[-1] for k in r.metrics)
        assert all(isinstance(o, str) for o in r.overrides)
        "".join(r.overrides).encode("utf-8")  # raises UnicodeEncodeError on a lone surrogate
        assert list(r.overrides) == sorted(r.overrides) and not any(o.startswith(("seed=", "hydra.")) for o in
                                                                    r.overrides)


# ---- properties --------------------------------------------------------------------------------------------


@FUZZ
@given(overrides=overrides_text, metrics=st.none() | metrics_text, split=st.sampled_from(["test", "val"]))
def test_load_run_never_raises(workdir: Path, overrides: bytes, metrics: bytes | None, split: str) -> None:
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        path = write_run(Path(d) / "run", overrides, metrics)
        loaded = summ.load_run(path, split)
        check_loaded(loaded, path)


@settings(FUZZ, max_examples=40, deadline=None)  # a plot per example; the first imports matplotlib
@given(runs=st.lists(st.one_of(good_run, good_run, fuzzed_run), min_size=1, max_size=5))
def test_summarize_end_to_end_writes_its_files(workdir: Path, runs: list[tuple[bytes, bytes | None]]) -> None:
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        root = Path(d)
        for i, (overrides, metrics) in enumerate(runs):
            write_run(root / "sweep" / f"job{i}", overrides, metrics)
        try:
            summary = summ.summarize([root / "sweep"], out=root / "out")
        except UserError:
            return  # allowed by the contract, though none is expected once run directories exist
        event(f"{len(summary.groups)} group(s)")
        assert len(summary.groups) + len(summary.failed) >= 1
        assert (root / "out" / "summary.csv").is_file() and (root / "out" / "summary.md").is_file()
        assert sum(len(g.runs) for g in summary.groups) + len(summary.failed) >= len(runs)


# ---- known hard cases, pinned ------------------------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "metrics", "reason"), [
    (b"- a=\xff\n", b"{}", "UnicodeDecodeError"),
    # Deep flow nesting took seconds where hypothesis or torch had raised the recursion limit: refused unparsed.
    (deep(5000, "[", "]").encode(), b"{}", "more than 512 '[' or '{'"),
    (("- " * 20_000 + "x").encode(), b"{}", "RecursionError"),
    (b"- seed=1\n", deep(100_000, "[", "]").encode(), "RecursionError"),
    (b"- seed=1\n", b'{"test/a/accuracy": 1' + b"0" * 5000 + b"}", "ValueError"),
    (b"- {a: 1}\n- [1, 2]\n", b"{}", "not a list of overrides"),
    (alias_bomb(9, 12, as_list=True).encode(), b"{}", "not a list of overrides"),
    (alias_bomb(9, 12, as_list=False).encode(), b"{}", "not a list of overrides"),
    (b"- seed=1\n", b'{"stage": "pipeline", "pretrained": [1], "scratch": {"test/a/accuracy": "x"}}',
     "no 'test/<task>/<metric>' entries"),
])
def test_bad_files_fail_the_run_with_a_reason(tmp_path: Path, overrides: bytes, metrics: bytes, reason: str) -> None:
    path = write_run(tmp_path / "run", overrides, metrics)
    [failed] = summ.load_run(path, "test")  # an alias bomb is never expanded (it would exhaust the memory)
    assert isinstance(failed, summ.Failed) and reason in failed.reason


def test_overrides_yaml_that_is_a_folder(tmp_path: Path) -> None:
    (tmp_path / "run" / ".hydra" / "overrides.yaml").mkdir(parents=True)
    [failed] = summ.load_run(tmp_path / "run", "test")
    assert isinstance(failed, summ.Failed) and "overrides.yaml (not a file)" in failed.reason


def test_oversized_file_is_not_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(summ, "MAX_FILE_BYTES", 64)
    path = write_run(tmp_path / "run", b"- seed=1\n", json.dumps({"test/a/accuracy": 0.5, "pad": "x" * 64}).encode())
    [failed] = summ.load_run(path, "test")
    assert isinstance(failed, summ.Failed) and "larger than" in failed.reason


def test_huge_scores_are_left_out(tmp_path: Path) -> None:
    """Two seeds at 1e308: their mean overflowed (statistics.fmean raised OverflowError) and stopped the summary."""
    for seed in (0, 1):
        write_run(tmp_path / "sweep" / f"s{seed}", f"- seed={seed}\n".encode(),
                  b'{"test/a/mae": 1e308, "test/a/rmse": -1.7e308, "test/a/accuracy": 0.5}')
    [group] = summ.summarize([tmp_path / "sweep"]).groups
    assert set(group.stats) == {"a/accuracy"}


def test_huge_ints_and_lone_surrogates(tmp_path: Path) -> None:
    """An int beyond float range is left out (math.isfinite would raise); escaped lone surrogates become
    backslash escapes, so summary.csv / summary.md can still be written as UTF-8."""
    metrics = '{"test/a/accuracy": 1%s, "test/b/accuracy": 0.5, "test/\\ud800/mae": 0.25}' % ("0" * 400)
    path = write_run(tmp_path / "sweep" / "run", b'- "w=\\ud800"\n', metrics.encode())
    [run] = summ.load_run(path.resolve(), "test")
    assert isinstance(run, summ.Run) and run.metrics == {"b/accuracy": 0.5, "\\ud800/mae": 0.25}
    assert run.overrides == ("w=\\ud800",)
    summary = summ.summarize([tmp_path / "sweep"])
    assert "w=\\ud800" in (tmp_path / "sweep" / "summary.md").read_text(encoding="utf-8")
    assert len(summary.groups) == 1


def test_dollar_signs_in_labels_do_not_break_the_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    for name, value in (("a", "$x^$"), ("b", "1")):
        write_run(tmp_path / "sweep" / name, f"- 'w={value}'\n".encode(), b'{"test/t/accuracy": 0.5}')
    summ.summarize([tmp_path / "sweep"])
