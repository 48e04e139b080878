"""SD3/SD3.5 and FLUX.1 in the training loop: flow-matching noise levels and losses, and the
loop's promises (it learns, it resumes exactly, phases, a multiplier changed mid-run, samples,
caches) on the tiny models."""

import math

import pytest
import torch

from edlib.data.scan import scan
from edlib.data.schedule import realise_epoch
from edlib.model.checkpoint import load_checkpoint, resolve_checkpoint
from edlib.model.flow import predict_velocity
from edlib.model.flow_config import FlowSettings
from edlib.model.models import encode_prompts, load_models
from edlib.sample.pngmeta import parse_parameters, read_parameters
from edlib.train.batches import BatchEncoder, local_batch
from edlib.train.flow import flow_loss, flux_mu, sample_sigmas, shift_sigmas
from edlib.train.loop import train
from tests.train.loop_support import (
    checkpoint_weights,
    make_data_root,
    max_weight_difference,
    metrics,
    one_torch_thread,  # noqa: F401 - autouse fixture
    tiny_config,
)


def _settings(sampling, shift=1.0, **extra):
    values = dict(timestep_sampling=sampling, logit_mean=0.0, logit_std=1.0, sigmoid_scale=1.0, timestep_shift=shift, flow_target="velocity", guidance=1.0)
    return FlowSettings(**{**values, **extra})


def _generators(n, seed=0):
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def test_noise_levels_follow_the_named_distributions():
    n = 4000
    uniform = sample_sigmas(_settings("uniform"), _generators(n), (64, 64))
    assert uniform.min() >= 0 and uniform.max() < 1 and abs(uniform.mean().item() - 0.5) < 0.02
    logit = sample_sigmas(_settings("logit_normal", logit_mean=1.0, logit_std=0.5), _generators(n), (64, 64))
    # sigmoid(N(1, 0.5)): its logit has mean 1 and std 0.5
    logits = torch.log(logit / (1 - logit))
    assert abs(logits.mean().item() - 1.0) < 0.03 and abs(logits.std().item() - 0.5) < 0.03
    # "sigmoid" with scale s is logit-normal(0, s), drawn from the same numbers.
    assert torch.equal(
        sample_sigmas(_settings("sigmoid", sigmoid_scale=2.0), _generators(50), (64, 64)),
        sample_sigmas(_settings("logit_normal", logit_std=2.0), _generators(50), (64, 64)),
    )
    # A static shift above 1 moves the mass to high noise.
    shifted = sample_sigmas(_settings("logit_normal", shift=3.0), _generators(n), (64, 64))
    assert shifted.median() > 0.7 and torch.allclose(shifted, shift_sigmas(sample_sigmas(_settings("logit_normal"), _generators(n), (64, 64)), 3.0))


def test_flux_shift_is_kohyas_static_shift_at_1024_and_less_below():
    """At 1024 px (128 x 128 latents, 4096 packed tokens) mu = 1.15, a shift of e^1.15 = 3.158,
    kohya's "magic" discrete_flow_shift; at 256 px (256 tokens) mu = 0.5."""
    assert flux_mu(4096) == pytest.approx(1.15) and flux_mu(256) == pytest.approx(0.5)
    plain = sample_sigmas(_settings("sigmoid"), _generators(100), (128, 128))
    at_1024 = sample_sigmas(_settings("flux_shift"), _generators(100), (128, 128))
    at_256 = sample_sigmas(_settings("flux_shift"), _generators(100), (32, 32))
    torch.testing.assert_close(at_1024, shift_sigmas(plain, math.exp(1.15)))
    torch.testing.assert_close(at_256, shift_sigmas(plain, math.exp(0.5)))


def test_a_samples_noise_level_does_not_depend_on_its_batch():
    alone = sample_sigmas(_settings("flux_shift"), _generators(1, seed=5), (32, 32))
    in_batch = sample_sigmas(_settings("flux_shift"), _generators(3, seed=3), (32, 32))
    assert alone.item() == in_batch[2].item()


def test_the_x0_target_is_sd3s_preconditioned_loss(tiny_sd3):
    """diffusers' train_dreambooth_lora_sd3.py with --precondition_outputs: the prediction turned
    into x0 = x_t - sigma * v, against the latents. The same loss as velocity x sigma^2."""
    models = load_models(tiny_sd3, max_sequence_length=8)
    generator = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(2, 4, 16, 16, generator=generator), torch.randn(2, 4, 16, 16, generator=generator)
    sigmas = torch.tensor([0.2, 0.9])
    with torch.no_grad():
        cond = encode_prompts(models, ["a red cat", "a dog"])
        weighted, raw = flow_loss(models, latents, noise, sigmas, cond, _settings("logit_normal", flow_target="x0"))
        noisy = (1 - sigmas.view(-1, 1, 1, 1)) * latents + sigmas.view(-1, 1, 1, 1) * noise
        x0 = predict_velocity(models, noisy, sigmas, cond) * (-sigmas.view(-1, 1, 1, 1)) + noisy
        reference = ((x0 - latents) ** 2).mean(dim=(1, 2, 3))
        velocity = ((predict_velocity(models, noisy, sigmas, cond) - (noise - latents)) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(weighted, reference, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(raw, velocity)


def _train(model, tmp_path, name, **overrides):
    data = tmp_path / "data"
    if not data.exists():
        make_data_root(data)
    settings = dict(batch_size=1, epochs=2, unet_lr=1e-3, max_sequence_length=8, export_formats=[])
    settings.update(overrides)
    return train(tiny_config(model, data, tmp_path / name, **settings))


def test_flux_learns_a_toy_task(tiny_flux, tmp_path):
    """Four solid-colour images, validated on themselves at fixed noise levels and noise: the
    validation loss after 24 steps is well under the first one."""
    summary = _train(
        tiny_flux, tmp_path, "run", method="full", epochs=12, batch_size=2, unet_lr=2e-3, validation_data_root=str(tmp_path / "data"),
        validate_every_n_steps=4, validate_every_n_epochs=None, cache_latents="memory", cache_text_embeddings=True,
    )
    losses = [m["val_loss"] for m in metrics(tmp_path / "run") if "val_loss" in m]
    assert summary.step == 24 and len(losses) == 6
    assert losses[-1] < 0.5 * losses[0], losses
    assert "FLUX flow matching: sigma sigmoid(scale 1) with FLUX's resolution-dependent shift" in (tmp_path / "run" / "log.txt").read_text()


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_stop_and_resume_equals_an_uninterrupted_run(family, tiny_flux, tiny_sd3, tmp_path):
    """FLUX: LoRA on the transformer and CLIP-L; SD3: a full fine-tune of the transformer and
    both CLIP encoders. Captions drop out, the LR follows a cosine, an EMA runs."""
    model = tiny_flux if family == "flux" else tiny_sd3
    settings = dict(lr_scheduler="cosine", caption_dropout=0.3, text_encoder_lr=1e-4, ema_decay=0.9)
    settings.update(method="lora", network_dim=2, unet_lr=1e-2) if family == "flux" else settings.update(method="full")
    straight = _train(model, tmp_path, "straight", **settings)

    def stop_at_3(event):
        if event.kind == "step" and event.data["step"] == 3:
            (tmp_path / "resumed" / "control" / "stop").touch()

    config = tiny_config(
        model, tmp_path / "data", tmp_path / "resumed", batch_size=1, epochs=2, unet_lr=settings.pop("unet_lr", 1e-3),
        max_sequence_length=8, export_formats=[], **settings,
    )
    assert train(config, callbacks=[stop_at_3]).step == 3
    assert train(config, resume="latest").step == straight.step == 8
    for a, b in zip(metrics(tmp_path / "resumed"), metrics(tmp_path / "straight"), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
    names = ("unet_lora", "text_encoder_lora") if family == "flux" else ("unet", "text_encoder", "text_encoder_2")
    for name in names:
        a = checkpoint_weights(resolve_checkpoint("latest", tmp_path / "straight"), name)
        b = checkpoint_weights(resolve_checkpoint("latest", tmp_path / "resumed"), name)
        assert max_weight_difference(a, b) <= 1e-6
    weights = load_checkpoint(resolve_checkpoint("latest", tmp_path / "straight")).weights
    assert set(weights) == set(names)  # T5 never trains


def test_a_new_phase_starts_from_the_parents_transformer(tiny_sd3, tmp_path):
    parent = _train(tiny_sd3, tmp_path, "phase1", method="full", epochs=1)
    child = _train(tiny_sd3, tmp_path, "phase2", method="full", epochs=1, unet_lr=0.0, init_from=str(tmp_path / "phase1"), optimizer_args={"weight_decay": 0.0})
    assert child.step == 4  # its own step count, not continuing the parent's
    assert max_weight_difference(checkpoint_weights(child.last_checkpoint), checkpoint_weights(parent.last_checkpoint)) == 0.0
    base = checkpoint_weights(tiny_sd3 / "transformer", "diffusion_pytorch_model")
    assert max_weight_difference(base, checkpoint_weights(parent.last_checkpoint)) > 1e-6


def test_a_multiplier_raised_mid_run_recounts_the_steps_and_resumes_exactly(tiny_flux, tmp_path):
    make_data_root(tmp_path / "data")
    totals = {}

    def watch(event):
        if event.kind == "epoch":
            totals[event.data["epoch"]] = event.data["total_steps"]
        if event.kind == "step" and event.data["step"] == 1:
            (tmp_path / "data" / "warm" / "multiply.txt").write_text("3\n", encoding="utf-8")

    config = tiny_config(
        tiny_flux, tmp_path / "data", tmp_path / "run", method="lora", epochs=3, lr_scheduler="cosine", max_sequence_length=8, export_formats=[]
    )
    summary = train(config, callbacks=[watch])
    assert summary.step == 10 and totals == {0: 6, 1: 10, 2: 10}

    # Stopped after the change and resumed: the same losses as the unbroken run.
    (tmp_path / "data" / "warm" / "multiply.txt").unlink()
    resumed = tiny_config(
        tiny_flux, tmp_path / "data", tmp_path / "resumed", method="lora", epochs=3, lr_scheduler="cosine", max_sequence_length=8, export_formats=[]
    )

    def edit_then_stop(event):
        watch(event)
        if event.kind == "step" and event.data["step"] == 4:
            (tmp_path / "resumed" / "control" / "stop").touch()

    assert train(resumed, callbacks=[edit_then_stop]).step == 4
    assert train(resumed, resume="latest").step == 10
    for a, b in zip(metrics(tmp_path / "resumed"), metrics(tmp_path / "run"), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)


def test_samples_during_training_carry_forges_parameters(tiny_flux, tmp_path):
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text("defaults: {width: 64, height: 64, steps: 4}\nprompts: [a red cat]\n", encoding="utf-8")
    _train(tiny_flux, tmp_path, "run", method="lora", max_steps=2, sample_prompts=str(prompts), sample_every_n_steps=2, sample_at_end=False)
    images = sorted((tmp_path / "run" / "samples" / "step-000002").glob("000-*.png"))
    parameters = parse_parameters(read_parameters(images[0]))
    assert parameters["sampler"] == "Euler" and parameters["Schedule type"] == "Simple"
    assert parameters["cfg_scale"] == 3.5  # FLUX.1-dev's embedded guidance, written as "Distilled CFG Scale"


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_cached_text_embeddings_equal_fresh_ones(family, tiny_flux, tiny_sd3, tmp_path):
    model = tiny_flux if family == "flux" else tiny_sd3
    data_root = make_data_root(tmp_path / "data")
    data = scan(data_root)
    batch = local_batch(realise_epoch(data, 0, seed=1, batch_size=2, resolution=64).batch(0), 0, 0, 1)
    models = load_models(model, max_sequence_length=8)
    outputs = []
    for cache in (False, True, True):
        config = tiny_config(model, data_root, tmp_path / "run", cache_text_embeddings=cache, max_sequence_length=8)
        encoder = BatchEncoder(models, config, text_encoder_trains=False, cache_dir=tmp_path / "cache")
        encoder.encode(data, batch, 1)
        outputs.append(encoder.encode(data, batch, 1)[1])
    for cond in outputs[1:]:
        torch.testing.assert_close(cond.hidden, outputs[0].hidden)
        torch.testing.assert_close(cond.pooled, outputs[0].pooled)
    # Every caption of the data root was encoded before the first step (and the empty one).
    assert set(encoder.text_cache) == {item.caption.text() for item in data.items} | {""}
    # Kept in CPU memory: FLUX's T5 states (8 tokens here), SD3's 77 CLIP tokens then 8 of T5.
    cached = next(iter(encoder.text_cache.values()))
    assert cached.hidden.device.type == "cpu" and cached.hidden.shape == ((8, 48) if family == "flux" else (85, 48))


def test_lora_plus_gives_the_up_matrices_their_own_faster_rate(tiny_flux, tmp_path):
    from edlib.model.methods import make_method

    config = tiny_config(tiny_flux, make_data_root(tmp_path / "data"), tmp_path / "run", method="lora", unet_lr=1e-4, loraplus_lr_ratio=16)
    models = load_models(tiny_flux)
    method = make_method(config)
    method.setup(models)
    groups = {group["name"]: group for group in method.param_groups(models)}
    assert set(groups) == {"unet_lora_A", "unet_lora_B"}
    assert groups["unet_lora_B"]["lr"] == pytest.approx(16e-4) and groups["unet_lora_A"]["lr"] == pytest.approx(1e-4)
    assert len(groups["unet_lora_A"]["params"]) == len(groups["unet_lora_B"]["params"]) > 0


def test_fp8_base_weights_train_a_lora(tiny_flux, tmp_path):
    summary = _train(tiny_flux, tmp_path, "run", method="lora", mixed_precision="bf16", fp8_base=True, max_steps=2, unet_lr=1e-2)
    assert summary.step == 2 and all(math.isfinite(m["loss"]) for m in metrics(tmp_path / "run"))
    from edlib.model.methods import make_method

    models = load_models(tiny_flux)
    method = make_method(tiny_config(tiny_flux, tmp_path / "data", tmp_path / "x", method="lora", mixed_precision="bf16", fp8_base=True))
    method.setup(models)
    layer = models.unet.transformer_blocks[0].attn.to_q
    assert layer.base_layer.weight.dtype == torch.float8_e4m3fn and layer.lora_A["default"].weight.dtype == torch.float32


def test_block_swap_changes_where_weights_wait_not_what_trains(tiny_flux, tmp_path):
    """On a CPU the swap's copies are the CPU weights themselves, so this checks the hooks:
    the same losses and adapters as without swapping, the frozen weights back in place after
    every call, the adapters untouched. (The GPU check in bench/flow_cases.py measures memory.)"""
    settings = dict(method="lora", network_dim=2, unet_lr=1e-2, max_steps=3, gradient_checkpointing=True, text_encoder_lr=1e-4)
    plain = _train(tiny_flux, tmp_path, "plain", **settings)
    swapped = _train(tiny_flux, tmp_path, "swapped", blocks_to_swap=2, **settings)
    assert [m["loss"] for m in metrics(tmp_path / "plain")] == [m["loss"] for m in metrics(tmp_path / "swapped")]
    a, b = (checkpoint_weights(s.last_checkpoint, "unet_lora") for s in (plain, swapped))
    assert max_weight_difference(a, b) == 0.0

    from edlib.model.block_swap import enable_block_swap, swap_blocks
    from edlib.model.methods import make_method

    models = load_models(tiny_flux, max_sequence_length=8)
    method = make_method(tiny_config(tiny_flux, tmp_path / "data", tmp_path / "x", method="lora"))
    method.setup(models)
    swapped_blocks = enable_block_swap(models.unet, 2, "cpu")
    assert swapped_blocks == swap_blocks(models.unet)[-2:]  # the last single blocks
    before = {name: param for name, param in models.unet.named_parameters()}
    with torch.no_grad():
        cond = encode_prompts(models, ["a red cat"])
        predict_velocity(models, torch.zeros(1, 4, 8, 8), torch.tensor([0.5]), cond, guidance=1.0)
    assert all(param is before[name] for name, param in models.unet.named_parameters())
    with pytest.raises(ValueError, match="blocks_to_swap: 3 is out of range"):
        enable_block_swap(load_models(tiny_flux).unet, 3, "cpu")


@pytest.mark.gpu
def test_block_swap_on_a_gpu_trains_as_without_and_keeps_the_blocks_in_cpu_memory(tiny_flux, tmp_path):
    """On CUDA the swapped blocks' frozen weights live in pinned CPU memory between calls and
    their copies come to the GPU per call; the run must match the unswapped one."""
    settings = dict(method="lora", network_dim=2, unet_lr=1e-2, max_steps=3, gradient_checkpointing=True)
    plain = _train(tiny_flux, tmp_path, "plain", **settings)
    swapped = _train(tiny_flux, tmp_path, "swapped", blocks_to_swap=2, **settings)
    for a, b in zip(metrics(tmp_path / "plain"), metrics(tmp_path / "swapped"), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    a, b = (checkpoint_weights(s.last_checkpoint, "unet_lora") for s in (plain, swapped))
    assert max_weight_difference(a, b) <= 1e-4

    from edlib.model.block_swap import enable_block_swap
    from edlib.model.methods import make_method

    models = load_models(tiny_flux, max_sequence_length=8)
    make_method(tiny_config(tiny_flux, tmp_path / "data", tmp_path / "x", method="lora")).setup(models)
    models.unet.to("cuda")
    (block,) = enable_block_swap(models.unet, 1, "cuda")
    frozen = [p for p in block.parameters() if not p.requires_grad]
    assert all(p.device.type == "cpu" and p.is_pinned() for p in frozen)
    assert all(p.device.type == "cuda" for p in block.parameters() if p.requires_grad)


@pytest.mark.gpu
def test_fp8_base_with_bf16_on_a_gpu(tiny_flux, tmp_path):
    summary = _train(tiny_flux, tmp_path, "run", method="lora", mixed_precision="bf16", fp8_base=True, max_steps=3, unet_lr=1e-2)
    assert summary.step == 3 and all(math.isfinite(m["loss"]) for m in metrics(tmp_path / "run"))


@pytest.mark.gpu
def test_the_transformer_waits_in_cpu_memory_while_captions_are_cached(tiny_flux):
    from edlib.model.offload import park_on_cpu

    models = load_models(tiny_flux)
    models.unet.to("cuda")
    block = models.unet.single_transformer_blocks[-1]
    block.to("cpu")  # as a swapped block's weights: they stay where they are
    with park_on_cpu(models.unet):
        assert all(p.device.type == "cpu" for p in models.unet.parameters())
    assert all(p.device.type == "cpu" for p in block.parameters())
    assert all(p.device.type == "cuda" for p in models.unet.transformer_blocks.parameters())
