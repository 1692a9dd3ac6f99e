"""In-memory image splits and the dataset bundle a data config builds."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mtlssl.errors import UserError
from mtlssl.tasks import TaskSpec, select_tasks

Batch = tuple[Tensor, dict[str, Tensor]]


@dataclass
class ImageSet:
    """One split: uint8 images [N, C, H, W] and targets ``task -> [N, ...]`` (empty when unlabelled)."""

    images: Tensor
    targets: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        for name, target in self.targets.items():
            if target.shape[0] != len(self):
                raise ValueError(f"target '{name}' has {target.shape[0]} rows for {len(self)} images")

    def __len__(self) -> int:
        return self.images.shape[0]

    def num_batches(self, batch_size: int, drop_last: bool) -> int:
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)

    def steps_per_epoch(self, batch_size: int, name: str) -> int:
        """Full batches per epoch (training drops the last incomplete one); an error if there is none."""
        steps = self.num_batches(batch_size, drop_last=True)
        if steps == 0:
            raise UserError(f"trainer.batch_size={batch_size} is larger than the {len(self)} images of split "
                            f"'{name}' (training drops the last incomplete batch); lower trainer.batch_size")
        return steps

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None, drop_last: bool = False,
        skip: int = 0,
    ) -> Iterator[Batch]:
        """Batches by slicing the tensors; the order comes from ``generator`` alone, so it is reproducible.
        ``skip`` leaves out the first batches of that order (a run resumed mid-epoch) without gathering them."""
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for start in range(skip * batch_size, self.num_batches(batch_size, drop_last) * batch_size, batch_size):
            index = order[start : start + batch_size]
            yield self.images[index], {name: t[index] for name, t in self.targets.items()}


@dataclass
class Dataset:
    """What a data config builds: named splits, the tasks their labels support, and the pixel statistics."""

    name: str
    tasks: list[TaskSpec]
    splits: dict[str, ImageSet]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def split(self, name: str) -> ImageSet:
        if name not in self.splits:
            raise UserError(f"data '{self.name}' has no split '{name}'; it has: {', '.join(self.splits)}")
        if len(self.splits[name]) == 0:
            raise UserError(f"split '{name}' of data '{self.name}' is empty; give it some images in the data config")
        return self.splits[name]

    def select(self, names: list[str] | None) -> list[TaskSpec]:
        return select_tasks(self.tasks, names, self.name)
