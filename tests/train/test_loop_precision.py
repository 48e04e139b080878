"""Mixed precision: frozen modules run in the low-precision dtype, trainable weights stay
fp32, and (on CUDA, fp16) the grad scaler's state goes into checkpoints and comes back."""

import pytest
import torch

from edlib.model.checkpoint import load_checkpoint, resolve_checkpoint
from edlib.train.hooks import Plugin
from edlib.train.loop import train
from tests.train.loop_support import make_data_root, metrics, one_torch_thread, tiny_config  # noqa: F401


class _Keep(Plugin):
    name = "keep"

    def on_start(self, ctx):
        self.ctx = ctx


def test_bf16_on_cpu(tiny_sd1, tmp_path):
    data = make_data_root(tmp_path / "data")
    keep = _Keep()
    summary = train(tiny_config(tiny_sd1, data, tmp_path / "run", mixed_precision="bf16"), plugins=[keep])
    models = keep.ctx.models
    assert next(models.vae.parameters()).dtype == torch.bfloat16
    assert next(models.text_encoder.parameters()).dtype == torch.bfloat16
    assert next(models.unet.parameters()).dtype == torch.float32  # master weights
    assert summary.step == 4 and all(0 < r["loss"] < 10 for r in metrics(tmp_path / "run"))


@pytest.mark.gpu
def test_fp16_on_cuda_saves_and_restores_the_grad_scaler(tiny_sd1, tmp_path):
    data = make_data_root(tmp_path / "data")
    run = tmp_path / "run"
    config = tiny_config(tiny_sd1, data, run, epochs=2, mixed_precision="fp16")

    def stop_at_2(event):
        if event.kind == "step" and event.data["step"] == 2:
            (run / "control" / "stop").touch()

    train(config, callbacks=[stop_at_2])
    scaler = load_checkpoint(resolve_checkpoint("latest", run)).state["scaler"]
    assert scaler is not None and scaler["scale"] > 0
    assert train(config, resume="latest").step == 4
    assert all(r["loss"] == r["loss"] for r in metrics(run))  # no NaN


@pytest.mark.gpu
def test_compiled_bf16_run_checkpoints_plain_unet_keys(tiny_sd1, tmp_path):
    data = make_data_root(tmp_path / "data")
    summary = train(tiny_config(tiny_sd1, data, tmp_path / "run", compile=True, mixed_precision="bf16"))
    keys = set(load_checkpoint(summary.last_checkpoint).weights["unet"])
    assert "conv_in.weight" in keys and not any(k.startswith(("_orig_mod.", "module.")) for k in keys)
