"""SDXL in the engine (issue 9): two text encoders with a pooled embedding, the
micro-conditioning of each sample's real crop, and the same loop, resume and methods as SD.
Reference values come from diffusers' own StableDiffusionXLPipeline wherever it has them."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from edlib.data.scan import scan
from edlib.data.schedule import realise_epoch
from edlib.model.checkpoint import load_checkpoint, resolve_checkpoint
from edlib.model.models import encode_prompts, load_models, predict
from edlib.train.batches import BatchEncoder, crop_top_left, load_pixels, local_batch, micro_conditioning
from edlib.train.loop import train
from edlib.train.setup import frozen_dtype
from tests.train.loop_support import (
    checkpoint_weights,
    make_data_root,
    max_weight_difference,
    metrics,
    one_torch_thread,  # noqa: F401 - autouse fixture
    tiny_config,
)


def test_an_sdxl_folder_loads_with_both_text_encoders(tiny_sdxl):
    models = load_models(tiny_sdxl)
    assert models.is_sdxl and models.text_encoder_names == ("text_encoder", "text_encoder_2")
    assert type(models.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert models.prediction_type == "epsilon" and models.vae_scaling_factor == pytest.approx(0.13025)


@pytest.mark.parametrize("clip_skip", [1, 2])
def test_prompt_encoding_matches_the_sdxl_pipeline(tiny_sdxl, clip_skip):
    from diffusers import StableDiffusionXLPipeline

    models = load_models(tiny_sdxl)
    captions = ["a photo of a red cat", "a blue car"]
    pipeline = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl)
    with torch.no_grad():
        cond = encode_prompts(models, captions, clip_skip=clip_skip)
        # diffusers counts skipped layers (ours minus one); None is SDXL's own standard.
        hidden, _, pooled, _ = pipeline.encode_prompt(
            captions, do_classifier_free_guidance=False, clip_skip=None if clip_skip == 1 else clip_skip - 1
        )
    assert cond.hidden.shape == (2, 77, 32 + 48) and cond.pooled.shape == (2, 40)
    torch.testing.assert_close(cond.hidden, hidden)
    torch.testing.assert_close(cond.pooled, pooled)


def test_crop_top_left_is_the_crop_load_pixels_takes(tmp_path):
    # A wide image into a square bucket: the sides are cut; a tall one into a tall bucket: top
    # and bottom. Scaled to the bucket, (200x100 -> 64x64) loses 50 px of 200 left = 32 px.
    assert crop_top_left((200, 100), (64, 64)) == (0, 32)
    assert crop_top_left((100, 300), (64, 128)) == (32, 0)
    assert crop_top_left((64, 64), (64, 64)) == (0, 0)
    # Checked against the pixels: a 200x100 image whose left 50 columns are red (the part the
    # crop cuts away) and the rest blue gives an all-blue 64x64 crop, and a left edge at
    # 32 bucket px means 32 / 64 * 100 = 50 source px were cut.
    image = Image.new("RGB", (200, 100), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 50, 100))
    image.save(tmp_path / "wide.png")
    pixels = load_pixels(tmp_path / "wide.png", (64, 64), flip=False)
    assert pixels[0].max() < -0.9 and pixels[2].min() > 0.9  # no red left, all blue


def test_micro_conditioning_carries_each_samples_real_size_and_crop(tiny_sdxl, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    Image.new("RGB", (96, 64), (200, 30, 30)).save(root / "wide red_0.png")
    Image.new("RGB", (64, 64), (30, 30, 200)).save(root / "square blue_0.png")
    data = scan(root)
    schedule = realise_epoch(data, 0, seed=1, batch_size=1, resolution=64)
    rows = {}
    for b in range(len(schedule)):
        batch = local_batch(schedule.batch(b), 0, 0, 1)
        item = data.items[batch.items[0]]
        rows[item.path] = (batch.bucket, micro_conditioning(data, batch)[0].tolist())
    (bucket_w, bucket_h), wide = rows["wide red_0.png"]
    top, left = crop_top_left((96, 64), (bucket_w, bucket_h))
    assert wide == [64, 96, top, left, bucket_h, bucket_w]
    assert rows["square blue_0.png"][1] == [64, 64, 0, 0, 64, 64]

    # The UNet hears it: other micro-conditioning, another prediction.
    models = load_models(tiny_sdxl)
    with torch.no_grad():
        cond = encode_prompts(models, ["red"])
        latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
        a = predict(models.unet, latents, torch.tensor([500]), cond.with_time_ids(torch.tensor([[64.0, 96, 0, 16, 64, 64]])))
        b = predict(models.unet, latents, torch.tensor([500]), cond.with_time_ids(torch.tensor([[64.0, 64, 0, 0, 64, 64]])))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="micro-conditioning"):
        predict(models.unet, latents, torch.tensor([500]), cond)


def test_cached_text_embeddings_equal_fresh_ones(tiny_sdxl, tmp_path):
    data_root = make_data_root(tmp_path / "data")
    data = scan(data_root)
    batch = local_batch(realise_epoch(data, 0, seed=1, batch_size=2, resolution=64).batch(0), 0, 0, 1)
    models = load_models(tiny_sdxl)
    outputs = []
    for cache in (False, True, True):
        config = tiny_config(tiny_sdxl, data_root, tmp_path / "run", cache_text_embeddings=cache)
        encoder = BatchEncoder(models, config, text_encoder_trains=False, cache_dir=tmp_path / "cache")
        encoder.encode(data, batch, 1)  # fills the cache
        outputs.append(encoder.encode(data, batch, 1)[1])
    for cond in outputs[1:]:
        for name in ("hidden", "pooled", "time_ids"):
            torch.testing.assert_close(getattr(cond, name), getattr(outputs[0], name))


def _train_sdxl(tiny_sdxl, tmp_path, run_name, **overrides):
    data = tmp_path / "data"
    if not data.exists():
        make_data_root(data)
    settings = dict(batch_size=1, epochs=2, unet_lr=1e-3, lr_scheduler="cosine", caption_dropout=0.3)
    settings.update(overrides)
    return train(tiny_config(tiny_sdxl, data, tmp_path / run_name, **settings))


def test_full_fine_tune_trains_the_unet_and_the_encoders_it_is_asked_to(tiny_sdxl, tmp_path):
    # The second encoder trains, the first stays frozen: each encoder has its own rate.
    summary = _train_sdxl(tiny_sdxl, tmp_path, "run", text_encoder_lr=0.0, text_encoder_2_lr=1e-4)
    assert summary.step == 8 and summary.stopped_by == "epochs"
    losses = [record["loss"] for record in metrics(tmp_path / "run")]
    assert len(losses) == 8 and all(loss == loss and loss > 0 for loss in losses)
    checkpoint = load_checkpoint(resolve_checkpoint("latest", tmp_path / "run"))
    assert set(checkpoint.weights) == {"unet", "text_encoder_2"}
    base = load_models(tiny_sdxl)
    trained_unet = checkpoint.weights["unet"]
    assert max_weight_difference(base.unet.state_dict(), trained_unet) > 0
    assert max_weight_difference(base.text_encoder_2.state_dict(), checkpoint.weights["text_encoder_2"]) > 0


def test_sdxl_resume_equals_an_uninterrupted_run(tiny_sdxl, tmp_path):
    straight = _train_sdxl(tiny_sdxl, tmp_path, "straight", text_encoder_lr=1e-4, ema_decay=0.9)
    config = tiny_config(
        tiny_sdxl, tmp_path / "data", tmp_path / "resumed", batch_size=1, epochs=2, unet_lr=1e-3,
        lr_scheduler="cosine", caption_dropout=0.3, text_encoder_lr=1e-4, ema_decay=0.9,
    )

    def stop_at_3(event):
        if event.kind == "step" and event.data["step"] == 3:
            (tmp_path / "resumed" / "control" / "stop").touch()

    assert train(config, callbacks=[stop_at_3]).step == 3
    assert train(config, resume="latest").step == straight.step == 8
    for a, b in zip(metrics(tmp_path / "resumed"), metrics(tmp_path / "straight"), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
    for name in ("unet", "text_encoder", "text_encoder_2"):
        a = checkpoint_weights(resolve_checkpoint("latest", tmp_path / "straight"), name)
        b = checkpoint_weights(resolve_checkpoint("latest", tmp_path / "resumed"), name)
        assert max_weight_difference(a, b) <= 1e-6


def test_lora_adapts_both_text_encoders_of_sdxl(tiny_sdxl, tmp_path):
    summary = _train_sdxl(tiny_sdxl, tmp_path, "lora", method="lora", network_dim=2, network_alpha=1.0, unet_lr=1e-3, text_encoder_lr=1e-4, max_steps=3)
    checkpoint = load_checkpoint(resolve_checkpoint("latest", tmp_path / "lora"))
    assert summary.step == 3
    assert set(checkpoint.weights) == {"unet_lora", "text_encoder_lora", "text_encoder_2_lora"}
    assert all(any(".lora_B." in key for key in tensors) for tensors in checkpoint.weights.values())


def test_sdxl_vae_stays_fp32_under_fp16_unless_it_is_fp16_safe(tiny_sdxl):
    models = load_models(tiny_sdxl)
    assert frozen_dtype("vae", models.vae, "fp16") == torch.float32  # force_upcast: SDXL's VAE
    assert frozen_dtype("vae", models.vae, "bf16") == torch.bfloat16
    assert frozen_dtype("text_encoder_2", models.text_encoder_2, "fp16") == torch.float16
    models.vae.register_to_config(force_upcast=False)  # what an fp16-fix VAE's config says
    assert frozen_dtype("vae", models.vae, "fp16") == torch.float16


def test_a_replacement_vae_is_loaded_from_the_vae_key(tiny_sdxl, tmp_path):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(Path(tiny_sdxl) / "vae")
    vae.register_to_config(force_upcast=False, scaling_factor=0.2)
    vae.save_pretrained(tmp_path / "fp16-safe-vae")
    models = load_models(tiny_sdxl, vae=str(tmp_path / "fp16-safe-vae"))
    assert models.vae_scaling_factor == pytest.approx(0.2) and not models.vae.config.force_upcast
    from edlib.model.models import ModelError

    with pytest.raises(ModelError, match="not a diffusers VAE folder"):
        load_models(tiny_sdxl, vae=str(tmp_path))


@pytest.mark.gpu
def test_sdxl_trains_in_fp16_on_a_gpu_with_the_vae_upcast(tiny_sdxl, tmp_path):
    summary = _train_sdxl(tiny_sdxl, tmp_path, "fp16", mixed_precision="fp16", max_steps=3)
    losses = [record["loss"] for record in metrics(tmp_path / "fp16")]
    assert summary.step == 3 and all(loss == loss for loss in losses)


def test_an_unset_resolution_is_the_models_native_one(tiny_sdxl, tmp_path):
    from edlib.model.config import TrainConfig
    from edlib.model.tiny import build_tiny_pipeline

    # The tiny SDXL's UNet is made for 16x16 latents of a 4x VAE: 64 px; at 128 px, 128.
    bigger = build_tiny_pipeline(tmp_path / "xl128", variant="sdxl", resolution=128)
    assert TrainConfig.from_dict({"model": str(bigger), "data_root": "d"}).resolution == 128
    assert TrainConfig.from_dict({"model": str(tiny_sdxl), "data_root": "d"}).resolution == 64
    assert TrainConfig.from_dict({"model": str(bigger), "data_root": "d", "resolution": 256}).resolution == 256
    # A hub id not in the local cache (tests are offline): the documented default.
    assert TrainConfig.from_dict({"model": "nobody/not-cached", "data_root": "d"}).resolution == 512


def test_a_v_prediction_sdxl_trains_towards_v(tmp_path):
    from edlib.model.tiny import build_tiny_pipeline

    folder = build_tiny_pipeline(tmp_path / "xl-v", variant="sdxl-v")
    models = load_models(folder)
    assert models.is_sdxl and models.prediction_type == "v_prediction"
    assert models.noise_scheduler.config.prediction_type == "v_prediction"
    summary = _train_sdxl(folder, tmp_path, "run", max_steps=2)
    assert summary.step == 2 and all(r["loss"] > 0 for r in metrics(tmp_path / "run"))


def test_a_second_text_encoder_rate_on_an_sd_model_is_warned_about(tiny_sd1, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tiny_sd1, make_data_root(tmp_path / "data"), run, text_encoder_2_lr=1e-4, max_steps=1))
    assert "text_encoder_2_lr is set, but" in (run / "log.txt").read_text(encoding="utf-8")
