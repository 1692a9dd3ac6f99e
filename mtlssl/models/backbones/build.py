"""A backbone from its config (the ``arch:`` node of ``conf/encoder/<name>.yaml``, resolved)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from mtlssl.config import instantiate
from mtlssl.errors import UserError
from mtlssl.io import refuse_unfit_states
from mtlssl.models.backbones.base import Backbone

UNFIT_BACKBONE = ("use the encoder it was trained with (encoder=<name> and the encoder.arch.* values of that "
                  "run's resolved_config.yaml), or start over in a new hydra.run.dir")


def build_backbone(config: DictConfig | dict[str, Any]) -> Backbone:
    node = config if isinstance(config, DictConfig) else OmegaConf.create(config)
    backbone = instantiate(node, "encoder.arch")
    if not isinstance(backbone, Backbone):
        raise UserError(f"encoder.arch._target_={node._target_} did not build an mtlssl Backbone")
    refuse_unfit_states(backbone, "encoder weights", UNFIT_BACKBONE)  # e.g. resuming after encoder.arch.width changed
    return backbone


def backbone_architecture(config: dict[str, Any]) -> dict[str, Any]:
    """The parts of a backbone config that decide its parameter shapes (normalisation does not)."""
    return {k: v for k, v in config.items() if k not in ("mean", "std")}
