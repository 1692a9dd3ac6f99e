"""Equal weighting (EW, linear scalarisation): the plain sum of the task losses."""

from torch import Tensor

from mtlssl.weighting.base import LossWeighting


class Equal(LossWeighting):
    def combine(self, losses: Tensor) -> Tensor:
        self._check_tasks(losses.shape[0])
        return losses.sum()
