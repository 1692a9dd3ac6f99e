import platform

import pytest
import torch

from mtlssl.engine.runtime import keep_freed_memory
from mtlssl.errors import UserError


def test_allocator_tuning_takes_on_linux_glibc() -> None:
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    assert keep_freed_memory()


def test_precision_auto_picks_bf16_only_where_it_is_native(monkeypatch: pytest.MonkeyPatch) -> None:
    from mtlssl.engine import runtime

    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "has_fast_bf16", lambda device: True)
    assert runtime.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(runtime, "has_fast_bf16", lambda device: False)
    assert runtime.resolve_precision("auto", cpu) == "32"
    assert runtime.resolve_precision("16", cpu) == "16"  # explicit choices are kept
    with pytest.raises(UserError, match="precision=fp8 is not supported"):
        runtime.resolve_precision("fp8", cpu)
