"""The run-directory guard reads a checkpoint's kind from a file it did not write: any content is a plain answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from mtlssl.engine.run_dir_guard import recorded_stage


@pytest.mark.parametrize("content,found", [
    ({"kind": "mtl"}, ("train_mtl", "mtl")), ({"kind": ["mtl"]}, None), ({"kind": {"a": 1}}, None),
    ({"kind": 3}, None), ({"kind": "other"}, None), ([1, 2], None), ({}, None),
])
def test_the_kind_of_a_crafted_last_checkpoint_never_crashes_the_guard(content: Any, found: Any,
                                                                       tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    torch.save(content, tmp_path / "checkpoints" / "last.pt")
    assert recorded_stage(tmp_path) == found
