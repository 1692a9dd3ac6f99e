"""``mtlssl reproduce <run_dir> [--out DIR]``: rerun a finished run from what its directory recorded.

- The stage (``.hydra/hydra.yaml``: ``hydra.job.name``) and its overrides (``.hydra/overrides.yaml``) are
  replayed, less the run-management ones (``resume``, ``sweep_name``, ``hydra.*``, and any group placed under
  ``hydra``), as a subprocess of this Python, so the new run has its own Hydra bookkeeping. It runs in the
  recorded working directory (``provenance.json``: ``cwd``), where the overrides' relative paths point.
- A run directory is data, and replaying it must never run code that is not mtlssl's: the replay's config is
  composed here first and every ``_target_`` in it checked against the builders of its group
  (mtlssl.builders) before anything is created; a ``--config-dir`` the run was made with (configs can name
  Hydra callbacks and logging handlers, i.e. code) is used only when it is given to reproduce again.
- Configs: when the recorded commit differs from the current one (or the current tree is modified and the run's
  was not) and the repository knows it, the stage reads ``conf/`` as of that commit (``git archive`` into a
  temporary directory, passed as ``--config-path``, which replaces the packaged configs); the code is always
  the current one. Every difference between then and now is printed as a note.
- The new run goes to ``<run_dir>-reproduce-<time>`` beside the original (beside the sweep, for a sweep's job,
  so ``mtlssl summarize`` of the sweep does not count it), or to ``--out``; never into an existing directory.
- Then one table: each number of the original ``metrics.json`` beside the reproduction's and their difference
  (nested groups flattened to ``a/b``; ``history``, ``config``, lists and throughput left out), and a verdict.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from rich.table import Table
from rich.text import Text

from mtlssl.config import RUN_MANAGEMENT_KEYS, check_plain_targets, config_dir, override_key, resolved
from mtlssl.errors import UserError
from mtlssl.reporting import provenance
from mtlssl.reporting.console import console, fmt

# hydra.job.name -> the umbrella's stage name
STAGES = {"pretrain": "pretrain", "train_mtl": "train-mtl", "eval": "eval", "pipeline": "pipeline"}
# How the original ran, not what it trained: a replay is one new run, with no launcher or search.
NOT_REPLAYED = RUN_MANAGEMENT_KEYS
SKIPPED_KEYS = ("history", "config")  # per-epoch records and the config itself are not results
GIT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class RecordedRun:
    """What a run directory says about how it was made."""

    path: Path
    stage: str  # the umbrella's name, e.g. train-mtl
    config_name: str | None
    overrides: list[str]  # the replayable ones
    extra_config_dir: str | None  # the original launch's --config-dir
    provenance: dict[str, Any] | None


# ---- the recorded run ------------------------------------------------------------------------------------


def _not_a_run(path: Path, why: str) -> UserError:
    hint = "give a run directory (one with .hydra/, e.g. outputs/train_mtl/<date>/<time>)"
    outer = next((p for p in path.parents if (p / ".hydra" / "hydra.yaml").is_file()), None)
    if outer is not None:  # e.g. a pipeline's stage, or a run's checkpoints/
        hint = f"it lies inside the run '{outer}': reproduce that one"
    elif (path / "multirun.yaml").is_file():
        hint = "it is a sweep: reproduce one of its jobs (<sweep>/<overrides>/seed=<n>)"
    return UserError(f"'{path}' is not a run directory ({why}); {hint}")


def _load_yaml(path: Path, run_dir: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise _not_a_run(run_dir, f"no .hydra/{path.name}") from None
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"cannot read {path}: {err}") from err


def _sets_hydra(key: str) -> bool:
    """``hydra.*``, ``hydra/<group>``, or a group placed under ``hydra`` (``+optim@hydra.callbacks.x=sgd``)."""
    return any(re.match(r"(_global_\.)?hydra([./]|$)", part) for part in key.split("@"))


def replayable(overrides: list[str]) -> list[str]:
    return [o for o in overrides if override_key(o).split("@")[0] not in NOT_REPLAYED
            and not _sets_hydra(override_key(o))]


def first_launch(path: Path) -> Path:
    """The Hydra record of the launch that made the run: a relaunch (a resume) keeps the earlier ones in
    ``.hydra/previous/<n>/`` (mtlssl.engine.run_dir_guard), and provenance.json's commit is the first's too."""
    first = path / ".hydra" / "previous" / "1"
    return first if (first / "overrides.yaml").is_file() else path / ".hydra"


def load_run(path: Path) -> RecordedRun:
    if not path.exists():
        raise UserError(f"'{path}' does not exist; give a run directory (e.g. outputs/train_mtl/<date>/<time>)")
    if not path.is_dir():
        raise _not_a_run(path, "not a directory")
    record = first_launch(path)
    hydra_cfg = (_load_yaml(record / "hydra.yaml", path) or {}).get("hydra") or {}
    overrides = _load_yaml(record / "overrides.yaml", path) or []
    name = (hydra_cfg.get("job") or {}).get("name")
    if name not in STAGES:
        raise _not_a_run(path, f"made by '{name}', which is not an mtlssl stage ({', '.join(STAGES)})")
    sources = (hydra_cfg.get("runtime") or {}).get("config_sources") or []
    extra = next((s.get("path") for s in sources if s.get("provider") == "command-line"), None)
    return RecordedRun(path=path, stage=STAGES[name], config_name=(hydra_cfg.get("job") or {}).get("config_name"),
                       overrides=replayable([str(o) for o in overrides]), extra_config_dir=extra,
                       provenance=provenance.read(path))


# ---- the configs: the recorded commit's, or the current ones ---------------------------------------------


def archived_configs(commit: str, dest: Path) -> Path | None:
    """``conf/`` as of ``commit``, extracted under ``dest``; None when the repository does not have it."""
    if not re.fullmatch(r"[0-9a-fA-F]{4,64}", commit):  # a hand-edited record must not become a git option
        return None
    source = provenance.source_dir()
    top = provenance.git(["rev-parse", "--show-toplevel"], source)
    if top is None or provenance.git(["cat-file", "-e", f"{commit}^{{commit}}"], source) is None:
        return None
    root = Path(top.decode().strip())
    try:
        rel = config_dir().relative_to(root).as_posix()
    except ValueError:  # the configs in use are not the repository's (an installed wheel)
        return None
    tar = provenance.git(["archive", "--format=tar", commit, "--", rel], root, timeout=GIT_TIMEOUT_S)
    if not tar:
        return None
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        # "data" refuses links and paths that leave dest (Python >= 3.10.12 / 3.11.4)
        archive.extractall(dest, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return dest / rel if (dest / rel).is_dir() else None


def choose_configs(recorded: dict[str, Any] | None, now: dict[str, Any], dest: Path) -> tuple[Path | None, list[str]]:
    """The config directory to replay with (None: the current one) and the notes on what differs."""
    if recorded is None:
        return None, ["the run has no provenance.json (it predates it): its commit and working "
                      "directory are unknown; replaying with the current configs in the current directory"]
    notes, commit, current = [], recorded.get("commit"), now.get("commit")
    if recorded.get("dirty"):
        notes.append(f"the run was made from a modified tree (uncommitted changes on {_short(commit)}): "
                     "its exact code and configs cannot be recovered")
    if now.get("dirty"):
        notes.append(f"the current tree ({_short(current)}) has uncommitted changes")
    for relaunch in recorded.get("relaunches", []):
        if (relaunch.get("commit"), relaunch.get("dirty")) != (commit, recorded.get("dirty")):
            notes.append(f"the run was resumed on {relaunch.get('started')} under {_short(relaunch.get('commit'))}"
                         f"{' (modified)' if relaunch.get('dirty') else ''}: only its first launch is replayed")
    if commit is None:
        return None, [*notes, "the run recorded no git commit (mtlssl was not a git checkout): using the current "
                      "configs"]
    if current is None:
        return None, [*notes, f"the current mtlssl ({provenance.source_dir()}) is not a git checkout: cannot read "
                      f"the configs of {_short(commit)}; using the current configs"]
    if commit == current and (recorded.get("dirty") or not now.get("dirty")):
        return None, notes
    if commit != current:
        notes.append(f"the run was made at commit {_short(commit)}, the current one is {_short(current)}: "
                     "the code is the current one")
    configs = archived_configs(commit, dest)
    if configs is None:
        return None, [*notes, f"commit {_short(commit)} (or its conf/) is not in this repository (fetch it to "
                      "replay its configs): using the current configs"]
    return configs, [*notes, f"using the configs at commit {_short(commit)}"]


def _short(commit: str | None) -> str:
    return commit[:12] if commit else "an unknown commit"


# ---- the new run -----------------------------------------------------------------------------------------


def _sweep_root(path: Path) -> Path | None:
    """The sweep directory a sweep job lies in (Hydra writes multirun.yaml there)."""
    return next((p for p in path.parents if (p / "multirun.yaml").is_file()), None)


def new_run_dir(run: RecordedRun, out: Path | None) -> Path:
    """A directory that does not exist yet, outside the original run (and outside its sweep)."""
    if out is not None:
        out = out.resolve()
        if out.exists():
            raise UserError(f"'{out}' already exists; --out must name a new directory (reproduce never writes into "
                            "an existing one)")
        if out.is_relative_to(run.path):
            raise UserError(f"--out '{out}' is inside the original run '{run.path}'; choose a directory outside it")
        return out
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    root = _sweep_root(run.path)  # a sweep's job, even one later relaunched alone in its directory
    if root is not None:  # <sweep>-reproduce-<time>/<overrides>/seed=<n>: summarize of the sweep must not see it
        base, tail = root.parent / f"{root.name}-reproduce-{stamp}", run.path.relative_to(root)
    else:
        base, tail = run.path.parent / f"{run.path.name}-reproduce-{stamp}", Path()
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate / tail


def claim(new_dir: Path) -> None:
    """Create the new run directory, failing if it appeared meanwhile (a concurrent reproduce)."""
    try:
        new_dir.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise UserError(f"'{new_dir}' already exists; reproduce never writes into an existing directory") from None
    except OSError as err:
        raise UserError(f"cannot create '{new_dir}' ({err.strerror}); choose another with --out") from err


def hydra_value(value: str) -> str:
    """``value`` as one Hydra override value: quoted when it holds characters Hydra parses (``,`` ``=`` spaces)."""
    if re.fullmatch(r"[\w./@:+-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def command(run: RecordedRun, configs: Path | None, new_dir: Path, extra: str | None = None) -> list[str]:
    args = [sys.executable, "-m", "mtlssl.cli", run.stage]
    if configs is not None:
        args.append(f"--config-path={configs}")
    if run.config_name:
        args.append(f"--config-name={run.config_name}")
    if extra:
        args.append(f"--config-dir={extra}")
    return [*args, *run.overrides, f"hydra.run.dir={hydra_value(str(new_dir))}"]


def trusted_config_dir(run: RecordedRun, given: Path | None) -> tuple[str | None, list[str]]:
    """The ``--config-dir`` to replay with: only one given to reproduce. A config directory can run code, so the
    one a run directory names (``.hydra/hydra.yaml``) is never taken from it unasked."""
    if given is not None:
        given = given.expanduser().resolve()
        if not given.is_dir():
            raise UserError(f"--config-dir '{given}' is not a directory; give the config directory the run was made "
                            "with")
        same = run.extra_config_dir is not None and Path(run.extra_config_dir).expanduser().resolve() == given
        notes = [] if same else [f"replaying with --config-dir={given}; the run recorded "
                                 f"{run.extra_config_dir or 'none'}"]
        return str(given), notes
    if run.extra_config_dir:
        raise UserError(f"'{run.path}' was made with --config-dir={run.extra_config_dir}. A config directory can run "
                        "code, so reproduce never takes one from a run directory: if you trust it, run "
                        f"mtlssl reproduce {shlex.quote(str(run.path))} --config-dir "
                        f"{shlex.quote(run.extra_config_dir)}")
    return None, []


def check_replay(run: RecordedRun, configs: Path | None, extra: str | None) -> None:
    """Compose the replay's config as the stage will, and check every ``_target_`` in it (Hydra's callbacks
    included, which Hydra builds before the stage's own checks) against the builders of its group, before
    anything is created. A config that does not compose is left to the stage, which reports it in its words."""
    searchpath = [f"hydra.searchpath=[{hydra_value('file://' + extra)}]"] if extra else []
    try:
        with initialize_config_dir(config_dir=str(configs or config_dir()), version_base="1.3"):
            cfg = compose(config_name=run.config_name or run.stage.replace("-", "_"),
                          overrides=[*run.overrides, *searchpath], return_hydra_config=True)
    except Exception:  # the subprocess composes the same and fails the same, before building anything
        return
    origin = f"the replay of '{run.path}'"
    try:
        task = resolved(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), "the config", origin)
        callbacks = resolved(cfg.hydra.get("callbacks") or OmegaConf.create({}), "hydra.callbacks", origin)
    except UserError:  # e.g. ${hydra:...}, which resolves only in the stage; its own check of every target runs there
        return
    check_plain_targets({**task, "hydra": {"callbacks": callbacks}}, origin)


def working_dir(run: RecordedRun) -> tuple[Path, list[str]]:
    """Where to run: the recorded cwd, which the overrides' relative paths are relative to, if it still exists."""
    recorded = (run.provenance or {}).get("cwd")
    if recorded and Path(recorded).is_dir():
        return Path(recorded), []
    if recorded:
        return Path.cwd(), [f"the run's working directory '{recorded}' is gone: running in the current one, so "
                            "relative paths in its overrides may point elsewhere"]
    return Path.cwd(), []


# ---- the comparison --------------------------------------------------------------------------------------


def _is_throughput(key: str) -> bool:
    last = key.rsplit("/", 1)[-1]
    return last.endswith("_per_s") or last in ("seconds", "wall_s")


def flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, float | None]:
    """The numbers of a metrics.json as ``a/b`` keys; history, config, lists, strings and throughput left out.
    None stands for a NaN (metrics.json writes NaN as null)."""
    flat: dict[str, float | None] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if key in SKIPPED_KEYS or _is_throughput(name):
            continue
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}/"))
        elif value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            flat[name] = value
    return flat


def read_metrics(run_dir: Path) -> dict[str, float | None] | None:
    try:
        return flatten(json.loads((run_dir / "metrics.json").read_text()))
    except (OSError, ValueError, AttributeError):
        return None


def _difference(old: float | None, new: float | None) -> float | None:
    if old is None or new is None:
        return 0.0 if old is None and new is None else None
    return 0.0 if old == new else abs(new - old)


def _cell(value: float | None) -> str:
    return str(value) if isinstance(value, int) else fmt(value)


def comparison_table(original: dict[str, float | None], new: dict[str, float | None]) -> Table:
    table = Table(title="metrics: original vs reproduction", title_justify="left")
    for column in ("metric", "original", "reproduction", "difference"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key in [*original, *(k for k in new if k not in original)]:
        old, now = original.get(key), new.get(key)
        if key not in original or key not in new:
            change = Text("missing", style="yellow")
        elif old is None or now is None:
            change = Text("0" if old is None and now is None else "NaN on one side", style="yellow")
        else:
            change = Text("0" if old == now else f"{now - old:+.3g}", style="" if old == now else "yellow")
        table.add_row(Text(key), _cell(old), _cell(now), change)
    return table


def verdict(original: dict[str, float | None], new: dict[str, float | None]) -> str:
    shared = [k for k in original if k in new]
    missing = len(set(original) ^ set(new))
    differences = {k: _difference(original[k], new[k]) for k in shared}
    unequal = {k: d for k, d in differences.items() if d != 0.0}
    extra = f"; {missing} metric(s) in only one of them" if missing else ""
    if not unequal:
        return f"identical: all {len(shared)} shared metrics equal the original's exactly{extra}"
    finite = {k: d for k, d in unequal.items() if d is not None and math.isfinite(d)}
    worst = max(finite, key=lambda k: finite[k]) if finite else None
    largest = f"; max abs difference {finite[worst]:.3g} ({worst})" if worst else ""
    return f"different: {len(unequal)} of {len(shared)} shared metrics differ{largest}{extra}"


# ---- the command -----------------------------------------------------------------------------------------


def _note(text: str) -> None:
    console.print(Text.assemble(("note: ", "yellow"), text))


def reproduce(run_dir: Path, out: Path | None = None, extra_config_dir: Path | None = None) -> int:
    """Replay ``run_dir`` into a new directory and compare; the stage's exit status if it failed, else 0.
    ``extra_config_dir``: the ``--config-dir`` to replay with (never taken from the run directory itself)."""
    run = load_run(run_dir.resolve())
    extra, extra_notes = trusted_config_dir(run, extra_config_dir)
    new_dir = new_run_dir(run, out)
    with tempfile.TemporaryDirectory(prefix="mtlssl-reproduce-") as tmp:
        configs, notes = choose_configs(run.provenance, provenance.git_state(), Path(tmp))
        cwd, cwd_notes = working_dir(run)
        check_replay(run, configs, extra)
        for note in notes + extra_notes + cwd_notes:
            _note(note)
        cmd = command(run, configs, new_dir, extra)
        console.print(Text(f"reproducing {run.path}\n  in {cwd}: {shlex.join(cmd)}"))
        claim(new_dir)
        status = subprocess.run(cmd, cwd=cwd).returncode
    if status != 0:
        console.print(Text(f"the reproduction failed (exit status {status}); see {new_dir}", style="red"))
        return status
    original, new = read_metrics(run.path), read_metrics(new_dir)
    if original is None or new is None:
        _note(f"no readable metrics.json in {run.path if original is None else new_dir}: nothing to compare")
        return 0
    console.print(comparison_table(original, new))
    console.print(Text(verdict(original, new), style="bold"))
    console.print(Text(f"original: {run.path}\nreproduction: {new_dir}"))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``mtlssl reproduce <run_dir> [--out DIR]``; the exit status (2 on a user error)."""
    parser = argparse.ArgumentParser(prog="mtlssl reproduce",
                                     description="rerun a run from its recorded overrides, configs and commit, "
                                                 "and compare its metrics with the original's")
    parser.add_argument("run_dir", type=Path, help="the run directory to reproduce")
    parser.add_argument("--out", type=Path, default=None,
                        help="the new run directory, which must not exist (default: <run_dir>-reproduce-<time>)")
    parser.add_argument("--config-dir", type=Path, default=None,
                        help="the extra config directory the run was made with (mtlssl --config-dir), if you trust "
                             "it: a run directory's own record of one is never used, as configs can run code")
    args = parser.parse_args(argv)
    try:
        return reproduce(args.run_dir, args.out, args.config_dir)
    except UserError as err:
        print(f"mtlssl reproduce: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
