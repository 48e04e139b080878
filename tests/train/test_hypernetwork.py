"""`method: hypernetwork` on the tiny SD models: only the hypernetwork reaches the optimizer, real
steps move it and leave every model weight bit-identical, checkpoints hold only it and load back
exactly, and through the real loop a run stopped and resumed equals one that never stopped."""

from __future__ import annotations

import pytest
import torch

from edlib.model.config import TrainConfig
from edlib.model.hypernetwork_layers import find_hypernetwork
from edlib.model.methods.hypernetwork import HypernetworkMethod
from edlib.model.models import enable_gradient_checkpointing, load_models
from tests.train.loop_support import one_torch_thread  # noqa: F401 - autouse fixture
from tests.train.method_support import stop_after, train_steps, unet_output


def hypernetwork_config(**overrides) -> TrainConfig:
    values = dict(data_root="d", method="hypernetwork", unet_lr=1e-2, hypernetwork_activation_func="relu", seed=3)
    return TrainConfig(**{**values, **overrides})


def model_weights(models) -> dict[str, torch.Tensor]:
    """Every weight of the model itself (the hypernetwork left out), as copies."""
    weights = {}
    for name in models.module_names:
        for key, value in getattr(models, name).state_dict().items():
            if not key.startswith("edlib_hypernetwork."):
                weights[f"{name}.{key}"] = value.clone()
    return weights


def test_only_the_hypernetwork_trains_and_the_model_stays_bit_identical(tiny_sd1):
    models = load_models(tiny_sd1)
    before = unet_output(models)
    method = HypernetworkMethod(hypernetwork_config())
    method.setup(models)
    frozen = model_weights(models)
    hypernetwork = find_hypernetwork(models.unet)
    [group] = method.param_groups(models)
    assert group["name"] == "hypernetwork" and group["lr"] == 1e-2
    trainable = {id(p) for name in models.module_names for p in getattr(models, name).parameters() if p.requires_grad}
    assert {id(p) for p in group["params"]} == trainable == {id(p) for p in hypernetwork.parameters()}
    assert not method.text_encoder_trains(models)  # so text embeddings may be cached
    start = {k: v.clone() for k, v in hypernetwork.state_dict().items()}

    enable_gradient_checkpointing(models)  # gradients must still reach the hypernetwork
    losses = train_steps(models, method, weight_decay=0.1)

    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(torch.equal(value, frozen[key]) for key, value in model_weights(models).items())
    assert all(not torch.equal(value, start[key]) for key, value in hypernetwork.state_dict().items())
    assert not torch.allclose(unet_output(models), before)


def test_checkpoint_holds_only_the_hypernetwork_and_loads_back_exactly(tiny_sd1):
    config = hypernetwork_config()
    models = load_models(tiny_sd1)
    method = HypernetworkMethod(config)
    method.setup(models)
    train_steps(models, method, steps=2)
    saved = method.checkpoint_weights(models)
    assert list(saved) == ["hypernetwork"]
    width = models.unet.config.cross_attention_dim
    assert all(key.startswith(f"layers.{width}.") for key in saved["hypernetwork"])

    fresh = load_models(tiny_sd1)
    HypernetworkMethod(config).setup(fresh)
    assert not torch.equal(unet_output(fresh), unet_output(models))
    HypernetworkMethod(config).load_weights(fresh, saved)
    assert torch.equal(unet_output(fresh), unet_output(models))

    other = load_models(tiny_sd1)
    wider = hypernetwork_config(hypernetwork_layer_structure=[1, 4, 1])
    HypernetworkMethod(wider).setup(other)
    with pytest.raises(ValueError, match="hypernetwork_layer_structure"):
        HypernetworkMethod(wider).load_weights(other, saved)
    with pytest.raises(ValueError, match="another method"):
        HypernetworkMethod(config).load_weights(fresh, {"unet_lora": {}})


def test_mixed_precision_keeps_the_model_in_bf16_and_the_hypernetwork_in_fp32(tiny_sd1):
    models = load_models(tiny_sd1)
    method = HypernetworkMethod(hypernetwork_config(mixed_precision="bf16"))
    method.setup(models)
    hypernetwork = find_hypernetwork(models.unet)
    assert {p.dtype for p in hypernetwork.parameters()} == {torch.float32}
    assert {p.dtype for n, p in models.unet.named_parameters() if not n.startswith("edlib_")} == {torch.bfloat16}
    start = {k: v.clone() for k, v in hypernetwork.state_dict().items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = train_steps(models, method, steps=2)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(v, start[k]) for k, v in hypernetwork.state_dict().items())


def test_layer_norm_with_an_activation_warns_about_comfyui(tiny_sd1, caplog):
    method = HypernetworkMethod(hypernetwork_config(hypernetwork_is_layer_norm=True))
    method.setup(load_models(tiny_sd1))
    assert "ComfyUI also applies the activation after the last layer" in caplog.text


def test_hypernetwork_through_the_loop_resumes_exactly(tiny_sd1, tmp_path):
    """With dropout (the global RNG), EMA, a cosine schedule and sampling on, a run stopped
    after step 3 and resumed gives the losses and hypernetwork of a run that never stopped."""
    from edlib.model.checkpoint import load_checkpoint, resolve_checkpoint
    from edlib.train.loop import train
    from tests.train.loop_support import make_data_root, metrics, tiny_config

    data = make_data_root(tmp_path / "data")
    settings = dict(
        method="hypernetwork", unet_lr=1e-2, batch_size=1, epochs=2, lr_scheduler="cosine", lr_warmup_steps=1,
        ema_decay=0.8, noise_offset=0.05, cache_text_embeddings=True, hypernetwork_activation_func="elu",
        hypernetwork_layer_structure=[1, 2, 2, 1], hypernetwork_dropout_structure=[0, 0.3, 0.3, 0],
        hypernetwork_is_layer_norm=True, hypernetwork_activate_output=True,
        sample_prompts=["red"], sample_every_n_steps=3, sample_at_end=False, export_formats=[],
    )  # fmt: skip
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train(tiny_config(tiny_sd1, data, straight, **settings)).step == 8
    config = tiny_config(tiny_sd1, data, resumed, **settings)
    assert train(config, callbacks=[stop_after(resumed, 3)]).stopped_by == "stop request"
    assert train(config, resume="latest").step == 8

    for a, b in zip(metrics(resumed), metrics(straight), strict=True):
        assert a["step"] == b["step"] and a["loss"] == pytest.approx(b["loss"], abs=1e-6)
    final = {run: load_checkpoint(resolve_checkpoint("latest", run)) for run in (straight, resumed)}
    assert list(final[straight].weights) == ["hypernetwork"]
    for key, value in final[straight].weights["hypernetwork"].items():
        assert torch.allclose(final[resumed].weights["hypernetwork"][key], value, rtol=0, atol=1e-6), key
    for a, b in zip(final[straight].state["ema"]["shadow_params"], final[resumed].state["ema"]["shadow_params"]):
        assert torch.allclose(a, b, rtol=0, atol=1e-6)
    assert (straight / "samples" / "step-000006" / "grid.png").is_file()
