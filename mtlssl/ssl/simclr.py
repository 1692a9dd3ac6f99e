"""SimCLR: two augmented views, a projector MLP, and the NT-Xent loss on the projections."""

from __future__ import annotations

from torch import Tensor, nn

from mtlssl.errors import UserError
from mtlssl.io import refuse_unfit_states
from mtlssl.ssl.nt_xent import nt_xent


class SimCLR(nn.Module):
    """The pretext head. The projector is discarded after pretraining; only the encoder is kept."""

    num_views = 2

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 128, temperature: float = 0.5) -> None:
        super().__init__()
        if not temperature > 0:  # also refuses NaN
            raise UserError(f"ssl.temperature must be > 0 (got {temperature}); set e.g. ssl.temperature=0.5 "
                            "(SimCLR uses 0.1-0.5)")
        if hidden_dim < 1 or out_dim < 1:
            raise UserError(f"ssl.hidden_dim and ssl.out_dim must be >= 1 (got {hidden_dim}, {out_dim}); "
                            "set e.g. ssl.hidden_dim=512 ssl.out_dim=128")
        self.temperature = temperature
        self.projector = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )
        refuse_unfit_states(self, "SimCLR projector weights", "resume with the ssl.hidden_dim and ssl.out_dim it "
                            "was trained with (that run's resolved_config.yaml), or start over in a new hydra.run.dir")

    def loss(self, features: Tensor) -> Tensor:
        """Features of both views stacked as [view 1 batch; view 2 batch] -> the NT-Xent loss."""
        z1, z2 = self.projector(features).chunk(2)
        return nt_xent(z1, z2, self.temperature)
