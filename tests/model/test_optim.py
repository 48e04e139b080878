"""make_optimizer by name, and the parameter groups of a full fine-tune."""

import sys

import pytest
import torch

from edlib.model.config import OPTIMIZERS, TrainConfig
from edlib.model.models import encode_prompts, load_models
from edlib.model.optim import _BUILDERS, make_optimizer, param_groups


def _groups(lr_a=1e-3, lr_b=1e-2):
    torch.manual_seed(0)
    a, b = torch.nn.Linear(8, 8), torch.nn.Linear(8, 4)
    return (
        a,
        b,
        [
            {"name": "a", "params": list(a.parameters()), "lr": lr_a},
            {"name": "b", "params": list(b.parameters()), "lr": lr_b},
        ],
    )


def _step(optimizer, *modules):
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    loss = sum(m(x).square().mean() for m in modules)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def test_every_config_optimizer_has_a_builder():
    assert set(_BUILDERS) == set(OPTIMIZERS)


def test_adamw_keeps_group_learning_rates_and_applies_args():
    a, b, groups = _groups()
    before = a.weight.detach().clone()
    optimizer = make_optimizer("adamw", groups, {"weight_decay": 0.05, "betas": [0.8, 0.95]})
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [(g["name"], g["lr"]) for g in optimizer.param_groups] == [("a", 1e-3), ("b", 1e-2)]
    assert optimizer.param_groups[0]["weight_decay"] == 0.05 and tuple(optimizer.param_groups[0]["betas"]) == (
        0.8,
        0.95,
    )
    assert not optimizer.param_groups[0]["fused"]  # parameters on the CPU
    _step(optimizer, a, b)
    # Adam's first step moves every weight by about lr (sign of the gradient).
    assert (a.weight - before).abs().mean().item() == pytest.approx(1e-3, rel=0.1)


def test_adafactor_follows_the_configured_learning_rate():
    moves = []
    for lr in (1e-3, 1e-2):
        a, b, groups = _groups(lr, lr)
        before = a.weight.detach().clone()
        optimizer = make_optimizer("adafactor", groups)
        assert type(optimizer).__name__ == "Adafactor"
        _step(optimizer, a, b)
        moves.append((a.weight - before).abs().mean().item())
    assert moves[0] > 0 and moves[1] / moves[0] == pytest.approx(10, rel=0.01)


@pytest.mark.parametrize(
    "name, package, lrs", [("lion", "lion_pytorch", (1e-4, 1e-5)), ("prodigy", "prodigyopt", (1.0, 1.0))]
)
def test_lion_and_prodigy_step(name, package, lrs):
    pytest.importorskip(package)
    a, b, groups = _groups(*lrs)
    before = a.weight.detach().clone()
    optimizer = make_optimizer(name, groups)
    _step(optimizer, a, b)
    assert not torch.equal(a.weight, before)
    assert [g["lr"] for g in optimizer.param_groups] == list(lrs)


def test_prodigy_refuses_different_group_rates_naming_the_keys():
    pytest.importorskip("prodigyopt")
    with pytest.raises(ValueError, match="prodigy needs one learning rate.*text_encoder_lr"):
        make_optimizer("prodigy", _groups(1.0, 0.5)[2])


@pytest.mark.parametrize(
    "name, module, install", [("lion", "lion_pytorch", "lion-pytorch"), ("prodigy", "prodigyopt", "prodigyopt")]
)
def test_missing_package_names_what_to_install(monkeypatch, name, module, install):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail, as when not installed
    with pytest.raises(ValueError, match=f"optimizer: {name} needs the {module} package: pip install {install}"):
        make_optimizer(name, _groups()[2])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_adamw8bit_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="adamw8bit needs a CUDA GPU"):
        make_optimizer("adamw8bit", _groups()[2])


def test_bad_names_and_arguments_are_clear():
    with pytest.raises(
        ValueError, match="optimizer: unknown value 'sgd'; allowed: adamw, adamw8bit, lion, prodigy, adafactor"
    ):
        make_optimizer("sgd", _groups()[2])
    with pytest.raises(ValueError, match="optimizer_args: .*momentum.*\\(optimizer adamw\\)"):
        make_optimizer("adamw", _groups()[2], {"momentum": 0.9})
    with pytest.raises(ValueError, match="optimizer_args: lr is set by unet_lr"):
        make_optimizer("adamw", _groups()[2], {"lr": 1.0})


@pytest.mark.gpu
def test_adamw_is_fused_on_cuda_and_adamw8bit_steps():
    a, b, groups = _groups()
    a.cuda(), b.cuda()
    assert make_optimizer("adamw", groups).param_groups[0]["fused"] is True
    optimizer = make_optimizer("adamw8bit", groups)
    before = a.weight.detach().clone()
    x = torch.randn(16, 8, device="cuda")
    (a(x).square().mean() + b(x).square().mean()).backward()
    optimizer.step()
    assert not torch.equal(a.weight, before)


def test_param_groups_freeze_the_text_encoder_at_lr_zero(tiny_sd1):
    models = load_models(tiny_sd1)
    groups = param_groups(models, {}, unet_lr=1e-4)
    assert [(g["name"], g["lr"]) for g in groups] == [("unet", 1e-4)]
    assert not any(p.requires_grad for p in models.text_encoder.parameters())
    assert not any(p.requires_grad for p in models.vae.parameters())

    text_before = {k: v.clone() for k, v in models.text_encoder.state_dict().items()}
    unet_before = models.unet.conv_in.weight.detach().clone()
    optimizer = make_optimizer("adamw", groups)
    hidden = encode_prompts(models, ["a photo of a cat"]).hidden
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    models.unet(latents, torch.tensor([100]), hidden).sample.square().mean().backward()
    optimizer.step()
    assert all(torch.equal(v, text_before[k]) for k, v in models.text_encoder.state_dict().items())
    assert not torch.equal(models.unet.conv_in.weight, unet_before)


def test_param_groups_train_the_text_encoder_at_its_own_rate(tiny_sd1):
    models = load_models(tiny_sd1)
    groups = param_groups(models, {"text_encoder": 5e-5}, unet_lr=1e-4)
    assert [(g["name"], g["lr"]) for g in groups] == [("unet", 1e-4), ("text_encoder", 5e-5)]
    assert len(groups[1]["params"]) == len(list(models.text_encoder.parameters()))
    assert all(p.requires_grad for p in models.text_encoder.parameters())


def test_lr_schedules_hold_their_end_value_past_the_planned_steps():
    from edlib.model.lr import make_lr_scheduler

    for name in ("cosine", "linear", "cosine_with_restarts", "polynomial"):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = make_lr_scheduler(opt, name, total_steps=10, warmup_steps=2, num_cycles=2)
        lrs = []
        for _ in range(15):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert lrs[10:] == [lrs[10]] * 5, name


@pytest.mark.parametrize(
    ("name", "device"),
    [
        ("adamw", "cpu"),
        ("adamw8bit", "cpu"),
        pytest.param("adamw", "cuda", marks=pytest.mark.gpu),
        pytest.param("adamw8bit", "cuda", marks=pytest.mark.gpu),
    ],
)
def test_stochastic_rounding_moves_bf16_weights_by_updates_below_their_resolution(name, device):
    """full_bf16's trap, measured: AdamW at lr 1e-6 on bf16 weights of SD-like size (sd 0.05)
    with nearest rounding moves the weights by ~1% of what it should; stochastic rounding
    (edlib.model.sr_optim) gets the average right (and both end in bf16). Nearest rounding is
    torch's AdamW, or bitsandbytes' AdamW8bit on CUDA (the SDXL lean preset's optimizer)."""
    torch.manual_seed(0)
    start = (torch.randn(256, 256) * 0.05).bfloat16().to(device)
    moved = {}
    for rounding in (False, True) if name == "adamw" or device == "cuda" else (True,):
        weight = torch.nn.Parameter(start.clone())
        groups = [{"params": [weight], "lr": 1e-6}]
        optimizer = make_optimizer(name, groups, {"weight_decay": 0.0}, stochastic_rounding=rounding)
        for _ in range(10):
            weight.grad = torch.ones_like(weight)  # Adam's first steps then move every weight by -lr
            optimizer.step()
        assert weight.dtype == torch.bfloat16
        moved[rounding] = (weight.detach().float() - start.float()).mean().item() / -1e-5
    assert moved.get(False, 0.0) < 0.05 and moved[True] == pytest.approx(1.0, abs=0.05)


def test_full_bf16_stochastic_rounding_needs_an_optimizer_torchao_has(tmp_path):
    from edlib.model.config import ConfigError

    values = dict(model="m", data_root=str(tmp_path), mixed_precision="bf16", full_bf16=True, optimizer="adafactor")
    with pytest.raises(ConfigError, match="stochastic_rounding: with full_bf16 it needs optimizer adamw or adamw8bit"):
        TrainConfig.from_dict(values)
    assert not TrainConfig.from_dict({**values, "stochastic_rounding": False}).stochastic_rounding
