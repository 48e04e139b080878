"""Issue 9's lean full fine-tune: `full_bf16` (trained weights and gradients in bf16, kohya's
--full_bf16) and frozen encoders kept in CPU memory while the caches hold all they compute.

On the CPU the training device is the CPU, so "offloaded" and "on the device" are the same
place here: these tests check the placement decisions, that every encoder call happens on the
training device and that sampling and validation mid-run work with offloading on. The GPU
test at the end checks that the modules really leave the GPU (run by bench/gpu_check.sh).
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from edlib.model.config import ConfigError
from edlib.model.models import load_models
from edlib.model.offload import HOME, home_device, offloaded_modules, on_device
from edlib.model.resume_keys import RESUME_IMMUTABLE_KEYS
from edlib.train.hooks import Plugin
from edlib.train.loop import train
from tests.train.loop_support import make_data_root, metrics, one_torch_thread, tiny_config  # noqa: F401
from tests.train.test_sampling import _prompt_file

LEAN = dict(
    mixed_precision="bf16",
    full_bf16=True,
    gradient_checkpointing=True,
    cache_latents="memory",
    cache_text_embeddings=True,
)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(mixed_precision="no"), "full_bf16: .*needs mixed_precision: bf16 \\(got 'no'\\)"),
        (dict(mixed_precision="fp16"), "full_bf16: .*needs mixed_precision: bf16 \\(got 'fp16'\\)"),
        (dict(mixed_precision="bf16", method="lora"), "full_bf16: is for method: full \\(got 'lora'\\)"),
        (
            dict(mixed_precision="bf16", method="textual_inversion", text_encoder_lr=1e-3,
                 placeholder_tokens=[{"token": "<x>", "init_word": "dog"}]),
            "full_bf16: is for method: full \\(got 'textual_inversion'\\)",
        ),
    ],
)  # fmt: skip
def test_full_bf16_needs_bf16_and_a_full_fine_tune(tmp_path, settings, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(tmp_path / "model", tmp_path / "data", tmp_path / "run", full_bf16=True, **settings)
    assert "full_bf16" in RESUME_IMMUTABLE_KEYS  # the weights' precision cannot change on resume


def test_encoders_whose_outputs_are_all_cached_wait_in_cpu_memory(tiny_sdxl, tmp_path):
    models = load_models(tiny_sdxl)
    cuda = torch.device("cuda")  # a device value only: placement is decided, nothing is moved

    def config(**values):
        return tiny_config(tiny_sdxl, tmp_path, tmp_path / "run", **values)

    both = config(cache_latents="disk", cache_text_embeddings=True)
    assert offloaded_modules(both, models) == ("vae", "text_encoder", "text_encoder_2")
    assert {n: home_device(n, both, models, cuda) for n in models.module_names} == {
        "text_encoder": HOME, "text_encoder_2": HOME, "vae": HOME, "unet": cuda,
    }  # fmt: skip
    assert offloaded_modules(config(cache_latents="memory"), models) == ("vae",)  # text encoded every step
    assert offloaded_modules(config(cache_text_embeddings=True), models) == ("text_encoder", "text_encoder_2")
    assert offloaded_modules(config(), models) == ()
    assert home_device("vae", config(), models, cuda) == cuda

    # Already where asked: nothing moves, on entry or on exit.
    with on_device(models, ("vae",), torch.device("cpu")):
        assert models.vae.device == HOME
    assert models.vae.device == HOME


class _Watch(Plugin):
    """Records where the modules are between steps and when each encoder runs, and the dtype
    of the gradients the UNet gets."""

    name = "watch"

    def __init__(self):
        self.between_steps, self.encoder_calls, self.grad_dtypes = [], [], set()

    def on_start(self, ctx):
        self.ctx = ctx
        models = ctx.models
        for name in ("vae", *models.text_encoder_names):
            module = getattr(models, name)
            inner = module.encoder if name == "vae" else module  # the VAE's encoder: encode, not decode
            inner.register_forward_pre_hook(lambda m, args, name=name: self.encoder_calls.append((name, _device(m))))
        for param in list(models.unet.parameters())[:3]:
            param.register_post_accumulate_grad_hook(lambda p: self.grad_dtypes.add(p.grad.dtype))

    def on_step(self, ctx, metrics):
        self.between_steps.append({name: _device(getattr(ctx.models, name)) for name in ctx.models.module_names})


def _device(module) -> str:
    return next(module.parameters()).device.type


def _lean_run(model: Path, tmp_path: Path, **overrides):
    data = make_data_root(tmp_path / "data", folders={"warm": ["red", "white", "red"], "cool": ["green", "blue", "blue"]})
    watch = _Watch()
    settings = dict(
        LEAN, epochs=3, unet_lr=1e-3, validation_fraction=0.34, sample_prompts=str(_prompt_file(tmp_path)),
        sample_every_n_steps=2, sample_at_end=False, **overrides,
    )  # fmt: skip
    summary = train(tiny_config(model, data, tmp_path / "run", **settings), plugins=[watch])
    return summary, watch


def test_lean_sdxl_run_trains_bf16_weights_with_offloaded_encoders_and_samples_mid_run(tiny_sdxl, tmp_path):
    summary, watch = _lean_run(tiny_sdxl, tmp_path)
    assert summary.step == 6 and summary.stopped_by == "epochs"
    models, device = watch.ctx.models, watch.ctx.accelerator.device

    # full_bf16: the trained UNet and its gradients are bf16, and so is the checkpoint.
    assert {p.dtype for p in models.unet.parameters()} == {torch.bfloat16}
    assert watch.grad_dtypes == {torch.bfloat16}
    assert {t.dtype for t in load_file(str(summary.last_checkpoint / "unet.safetensors")).values()} == {torch.bfloat16}
    records = metrics(tmp_path / "run")
    losses = [r["loss"] for r in records]
    assert all(0 < loss < 10 for loss in losses) and sum(losses[-2:]) < sum(losses[:2])
    assert all("val_loss" in r for r in records if r["step"] % 2 == 0)  # validated at each epoch end

    # Between steps the cached encoders wait in CPU memory; each encoder call (cache misses,
    # sampling, validation) ran on the training device.
    # (Compared by type: the device "cuda" is the parameters' "cuda:0".)
    expected = {name: home_device(name, watch.ctx.config, models, device).type for name in models.module_names}
    assert watch.between_steps and all(where == expected for where in watch.between_steps)
    assert {name for name, _ in watch.encoder_calls} == {"vae", "text_encoder", "text_encoder_2"}
    assert {where for _, where in watch.encoder_calls} == {device.type}
    # Samples mid-run, from the live modules.
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == ["step-000002", "step-000004", "step-000006"]
    assert all((tmp_path / "run" / "samples" / s / "grid.png").is_file() for s in ("step-000002", "step-000004"))


def test_a_full_bf16_run_exports_in_the_dtype_asked_for(tiny_sd1, tmp_path):
    from edlib.export.run import export_run

    summary = train(tiny_config(tiny_sd1, make_data_root(tmp_path / "data"), tmp_path / "run", **LEAN, max_steps=1))
    for dtype, expected in (("fp16", torch.float16), ("fp32", torch.float32)):
        [path] = export_run(summary.run_dir, "single-file", out=tmp_path / dtype, dtype=dtype)
        assert {t.dtype for t in load_file(str(path)).values() if t.is_floating_point()} == {expected}


@pytest.mark.gpu
def test_on_a_gpu_the_cached_encoders_leave_it_between_steps(tiny_sdxl, tmp_path):
    summary, watch = _lean_run(tiny_sdxl, tmp_path, optimizer="adamw8bit")
    assert summary.step == 6
    assert all(where["unet"] == "cuda" for where in watch.between_steps)
    assert all(where[name] == "cpu" for where in watch.between_steps for name in ("vae", "text_encoder", "text_encoder_2"))
    assert watch.encoder_calls and all(where == "cuda" for _, where in watch.encoder_calls)


def test_full_bf16_with_nearest_rounding_warns_that_small_updates_round_away(tiny_sd1, tmp_path):
    warnings = []
    config = tiny_config(
        tiny_sd1, make_data_root(tmp_path / "data"), tmp_path / "run", epochs=1, optimizer="adafactor",
        stochastic_rounding=False, export_formats=[], **LEAN,
    )  # fmt: skip
    train(config, callbacks=[lambda e: warnings.append(e.data["message"]) if e.kind == "warning" else None])
    assert any("stochastic_rounding: false: weight updates under half a bf16 step" in w for w in warnings)
