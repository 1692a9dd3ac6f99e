"""provenance.json: the commit and dirtiness of mtlssl's source, versions, command line; never a failed run."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from mtlssl.engine.run_dir import RunDir
from mtlssl.reporting import provenance


def head_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=provenance.source_dir(), capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def test_record_writes_the_commit_versions_and_command_line(tmp_path: Path) -> None:
    content = provenance.record(tmp_path)
    assert json.loads((tmp_path / "provenance.json").read_text()) == content
    assert content["commit"] == head_commit()  # None when mtlssl is not a git checkout
    assert isinstance(content["dirty"], bool) if content["commit"] else content["dirty"] is None
    versions = content["versions"]
    assert {"mtlssl", "torch", "torchvision", "python", "hydra-core", "torchmetrics", "safetensors"} <= set(versions)
    assert versions["torch"] and torch.__version__.startswith(versions["torch"])
    assert content["argv"] and content["cwd"] and content["hostname"]
    device = content["accelerator"]  # on this CPU-only test machine: no GPU, and the CPU's vector extensions
    assert device["cuda"] == torch.version.cuda and device["gpus"] == [] and device["cpu_capability"].lower() in (
        "default", "avx2", "avx512", "zvector", "vsx", "sve256")
    assert "T" in content["started"]


def test_outside_a_git_checkout_the_commit_is_null(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(provenance, "source_dir", lambda: tmp_path)
    assert provenance.record(tmp_path / "run")["commit"] is None
    assert json.loads((tmp_path / "run" / "provenance.json").read_text())["dirty"] is None


def test_without_git_the_run_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on PATH
    assert provenance.git_state() == {"commit": None, "dirty": None}

    def hang(*args: object, **kwargs: object) -> None:
        raise subprocess.TimeoutExpired("git", provenance.GIT_TIMEOUT_S)

    monkeypatch.setattr(subprocess, "run", hang)
    assert provenance.git_state() == {"commit": None, "dirty": None}


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_an_install_inside_another_repository_records_no_commit(tmp_path: Path) -> None:
    # e.g. a wheel in a virtual environment inside the user's own project: that project's commit is not mtlssl's
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=30)
    package = tmp_path / "venv" / "mtlssl"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    assert provenance.git_state(package) == {"commit": None, "dirty": None}


def test_a_relaunch_keeps_the_first_record_and_appends_itself(tmp_path: Path) -> None:
    first = provenance.record(tmp_path)
    again = provenance.record(tmp_path)
    assert {k: v for k, v in again.items() if k != "relaunches"} == first
    assert len(again["relaunches"]) == 1 and set(again["relaunches"][0]) == set(provenance.RELAUNCH_KEYS)
    assert provenance.read(tmp_path) == again


def test_an_unreadable_record_is_left_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "provenance.json").write_text("{not json")
    provenance.record(tmp_path)
    assert (tmp_path / "provenance.json").read_text() == "{not json"
    assert provenance.read(tmp_path) is None


def test_every_stage_run_directory_gets_one(tmp_path: Path) -> None:
    RunDir(tmp_path / "run").prepare(OmegaConf.create({"seed": 0}))
    assert provenance.read(tmp_path / "run")["commit"] == head_commit()
