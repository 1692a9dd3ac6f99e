"""A one-hidden-layer MLP head, for tasks that a linear read-out of shared features cannot separate."""

from torch import nn

from mtlssl.errors import UserError


def mlp(in_dim: int, out_dim: int, hidden_dim: int = 256, dropout: float = 0.0) -> nn.Module:
    if hidden_dim < 1:
        raise UserError(f"mlp head needs heads.hidden_dim >= 1 (got {hidden_dim}); set e.g. heads.hidden_dim=256")
    if not 0.0 <= dropout < 1.0:  # a probability; 1 would zero every feature
        raise UserError(f"mlp head needs heads.dropout in [0, 1) (got {dropout}); set e.g. heads.dropout=0.1, "
                        "or 0 for none")
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
        nn.Dropout(dropout), nn.Linear(hidden_dim, out_dim),
    )
