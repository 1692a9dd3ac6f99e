"""Build the dataset a ``data`` config describes."""

from __future__ import annotations

from omegaconf import DictConfig

from mtlssl.config import instantiate
from mtlssl.data.image_set import Dataset
from mtlssl.errors import UserError


def build_data(cfg: DictConfig, origin: str | None = None) -> Dataset:
    """``origin`` says where a config not given on the command line was read, e.g. a checkpoint."""
    data = instantiate(cfg, "data", origin)
    if not isinstance(data, Dataset):
        raise UserError(f"data._target_={cfg.get('_target_')} did not build an mtlssl Dataset")
    return data
