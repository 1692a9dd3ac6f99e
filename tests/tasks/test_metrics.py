"""Each kind's streaming metrics: hand-computed examples, missing labels skipped, the same scores whatever the
batching, and agreement with scikit-learn's independent implementations."""

import math
import warnings

import pytest
import torch

from mtlssl.tasks import TaskSpec, build_task, is_better

NAN = float("nan")


def task_metrics(spec: TaskSpec, outputs: torch.Tensor, targets: torch.Tensor, batch: int | None = None) -> dict:
    """The task's metrics of ``outputs`` against ``targets``, fed ``batch`` items at a time (all at once: None),
    without the loss."""
    scores = build_task(spec).metrics()
    step = batch or len(outputs)
    for start in range(0, len(outputs), step):
        scores.update(outputs[start : start + step], targets[start : start + step])
    computed = scores.compute()
    assert list(computed)[-1] == "loss"
    return {k: v for k, v in computed.items() if k != "loss"}


def one_hot_logits(classes: list[int], num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(classes), num_classes).float() * 5.0


def test_multiclass_hand_example_with_a_missing_label_skipped():
    spec = TaskSpec("shape", "multiclass", 3)
    # targets 0 1 2 2, predictions 0 2 2 2 -> accuracy 3/4.
    # F1 per class: 0: tp1 fp0 fn0 -> 1; 1: tp0 fn1 -> 0; 2: tp2 fp1 fn0 -> P 2/3, R 1, F1 0.8.
    # macro F1 = (1 + 0 + 0.8) / 3 = 0.6. The fifth item (label -1, predicted 1) must not count.
    outputs = one_hot_logits([0, 2, 2, 2, 1], 3)
    targets = torch.tensor([0, 1, 2, 2, -1])
    scores = task_metrics(spec, outputs, targets)
    assert list(scores) == ["accuracy", "macro_f1"]
    assert scores["accuracy"] == pytest.approx(0.75)
    assert scores["macro_f1"] == pytest.approx(0.6)
    assert all(type(v) is float for v in scores.values())


def test_binary_thresholds_the_sigmoid_and_hand_auroc():
    spec = TaskSpec("smiling", "binary", 1)
    # sigmoid > 0.5 <=> logit > 0: predictions 1 0 1 0 vs targets 1 1 0 0 -> accuracy 0.5
    # (thresholding the raw logits at 0.5 would give 1 0 0 0 -> 0.75).
    # AUROC: positives score 2.0, -0.3; negatives 0.3, -2.0. Pairs ranked right:
    # (2.0>0.3) (2.0>-2.0) (-0.3>-2.0), wrong: (-0.3<0.3) -> 3/4. The NaN item is missing.
    outputs = torch.tensor([[2.0], [-0.3], [0.3], [-2.0], [9.0]])
    targets = torch.tensor([[1.0], [1.0], [0.0], [0.0], [NAN]])
    scores = task_metrics(spec, outputs, targets)
    assert scores == pytest.approx({"accuracy": 0.5, "auroc": 0.75})


def test_binary_auroc_keeps_the_ranking_of_confident_logits():
    # In float32 sigmoid(30) == sigmoid(20) == 1.0, a tie that would read as AUROC 0.5.
    spec = TaskSpec("smiling", "binary", 1)
    scores = task_metrics(spec, torch.tensor([[30.0], [20.0]]), torch.tensor([1.0, 0.0]))
    assert scores["auroc"] == 1.0


def test_binary_auroc_of_a_single_class_is_nan_without_warnings():
    spec = TaskSpec("smiling", "binary", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = task_metrics(spec, torch.tensor([[1.0], [-1.0], [2.0]]), torch.tensor([1.0, 1.0, 1.0]))
    assert scores["accuracy"] == pytest.approx(2 / 3)
    assert math.isnan(scores["auroc"])


def test_multilabel_hand_example_skips_items_with_any_label_missing():
    spec = TaskSpec("attrs", "multilabel", 2)
    # predictions (logit > 0): [1,0] [1,1] [1,0] vs targets [1,0] [0,1] [1,1]
    # -> correct entries 2 + 1 + 1 = 4 of 6 -> accuracy 2/3.
    # AUROC label 0: targets 1 0 1, scores 2 1 3 -> both positives above the negative -> 1.0.
    # AUROC label 1: targets 0 1 1, scores -1 1 -2 -> (1>-1) right, (-2<-1) wrong -> 0.5.
    # macro = 0.75. The fourth item has label 0 missing; its label 1 (target 1, predicted 0)
    # must not count either, or accuracy would drop to 4/7.
    outputs = torch.tensor([[2.0, -1.0], [1.0, 1.0], [3.0, -2.0], [-5.0, -5.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [NAN, 1.0]])
    scores = task_metrics(spec, outputs, targets)
    assert scores == pytest.approx({"accuracy": 2 / 3, "auroc": 0.75})


def test_multilabel_auroc_averages_only_labels_with_both_classes():
    spec = TaskSpec("attrs", "multilabel", 2)
    # label 0 is all positive (undefined AUROC); label 1 ranks perfectly -> macro over label 1 = 1.0
    outputs = torch.tensor([[1.0, 2.0], [2.0, -2.0]])
    targets = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert task_metrics(spec, outputs, targets)["auroc"] == 1.0
        all_one_class = task_metrics(spec, outputs, torch.ones(2, 2))
    assert math.isnan(all_one_class["auroc"])


def test_regression_hand_values_over_all_dims():
    spec = TaskSpec("pose", "regression", 2)
    # absolute errors 1 0 0 2 -> mae 3/4; rmse sqrt((1 + 0 + 0 + 4) / 4). The NaN row is missing.
    outputs = torch.tensor([[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]])
    targets = torch.tensor([[0.0, 2.0], [3.0, 6.0], [NAN, NAN]])
    scores = task_metrics(spec, outputs, targets)
    assert list(scores) == ["mae", "rmse"]
    assert scores == pytest.approx({"mae": 0.75, "rmse": math.sqrt(1.25)})


def test_regression_accepts_flat_targets_for_one_dimension():
    spec = TaskSpec("age", "regression", 1)
    scores = task_metrics(spec, torch.tensor([[1.0], [5.0]]), torch.tensor([2.0, 2.0]))
    assert scores == pytest.approx({"mae": 2.0, "rmse": math.sqrt(5.0)})


@pytest.mark.parametrize(
    ("spec", "targets"),
    [
        (TaskSpec("c", "multiclass", 3), torch.tensor([-1, -1])),
        (TaskSpec("b", "binary", 1), torch.tensor([[NAN], [NAN]])),
        (TaskSpec("m", "multilabel", 3), torch.full((2, 3), NAN)),
        (TaskSpec("r", "regression", 3), torch.full((2, 3), NAN)),
    ],
)
def test_no_labelled_item_gives_nan_for_every_metric(spec, targets):
    scores = task_metrics(spec, torch.zeros(2, spec.num_outputs), targets)
    assert list(scores) == list(build_task(spec).metric_names)
    assert all(math.isnan(v) for v in scores.values())


def test_is_better_directions():
    assert is_better("accuracy", 0.9, 0.8)
    assert not is_better("accuracy", 0.8, 0.9)
    assert is_better("val/shape/macro_f1", 0.5, 0.4)
    assert is_better("val/pose/rmse", 1.0, 2.0)
    assert not is_better("mae", 2.0, 1.0)
    assert is_better("val/loss", 0.1, 0.2)  # unknown names: lower is better
    assert not is_better("accuracy", 0.5, 0.5)


def test_is_better_nan_is_never_better_but_is_beaten():
    assert not is_better("accuracy", NAN, 0.1)
    assert not is_better("mae", NAN, NAN)
    assert is_better("accuracy", 0.1, NAN)
    assert is_better("mae", 5.0, NAN)


SPECS = [TaskSpec("c", "multiclass", 4), TaskSpec("b", "binary", 1), TaskSpec("m", "multilabel", 3),
         TaskSpec("r", "regression", 2)]


def random_batch(spec: TaskSpec, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs and targets of ``spec``'s kind, with about a fifth of the labels missing."""
    outputs = torch.randn(n, spec.num_outputs, generator=generator) * 2
    missing = torch.rand(n, generator=generator) < 0.2
    if spec.kind == "multiclass":
        return outputs, torch.randint(0, spec.num_outputs, (n,), generator=generator).masked_fill(missing, -1)
    if spec.kind == "regression":
        targets = torch.randn(n, spec.num_outputs, generator=generator)
    else:
        targets = (torch.rand(n, spec.num_outputs, generator=generator) < 0.4).float()
    return outputs, targets.masked_fill(missing[:, None], NAN)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.kind)
@pytest.mark.parametrize("batch", [1, 7, 64])
def test_scores_and_loss_do_not_depend_on_the_batching(spec: TaskSpec, batch: int) -> None:
    outputs, targets = random_batch(spec, 200, torch.Generator().manual_seed(0))
    task = build_task(spec)
    whole, streamed = task.metrics(), task.metrics()
    whole.update(outputs, targets)
    for start in range(0, len(outputs), batch):
        streamed.update(outputs[start : start + batch], targets[start : start + batch])
    streamed_scores, whole_scores = streamed.compute(), whole.compute()
    streamed_loss, whole_loss = streamed_scores.pop("loss"), whole_scores.pop("loss")
    assert streamed_scores == pytest.approx(whole_scores, rel=1e-12)
    # The streamed mean loss is the task's loss over the whole split (mean over labelled items), up to the
    # order of float32 sums.
    assert streamed_loss == pytest.approx(whole_loss, rel=1e-6)
    assert streamed_loss == pytest.approx(task.loss(outputs, targets).item(), rel=1e-6)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.kind)
def test_scores_match_scikit_learn(spec: TaskSpec) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    outputs, targets = random_batch(spec, 300, torch.Generator().manual_seed(1))
    scores = task_metrics(spec, outputs, targets, batch=32)
    keep = build_task(spec).valid(targets)
    out, y = outputs[keep].double(), targets[keep]
    if spec.kind == "multiclass":
        predicted = out.argmax(dim=1).numpy()
        expected = {"accuracy": metrics.accuracy_score(y.numpy(), predicted),
                    "macro_f1": metrics.f1_score(y.numpy(), predicted, average="macro")}
    elif spec.kind == "binary":
        expected = {"accuracy": metrics.accuracy_score(y.view(-1).numpy(), (out.view(-1) > 0).numpy()),
                    "auroc": metrics.roc_auc_score(y.view(-1).numpy(), out.view(-1).numpy())}
    elif spec.kind == "multilabel":
        expected = {"accuracy": float(((out > 0).double() == y).double().mean()),
                    "auroc": metrics.roc_auc_score(y.numpy(), out.numpy(), average="macro")}
    else:
        expected = {"mae": metrics.mean_absolute_error(y.numpy(), out.numpy()),
                    "rmse": math.sqrt(metrics.mean_squared_error(y.numpy(), out.numpy()))}
    assert scores == pytest.approx(expected, rel=1e-6)


def test_a_task_kind_rule_is_checked_when_the_spec_is_made() -> None:
    from mtlssl.errors import UserError

    with pytest.raises(UserError, match="unknown kind 'ordinal'; use one of multiclass, binary, multilabel"):
        TaskSpec("t", "ordinal", 3)
    with pytest.raises(UserError, match="num_outputs=1 is too small for multiclass"):
        TaskSpec("t", "multiclass", 1)
    with pytest.raises(UserError, match="a binary task has num_outputs=1"):
        TaskSpec("t", "binary", 2)
