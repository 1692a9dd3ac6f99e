"""Build the dataset a ``data`` config describes."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from omegaconf import DictConfig

from mtlssl.config import instantiate
from mtlssl.data.image_set import Dataset
from mtlssl.errors import UserError


@contextmanager
def global_rng_kept() -> Iterator[None]:
    """Restore torch's (CPU), numpy's and python's global generator states on exit.

    The stages build data after seeding and before initialising the model, which draws from the global
    generators. Builders draw only from their own seeded generators (a test checks each family), and this makes
    the order robust to anything else, e.g. a library that draws once when it decodes files, i.e. only with a
    cold cache: the model's initial weights never depend on what building the data did.
    """
    torch_state, numpy_state, python_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def build_data(cfg: DictConfig, origin: str | None = None) -> Dataset:
    """``origin`` says where a config not given on the command line was read, e.g. a checkpoint."""
    with global_rng_kept():
        data = instantiate(cfg, "data", origin)
    if not isinstance(data, Dataset):
        raise UserError(f"data._target_={cfg.get('_target_')} did not build an mtlssl Dataset")
    return data
