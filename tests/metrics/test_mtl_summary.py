import pytest

from mtlssl.errors import UserError
from mtlssl.metrics.mtl_summary import delta_m, delta_p

# Task "seg" has two metrics (accuracy up, mae down); task "depth" has one (rmse down).
STL = {"test/seg/accuracy": 0.80, "test/seg/mae": 0.50, "test/depth/rmse": 2.00, "test/seg/loss": 1.0}
MTL = {"test/seg/accuracy": 0.84, "test/seg/mae": 0.55, "test/depth/rmse": 1.50, "test/seg/loss": 9.0}
# Signed relative changes (positive = better), in %:
#   seg/accuracy: +(0.84 - 0.80) / 0.80 * 100 = +5
#   seg/mae:      -(0.55 - 0.50) / 0.50 * 100 = -10
#   depth/rmse:   -(1.50 - 2.00) / 2.00 * 100 = +25
# delta_m = -(5 - 10 + 25) / 3 = -6.667  (Maninis: mean over all 3 metrics, lower is better)
# delta_p = ((5 - 10) / 2 + 25) / 2 = 11.25  (LibMTL: per task first, then over the 2 tasks, higher is better)


def test_delta_m_by_hand() -> None:
    assert delta_m(MTL, STL) == pytest.approx(-20 / 3)


def test_delta_p_by_hand_weighs_tasks_not_metrics() -> None:
    assert delta_p(MTL, STL) == pytest.approx(11.25)


def test_identical_results_give_zero_and_losses_are_ignored() -> None:
    assert delta_m(STL, STL) == pytest.approx(0.0) and delta_p(STL, STL) == pytest.approx(0.0)


def test_nothing_shared_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="no metric is shared"):
        delta_m({"test/a/accuracy": 1.0}, {"test/b/accuracy": 1.0})
