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
