"""Batched, per-sample-random image augmentation that runs on the training device."""

from mtlssl.augment.batch import BatchAugment

__all__ = ["BatchAugment"]
