"""Multi-task architectures behind one contract (``MultiTaskArchitecture``), one file each: ``hps`` (hard
parameter sharing)."""

from mtlssl.models.arch.base import MTLOutput, MultiTaskArchitecture

__all__ = ["MTLOutput", "MultiTaskArchitecture"]
