import os
import pickle
from pathlib import Path

import pytest
import torch

from mtlssl.engine.state import FORMAT_VERSION, read_checkpoint, write_checkpoint
from mtlssl.errors import UserError
from mtlssl.io import resolve_checkpoint

V2 = {"format_version": FORMAT_VERSION}  # the files these tests write need no more than a kind


def test_round_trip_and_run_directory_resolution(tmp_path: Path) -> None:
    write_checkpoint({**V2, "kind": "mtl", "epoch": 3, "w": torch.arange(4)}, tmp_path / "checkpoints" / "last.pt")
    ckpt = read_checkpoint(tmp_path, "ckpt")
    assert ckpt["epoch"] == 3 and torch.equal(ckpt["w"], torch.arange(4)) and ckpt["format_version"] == 2
    write_checkpoint({**V2, "kind": "mtl", "epoch": 2}, tmp_path / "checkpoints" / "best.pt")
    assert resolve_checkpoint(tmp_path, "ckpt").name == "best.pt"  # a run directory means its best.pt first
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]  # no temporary files left


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.pt"
    write_checkpoint({**V2, "kind": "mtl", "epoch": 1}, path)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(UserError, match=r"cannot write .*last.pt \(No space left on device\); the previous one is "
                                        "unchanged"):
        write_checkpoint({**V2, "kind": "mtl", "epoch": 2}, path)
    assert read_checkpoint(path, "ckpt")["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_truncated_foreign_and_missing_checkpoints_are_clear_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    write_checkpoint({**V2, "kind": "pretrain", "w": torch.randn(1000)}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(UserError, match="cannot read checkpoint .* truncated"):
        read_checkpoint(truncated, "ckpt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(UserError, match="not an mtlssl checkpoint"):
        read_checkpoint(foreign, "ckpt")
    with pytest.raises(UserError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pt", "ckpt")
    with pytest.raises(UserError, match="holds no checkpoints"):
        read_checkpoint(tmp_path, "ckpt")
    with pytest.raises(UserError, match="is a pretrain checkpoint, but a mtl checkpoint is needed"):
        read_checkpoint(good, "resume", kinds=("mtl",))


class Payload:
    def __reduce__(self):  # runs os.system on unpickling, if the loader allowed arbitrary code
        return (os.system, ("touch pwned",))


def test_a_checkpoint_carrying_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"kind": "mtl", "x": Payload()}, f, protocol=2)  # torch.save's protocol
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(UserError, match="cannot read checkpoint"):
            read_checkpoint(path, "ckpt")
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "pwned").exists()
