"""EveryDream2 per-image settings reach training (issue 20): a sidecar's loss_scale scales
that image's loss in the real loop, its cond_dropout and shuffle_tags shape its caption, the
main prompt stays first when tags shuffle, and a run resumed mid-epoch finishes the epoch
with the per-image multipliers it was planned with."""

from edlib.data.scan import scan
from edlib.model.checkpoint import resolve_checkpoint
from edlib.train.batches import LocalBatch, batch_captions, sample_loss_scales
from edlib.train.loop import train
from tests.train.loop_support import (
    checkpoint_weights,
    make_data_root,
    max_weight_difference,
    metrics,
    one_torch_thread,  # noqa: F401 - autouse fixture
    tiny_config,
)


def _write(path, text):
    path.write_text(text, encoding="utf-8")


def test_sidecar_loss_scale_zero_leaves_the_weights_untouched(tiny_sd1, tmp_path):
    """Both images of a folder say loss_scale 0 in their own .yaml (the folder's is 1): no
    gradient, the UNet stays bit-identical; the same run without the sidecars changes it."""
    data = make_data_root(tmp_path / "data", folders={"muted": ["red", "blue"]})
    for name in ("red_0", "blue_1"):
        _write(data / "muted" / f"{name}.yaml", f"main_prompt: {name.split('_')[0]}\nloss_scale: 0\n")
    common = dict(epochs=1, optimizer_args={"weight_decay": 0.0}, unet_lr=1e-3)
    train(tiny_config(tiny_sd1, data, tmp_path / "zero", **common))
    base = checkpoint_weights(tiny_sd1 / "unet", "diffusion_pytorch_model")
    zero = checkpoint_weights(resolve_checkpoint("latest", tmp_path / "zero"))
    assert max_weight_difference(base, zero) == 0.0
    assert all(r["loss"] == 0.0 for r in metrics(tmp_path / "zero"))

    for name in ("red_0", "blue_1"):
        (data / "muted" / f"{name}.yaml").unlink()
    train(tiny_config(tiny_sd1, data, tmp_path / "one", **common))
    one = checkpoint_weights(resolve_checkpoint("latest", tmp_path / "one"))
    assert max_weight_difference(base, one) > 1e-5


def test_captions_and_loss_scales_follow_each_images_own_settings(tiny_sd1, tmp_path):
    data = make_data_root(tmp_path / "data", folders={"f": ["red", "blue", "green"]})
    _write(data / "f" / "red_0.yaml", "main_prompt: red\ncond_dropout: 1.0\nloss_scale: 2.5\n")
    _write(data / "f" / "blue_1.txt", "main part, t1, t2, t3, t4")
    _write(data / "f" / "blue_1.yaml", "shuffle_tags: true\n")
    _write(data / "f" / "green_2.txt", "green, g1, g2, g3")
    result = scan(data)
    config = tiny_config(tiny_sd1, data, tmp_path / "run")
    assert config.keep_tokens == 1  # the main prompt stays first by default, as in EveryDream2
    paths = [it.path for it in result.items]
    red, blue, green = (paths.index(p) for p in ("f/red_0.png", "f/blue_1.png", "f/green_2.png"))
    seen = {blue: set(), green: set()}
    for index in range(200):
        batch = LocalBatch(0, index, (64, 64), (0, 1, 2), (red, blue, green), (False, False, False))
        captions = batch_captions(result, batch, config, seed=7)
        assert captions[0] == ""  # red's own cond_dropout 1.0
        assert captions[1].split(", ")[0] == "main part"
        seen[blue].add(captions[1])
        seen[green].add(captions[2])
    assert len(seen[blue]) > 10  # blue's own shuffle_tags shuffles its tags
    assert seen[green] == {"green, g1, g2, g3"}  # green has no shuffling
    batch = LocalBatch(0, 0, (64, 64), (0, 1, 2), (red, blue, green), (False, False, False))
    assert sample_loss_scales(result, batch) == [2.5, 1.0, 1.0]


def test_resume_mid_epoch_keeps_the_per_image_multipliers_planned(tiny_sd1, tmp_path):
    """A sidecar's multiply edited while a run is stopped mid-epoch: the rest of that epoch is
    the one planned, as for multiply.txt (the checkpoint saves per-image multipliers)."""
    data = make_data_root(tmp_path / "data")
    _write(data / "warm" / "red_0.yaml", "main_prompt: red\nmultiply: 2\n")
    run = tmp_path / "run"
    config = tiny_config(tiny_sd1, data, run, batch_size=1, epochs=1)

    def stop_at_2(event):
        if event.kind == "step" and event.data["step"] == 2:
            (run / "control" / "stop").touch()

    train(config, callbacks=[stop_at_2])
    planned = (run / "schedules" / "ep0_batch_schedule.txt").read_text()
    assert sum(line.endswith("\twarm/red_0.png") for line in planned.splitlines()) == 2

    _write(data / "warm" / "red_0.yaml", "main_prompt: red\nmultiply: 1\n")
    summary = train(config, resume="latest")
    assert (run / "schedules" / "ep0_batch_schedule.txt").read_text() == planned
    assert summary.step == 5 and [r["step"] for r in metrics(run)] == [1, 2, 3, 4, 5]
