"""Shared test helpers: compose the real configs with Hydra's compose API, shrunk to tiny CPU budgets."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from mtlssl.config import config_dir

# Small enough that a whole stage runs in a second or two on two CPU cores.
TINY_DATA = ["data.n_unlabeled=96", "data.n_train=64", "data.n_val=48", "data.n_test=48", "data.size=16",
             "data.cache_dir=null"]
TINY_ENCODER = ["encoder.arch.width=4", "encoder.arch.depth=3"]
TINY = ["device=cpu", *TINY_DATA, *TINY_ENCODER]
TINY_TRAIN = ["trainer.epochs=1", "trainer.batch_size=32", "trainer.eval_batch_size=64", "trainer.log_every=1"]


def compose_config(name: str, overrides: list[str] | None = None) -> DictConfig:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name=name, overrides=overrides or [])


def tiny(name: str, *overrides: str) -> DictConfig:
    """A stage config shrunk to tiny data, a tiny encoder and one short epoch, plus ``overrides``."""
    base = {
        "pretrain": [*TINY, *TINY_TRAIN, "ssl.hidden_dim=16", "ssl.out_dim=8"],
        "train_mtl": [*TINY, *TINY_TRAIN],
        "eval": ["device=cpu", "batch_size=64"],
        "pipeline": [*TINY, *[f"{s}.{o}" for s in ("pretrain", "train_mtl") for o in TINY_TRAIN],
                     "pretrain.ssl.hidden_dim=16", "pretrain.ssl.out_dim=8", "eval.batch_size=64"],
    }[name]
    return compose_config(name, [*base, *overrides])


@pytest.fixture(scope="session")
def pretrained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny pretrain run directory, shared by the tests that start from one."""
    from mtlssl.stages import pretrain

    run_dir = tmp_path_factory.mktemp("pretrain")
    pretrain.run(tiny("pretrain"), run_dir)
    return run_dir
