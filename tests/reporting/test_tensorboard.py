from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mtlssl.stages import train_mtl
from tests.conftest import tiny


def test_train_mtl_writes_real_event_files_with_scalars_and_hparams(tmp_path: Path) -> None:
    train_mtl.run(tiny("train_mtl", "trainer.epochs=2", "weighting=uncertainty"), tmp_path)
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/shape/loss", "weights/shape", "val/shape/accuracy", "val/loss"} <= tags
    steps = [e.step for e in events.Scalars("val/shape/accuracy")]
    assert len(steps) == 2 and steps == sorted(steps) and steps[0] > 0  # one point per epoch, on the step axis
    assert "hparam/test/shape/accuracy" in tags
    # The hparams plugin data sits in the same directory as the curves (not a timestamped subfolder).
    assert "hparams" in events.PluginTagToContent("hparams") or events.PluginTagToContent("hparams")


def test_metrics_json_summarises_weights_and_gradient_conflicts(tmp_path: Path) -> None:
    import json

    train_mtl.run(tiny("train_mtl", "trainer.epochs=2", "weighting=mgda"), tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    summary = metrics["gradient_summary"]
    assert metrics["gradient_summary_steps"] == 4  # 2 epochs x 2 steps, logged every step
    assert 0.0 <= summary["grad/conflicting_pairs"] <= 1.0 and summary["grad/shape/norm"] > 0
    assert abs(sum(summary[f"weights/{t}"] for t in ("shape", "colour", "size", "position", "outlined")) - 1) < 1e-4
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert "grad/cosines" in events.Tags()["images"]  # the per-epoch cosine heatmap
