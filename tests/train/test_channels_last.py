"""channels_last: the UNet and its inputs change memory layout, not results."""

import torch

from edlib.model.checkpoint import load_checkpoint, resolve_checkpoint
from edlib.train.hooks import Plugin
from edlib.train.loop import train
from tests.train.loop_support import (  # noqa: F401
    checkpoint_weights,
    make_data_root,
    metrics,
    one_torch_thread,
    tiny_config,
)


class _UnetInputs(Plugin):
    """Records the memory format of the UNet's conv weights and of the latents it is given."""

    name = "unet_inputs"

    def on_start(self, ctx):
        unet = ctx.accelerator.unwrap_model(ctx.models.unet)
        self.weight_channels_last = unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        self.input_channels_last = []
        unet.conv_in.register_forward_pre_hook(
            lambda module, args: self.input_channels_last.append(args[0].is_contiguous(memory_format=torch.channels_last))
        )


def test_channels_last_gives_the_same_losses_and_weights(tiny_sd1, tmp_path):
    data = make_data_root(tmp_path / "data")
    runs = {}
    for channels_last in (False, True):
        probe = _UnetInputs()
        run_dir = tmp_path / f"run-{channels_last}"
        summary = train(tiny_config(tiny_sd1, data, run_dir, channels_last=channels_last), plugins=[probe])
        runs[channels_last] = (metrics(run_dir), checkpoint_weights(summary.last_checkpoint), summary)
        assert probe.weight_channels_last == channels_last
        if channels_last:  # (without it the layout is whatever the VAE and noise give, unchecked)
            assert probe.input_channels_last and all(probe.input_channels_last)

    plain, fast = runs[False], runs[True]
    assert [m["step"] for m in plain[0]] == [m["step"] for m in fast[0]] == [1, 2, 3, 4]
    for a, b in zip(plain[0], fast[0]):
        assert abs(a["loss"] - b["loss"]) <= 1e-5 * max(1.0, abs(a["loss"])), (a["loss"], b["loss"])
    # Weights are not compared element by element: Adam divides by sqrt(v), so for weights whose
    # gradient is near zero a rounding-level difference in the gradient (another conv kernel
    # order) becomes a difference of the size of the learning rate. The losses above carry it.
    assert plain[1].keys() == fast[1].keys()
    # The checkpoint written from channels_last weights loads as a normal one.
    assert load_checkpoint(resolve_checkpoint(fast[2].last_checkpoint)).weights
