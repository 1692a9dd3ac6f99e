"""Loss-weighting and gradient-balancing methods behind one interface (see ``base``).

    >>> w = mtlssl.weighting.get("uncertainty", num_tasks=3)
    >>> total = w.combine(torch.stack([loss_a, loss_b, loss_c]))
"""

from __future__ import annotations

from typing import Any

from mtlssl.errors import UserError
from mtlssl.weighting.aligned_mtl import AlignedMTL
from mtlssl.weighting.base import GradientWeighting, LossWeighting, Weighting
from mtlssl.weighting.cagrad import CAGrad
from mtlssl.weighting.db_mtl import DBMTL
from mtlssl.weighting.dualproj import DualProj
from mtlssl.weighting.dwa import DWA
from mtlssl.weighting.equal import Equal
from mtlssl.weighting.famo import FAMO
from mtlssl.weighting.gls import GLS
from mtlssl.weighting.graddrop import GradDrop
from mtlssl.weighting.gradnorm import GradNorm
from mtlssl.weighting.gradvac import GradVac
from mtlssl.weighting.imtl import IMTL
from mtlssl.weighting.imtl_g import IMTLG
from mtlssl.weighting.imtl_l import IMTLL
from mtlssl.weighting.mgda import MGDA
from mtlssl.weighting.nash_mtl import NashMTL
from mtlssl.weighting.pcgrad import PCGrad
from mtlssl.weighting.rlw import RLW
from mtlssl.weighting.static import Static
from mtlssl.weighting.stch import STCH
from mtlssl.weighting.uncertainty import Uncertainty
from mtlssl.weighting.upgrad import UPGrad

# Loss-level methods: one backward pass of a combined loss.
LOSS_METHODS: dict[str, type[LossWeighting]] = {
    "equal": Equal, "static": Static, "uncertainty": Uncertainty, "dwa": DWA, "rlw": RLW, "gls": GLS,
    "imtl_l": IMTLL, "famo": FAMO, "stch": STCH,
}
# Gradient-level methods: an update direction from the per-task gradients.
GRADIENT_METHODS: dict[str, type[GradientWeighting]] = {
    "gradnorm": GradNorm, "mgda": MGDA, "pcgrad": PCGrad, "graddrop": GradDrop, "gradvac": GradVac,
    "imtl_g": IMTLG, "imtl": IMTL, "cagrad": CAGrad, "nash_mtl": NashMTL, "aligned_mtl": AlignedMTL,
    "upgrad": UPGrad, "dualproj": DualProj, "db_mtl": DBMTL,
}
METHODS: dict[str, type[Weighting]] = {**LOSS_METHODS, **GRADIENT_METHODS}


def get(name: str, num_tasks: int, **hparams: Any) -> Weighting:
    """Build a weighting method by name; ``hparams`` are the method's own typed arguments."""
    if name not in METHODS:
        raise UserError(f"unknown weighting method '{name}'; choose one of {', '.join(METHODS)}")
    try:
        return METHODS[name](num_tasks, **hparams)
    except TypeError as err:  # an unknown or missing hyper-parameter name
        raise UserError(f"weighting '{name}': {err}") from err


__all__ = ["GRADIENT_METHODS", "LOSS_METHODS", "METHODS", "GradientWeighting", "LossWeighting", "Weighting", "get"]
