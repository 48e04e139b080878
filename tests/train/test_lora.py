"""LoRA / LoCon through peft on the tiny SD models: kohya's layer choice, only adapters in the
optimizer, real optimizer steps that move the adapters and leave every base weight
bit-identical, and checkpoint weights that hold only adapters and load back exactly."""

from types import SimpleNamespace

import pytest
import torch

from edlib.model.methods.lora import LoraMethod, adapter_layers, adapter_parameters
from edlib.model.models import load_models
from tests.train.loop_support import one_torch_thread  # noqa: F401 - autouse fixture
from tests.train.method_support import stop_after, train_steps, unet_output


def lora_config(**overrides) -> SimpleNamespace:
    """The config keys the LoRA method reads (TrainConfig's names)."""
    values = dict(
        network_dim=4,
        network_alpha=2.0,
        conv_dim=None,
        conv_alpha=1.0,
        unet_lr=1e-3,
        text_encoder_lr=0.0,
        text_encoder_2_lr=None,
        mixed_precision="no",
    )
    values.update(overrides)
    return SimpleNamespace(**values)


def base_weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the module's non-adapter weights, under the names the plain module has
    (peft moves a wrapped layer's weight to `<layer>.base_layer.weight`)."""
    return {
        name.replace(".base_layer", ""): value.clone()
        for name, value in module.state_dict().items()
        if ".lora_A." not in name and ".lora_B." not in name
    }


def test_plain_lora_adapts_the_transformer_blocks_as_kohya_does(tiny_sd1):
    models = load_models(tiny_sd1)
    LoraMethod(lora_config()).setup(models)
    names = {name.split(".lora_")[0] for name in adapter_parameters(models.unet)}
    block = "down_blocks.0.attentions.0"
    layer = f"{block}.transformer_blocks.0"
    expected = {f"{block}.proj_in", f"{block}.proj_out", f"{layer}.ff.net.0.proj", f"{layer}.ff.net.2"}
    expected |= {f"{layer}.{attn}.{proj}" for attn in ("attn1", "attn2") for proj in ("to_q", "to_k", "to_v", "to_out.0")}
    assert {name for name in names if name.startswith(block)} == expected
    assert all(".attentions." in name for name in names)  # nothing outside the transformer blocks
    assert any(name.startswith("mid_block.attentions.0") for name in names)
    assert adapter_parameters(models.text_encoder) == {}


def test_locon_adds_convolutions_with_their_own_rank_and_alpha(tiny_sd1):
    models = load_models(tiny_sd1)
    linear, conv = adapter_layers(models.unet, ("ResnetBlock2D", "Downsample2D", "Upsample2D"))
    assert "down_blocks.0.resnets.0.conv1" in conv and "mid_block.resnets.1.conv2" in conv
    assert "down_blocks.0.downsamplers.0.conv" in conv and "up_blocks.0.upsamplers.0.conv" in conv
    assert "down_blocks.1.resnets.0.conv_shortcut" in linear and "down_blocks.0.resnets.0.time_emb_proj" in linear

    LoraMethod(lora_config(conv_dim=2, conv_alpha=1.0)).setup(models)
    adapted = {name.split(".lora_")[0] for name in adapter_parameters(models.unet)}
    assert set(linear) | set(conv) <= adapted
    layers = dict(models.unet.named_modules())
    conv1 = layers["down_blocks.0.resnets.0.conv1"]
    assert conv1.lora_A["default"].weight.shape == (2, 32, 3, 3)  # down: the base kernel, rank conv_dim
    assert conv1.lora_B["default"].weight.shape == (32, 2, 1, 1)  # up: 1x1
    assert conv1.scaling["default"] == pytest.approx(1.0 / 2)
    shortcut = layers["down_blocks.1.resnets.0.conv_shortcut"]
    assert shortcut.lora_A["default"].weight.shape == (4, 32, 1, 1)
    assert shortcut.scaling["default"] == pytest.approx(2.0 / 4)
    to_q = layers["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"]
    assert to_q.scaling["default"] == pytest.approx(2.0 / 4)


def test_param_groups_hold_only_adapters_at_their_rates(tiny_sd1):
    models = load_models(tiny_sd1)
    method = LoraMethod(lora_config(conv_dim=2, unet_lr=2e-4, text_encoder_lr=5e-5))
    method.setup(models)
    groups = {group["name"]: group for group in method.param_groups(models)}
    assert set(groups) == {"unet_lora", "text_encoder_lora"}
    assert groups["unet_lora"]["lr"] == 2e-4 and groups["text_encoder_lora"]["lr"] == 5e-5
    in_optimizer = {id(p) for group in groups.values() for p in group["params"]}
    trainable = {
        id(p) for module in (models.unet, models.text_encoder, models.vae) for p in module.parameters() if p.requires_grad
    }
    assert in_optimizer == trainable
    expected = list(adapter_parameters(models.unet).values()) + list(adapter_parameters(models.text_encoder).values())
    assert in_optimizer == {id(p) for p in expected}
    # text encoder lines: q/k/v/out projections and both MLP layers of each of its 2 layers
    text_layers = {name.split(".lora_")[0].split(".", 3)[-1] for name in adapter_parameters(models.text_encoder)}
    assert text_layers == {f"self_attn.{p}_proj" for p in "qkv"} | {"self_attn.out_proj", "mlp.fc1", "mlp.fc2"}


def test_steps_move_adapters_and_leave_the_base_bit_identical(tiny_sd1):
    models = load_models(tiny_sd1)
    before = unet_output(models)
    method = LoraMethod(lora_config(conv_dim=2, text_encoder_lr=1e-3))
    method.setup(models)
    frozen = {name: base_weights(getattr(models, name)) for name in ("unet", "text_encoder", "vae")}
    start = {name: p.detach().clone() for name, p in adapter_parameters(models.unet).items()}
    assert torch.equal(unet_output(models), before)  # lora_up starts at zero

    losses = train_steps(models, method)

    assert all(torch.isfinite(torch.tensor(losses)))
    for name, weights in frozen.items():
        for key, value in base_weights(getattr(models, name)).items():
            assert torch.equal(value, weights[key]), f"{name}.{key} changed"
    moved = [name for name, p in adapter_parameters(models.unet).items() if not torch.equal(p, start[name])]
    assert len(moved) == len(start)
    assert any(not torch.equal(p, torch.zeros_like(p)) for p in adapter_parameters(models.text_encoder).values())
    assert not torch.allclose(unet_output(models), before)


def test_checkpoint_holds_only_adapters_and_loads_back_exactly(tiny_sd1):
    config = lora_config(conv_dim=2, text_encoder_lr=1e-3)
    models = load_models(tiny_sd1)
    method = LoraMethod(config)
    method.setup(models)
    train_steps(models, method, steps=2)
    saved = method.checkpoint_weights(models)

    assert set(saved) == {"unet_lora", "text_encoder_lora"}
    assert all(".lora_A." in key or ".lora_B." in key for tensors in saved.values() for key in tensors)
    saved_numel = sum(t.numel() for t in saved["unet_lora"].values())
    assert saved_numel < sum(p.numel() for p in models.unet.parameters()) / 5

    fresh = load_models(tiny_sd1)
    LoraMethod(config).setup(fresh)
    assert not torch.equal(unet_output(fresh), unet_output(models))
    LoraMethod(config).load_weights(fresh, saved)
    assert torch.equal(unet_output(fresh), unet_output(models))


def test_loading_a_checkpoint_of_another_shape_names_the_problem(tiny_sd1):
    models = load_models(tiny_sd1)
    method = LoraMethod(lora_config())
    method.setup(models)
    saved = method.checkpoint_weights(models)

    other = load_models(tiny_sd1)
    LoraMethod(lora_config(network_dim=8)).setup(other)
    with pytest.raises(ValueError, match="network_dim"):
        LoraMethod(lora_config(network_dim=8)).load_weights(other, saved)
    with pytest.raises(ValueError, match="text_encoder_lr"):
        LoraMethod(lora_config(text_encoder_lr=1e-4)).load_weights(other, saved)


def test_bf16_training_keeps_the_base_in_bf16_and_adapters_in_fp32(tiny_sd1):
    models = load_models(tiny_sd1)
    method = LoraMethod(lora_config(mixed_precision="bf16", conv_dim=2))
    method.setup(models)
    adapters = adapter_parameters(models.unet)
    base = {name: p.detach().clone() for name, p in models.unet.named_parameters() if name not in adapters}
    assert {p.dtype for p in adapters.values()} == {torch.float32}
    assert {p.dtype for p in base.values()} == {torch.bfloat16}

    start = {name: p.detach().clone() for name, p in adapters.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as the loop runs mixed precision
        losses = train_steps(models, method, steps=2)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(not torch.equal(p, start[name]) for name, p in adapters.items() if ".lora_B." in name)
    assert {p.dtype for p in adapter_parameters(models.unet).values()} == {torch.float32}
    assert all(torch.equal(p, base[name]) for name, p in models.unet.named_parameters() if name in base)


def test_bad_rank_is_an_error(tiny_sd1):
    with pytest.raises(ValueError, match="network_dim"):
        LoraMethod(lora_config(network_dim=0)).setup(load_models(tiny_sd1))


def test_lora_through_the_loop_resumes_exactly(tiny_sd1, tmp_path):
    """`method: lora` in the real loop: checkpoints hold only adapters, and a run stopped
    after step 2 and resumed gives the losses and adapters of a run that never stopped."""
    from edlib.model.checkpoint import load_checkpoint, resolve_checkpoint
    from edlib.train.loop import train
    from tests.train.loop_support import make_data_root, metrics, tiny_config

    data = make_data_root(tmp_path / "data")
    settings = dict(
        method="lora", network_dim=4, network_alpha=2.0, conv_dim=2, unet_lr=1e-3, text_encoder_lr=5e-4, batch_size=1,
        epochs=2, lr_scheduler="cosine", lr_warmup_steps=1, noise_offset=0.05,
    )  # fmt: skip
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train(tiny_config(tiny_sd1, data, straight, **settings)).step == 8
    config = tiny_config(tiny_sd1, data, resumed, **settings)
    assert train(config, callbacks=[stop_after(resumed, 3)]).stopped_by == "stop request"
    assert train(config, resume="latest").step == 8

    for a, b in zip(metrics(resumed), metrics(straight), strict=True):
        assert a["step"] == b["step"] and a["loss"] == pytest.approx(b["loss"], abs=1e-6)
    final = {run: load_checkpoint(resolve_checkpoint("latest", run)).weights for run in (straight, resumed)}
    assert set(final[straight]) == {"unet_lora", "text_encoder_lora"}
    assert all(".lora_A." in k or ".lora_B." in k for tensors in final[straight].values() for k in tensors)
    for name, tensors in final[straight].items():
        for key, value in tensors.items():
            assert torch.allclose(final[resumed][name][key], value, rtol=0, atol=1e-6), f"{name}: {key}"
