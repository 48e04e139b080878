"""Per-image sampling weights in the loop (the hard-example boost): the loss tracker's
weights for flagged images, the plugin hook, and an exact mid-epoch resume of a weighted epoch."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from edlib.model.checkpoint import load_checkpoint, resolve_checkpoint
from edlib.model.config import ConfigError
from edlib.train.hooks import Plugin
from edlib.train.loop import train
from edlib.train.loss_tracker import LossTracker, LossTrackerPlugin
from tests.train.loop_support import make_data_root, metrics, one_torch_thread, tiny_config  # noqa: F401 - autouse fixture
from tests.train.test_loss_tracker import _synthetic_stream


def _config(**overrides):
    return tiny_config(Path("model"), Path("data"), Path("run"), **overrides)


def test_the_loss_tracker_weights_flagged_images_by_the_boost():
    paths = [f"f/{i:02d}.png" for i in range(20)]
    plugin = LossTrackerPlugin(LossTracker(buckets=10))
    _synthetic_stream(plugin.tracker, paths, {"f/07.png"}, rounds=40)
    assert plugin.tracker.flagged() == ["f/07.png"]

    def weights(boost):
        return plugin.item_weights(SimpleNamespace(config=_config(hard_example_boost=boost)))

    assert weights(0.0) is None
    assert weights(0.5) == {"f/07.png": 1.5}
    assert weights(1.0) == {"f/07.png": 2.0}
    assert weights(-1.0) == {"f/07.png": 0.0}
    with pytest.raises(ConfigError, match="hard_example_boost"):
        _config(hard_example_boost=1.5)
    with pytest.raises(ConfigError, match="loss_tracking: true"):
        _config(hard_example_boost=0.5, loss_tracking=False)


class ShiftingWeights(Plugin):
    """Weights that depend on the plugin's state, which moves on within an epoch: a resume
    that asked the plugin again instead of restoring the epoch's weights would plan the
    resumed epoch differently."""

    name = "shifting_weights"

    def __init__(self):
        self.seen = 0

    def on_sample_losses(self, ctx, batch, timesteps, losses) -> None:
        self.seen += len(losses)

    def item_weights(self, ctx):
        return {"warm/red_0.png": 3.0} if self.seen == 0 else {"cool/green_0.png": 2.5}

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, state) -> None:
        self.seen = state.get("seen", 0)


def _stop_at(run: Path, step: int):
    def callback(event):
        if event.kind == "step" and event.data["step"] == step:
            (run / "control" / "stop").touch()

    return callback


@pytest.mark.slow
def test_a_weighted_epoch_resumed_mid_epoch_equals_an_uninterrupted_run(tiny_sd1, tmp_path):
    data = make_data_root(tmp_path / "data")  # warm/red_0, warm/white_1, cool/green_0, cool/blue_1
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    settings = dict(batch_size=1, epochs=2, unet_lr=1e-3)

    summary = train(tiny_config(tiny_sd1, data, straight, **settings), plugins=[ShiftingWeights()])
    epoch0 = (straight / "schedules" / "ep0_batch_schedule.txt").read_text()
    epoch1 = (straight / "schedules" / "ep1_batch_schedule.txt").read_text()
    assert epoch0.count("warm/red_0.png") == 3 and len(epoch0.splitlines()) == 6  # 3 x its one sample
    assert epoch1.count("warm/red_0.png") == 1 and epoch1.count("cool/green_0.png") in (2, 3)
    assert summary.step == 6 + len(epoch1.splitlines())

    config = tiny_config(tiny_sd1, data, resumed, **settings)
    assert train(config, plugins=[ShiftingWeights()], callbacks=[_stop_at(resumed, 3)]).stopped_by == "stop request"
    saved = load_checkpoint(resolve_checkpoint("latest", resumed))
    assert saved.state["position"]["batch"] == 3 and saved.state["item_weights"] == {"warm/red_0.png": 3.0}
    assert train(config, resume="latest", plugins=[ShiftingWeights()]).step == summary.step

    for name in ("ep0_batch_schedule.txt", "ep1_batch_schedule.txt"):
        assert (resumed / "schedules" / name).read_text() == (straight / "schedules" / name).read_text()
    records, reference = metrics(resumed), metrics(straight)
    assert [r["step"] for r in records] == [r["step"] for r in reference]
    for a, b in zip(records, reference):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
