"""Build an encoder from its config, optionally initialised from a pretrain or mtl checkpoint."""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mtlssl.config import instantiate
from mtlssl.encoders.base import Encoder
from mtlssl.engine.checkpoint import load_checkpoint
from mtlssl.errors import UserError
from mtlssl.io import refuse_unfit_states

log = logging.getLogger(__name__)
UNFIT_FIX = ("use the encoder it was trained with (encoder=<name> and the encoder.arch.* values of that "
             "run's resolved_config.yaml), or start over in a new hydra.run.dir")


def build_encoder(arch: DictConfig | dict[str, Any]) -> Encoder:
    node = arch if isinstance(arch, DictConfig) else OmegaConf.create(arch)
    encoder = instantiate(node, "encoder.arch")
    if not isinstance(encoder, Encoder):
        raise UserError(f"encoder.arch._target_={node._target_} did not build an mtlssl Encoder")
    refuse_unfit_states(encoder, "encoder weights", UNFIT_FIX)  # e.g. resuming after encoder.arch.width changed
    return encoder


def _architecture(arch: dict[str, Any]) -> dict[str, Any]:
    """The parts of an encoder config that decide its parameter shapes (normalisation does not)."""
    return {k: v for k, v in arch.items() if k not in ("mean", "std")}


def load_encoder_init(encoder: Encoder, arch: DictConfig, init: str) -> dict[str, Any]:
    """Copy the encoder weights of checkpoint ``init`` into ``encoder``; returns the checkpoint."""
    ckpt = load_checkpoint(init, "encoder.init")
    saved = _architecture(ckpt["encoder"]["arch"])
    wanted = _architecture(OmegaConf.to_container(arch, resolve=True))  # type: ignore[arg-type]
    if saved != wanted:
        raise UserError(
            f"encoder mismatch: checkpoint '{ckpt['path']}' holds encoder {saved}, but the config asks for "
            f"{wanted}; choose the matching encoder (e.g. encoder={ckpt['config']['encoder']['name']}) "
            "with the same settings"
        )
    state = ckpt["encoder"]["state"]
    try:
        encoder.load_state_dict(state)
    except RuntimeError as err:
        raise UserError(f"encoder.init: weights in '{ckpt['path']}' do not fit the encoder: {err}") from err
    log.info("encoder initialised from %s checkpoint %s (epoch %s)", ckpt["kind"], ckpt["path"], ckpt.get("epoch"))
    planned = (ckpt.get("config") or {}).get("trainer", {}).get("epochs")
    if ckpt.get("position") or (planned is not None and ckpt.get("epoch", 0) < planned):
        log.warning("%s is from an unfinished run (epoch %s of %s%s): relaunch that run to finish it first, "
                    "unless this is what you want", ckpt["path"], ckpt.get("epoch"), planned,
                    ", stopped mid-epoch" if ckpt.get("position") else "")
    return ckpt
