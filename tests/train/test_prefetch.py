"""Issue 16, the inputs of a step: images decoded ahead in DataLoader workers, cache misses
encoded a batch at a time with the same latents whichever batch an image is in, and the EMA
and non-finite skip done on the device."""

import numpy as np
import torch
from PIL import Image, ImageOps

from edlib.data.images import load_rgb
from edlib.data.scan import scan
from edlib.data.schedule import realise_epoch
from edlib.model.config import TrainConfig
from edlib.model.ema import make_ema
from edlib.model.models import load_models
from edlib.train.batches import BatchEncoder, LocalBatch, local_batch
from edlib.train.prefetch import DecodeJob, PixelPrefetcher, load_pixels_uint8, plan_decoding, to_unit_range
from tests.train.loop_support import make_data_root, one_torch_thread  # noqa: F401


def _numpy_pixels(path, size, flip):
    """How load_pixels computed [-1, 1] floats before issue 16: numpy float32 arithmetic."""
    image = ImageOps.fit(load_rgb(path), size, method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    image = ImageOps.mirror(image) if flip else image
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)


def test_workers_decode_what_the_training_process_would_and_report_unreadable_images(tmp_path):
    root = make_data_root(tmp_path / "data")
    images = sorted(str(p) for p in root.rglob("*.png"))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    jobs = [
        DecodeJob(0, (48, 64), ((images[0], False), (images[1], True)), (None, None)),
        DecodeJob(3, (64, 64), ((str(tmp_path / "broken.png"), False), (images[2], False)), (None, None)),
    ]
    prefetcher = PixelPrefetcher(jobs, workers=1)
    assert prefetcher.take(1) is None  # nothing planned for batch 1
    job, results = prefetcher.take(0)
    assert job is jobs[0]
    for (path, flip), (pixels, reason) in zip(job.images, results):
        assert reason is None and pixels.dtype == torch.uint8 and pixels.shape == (3, 64, 48)
        assert torch.equal(pixels, load_pixels_uint8(path, (48, 64), flip))
        assert torch.equal(to_unit_range(pixels), _numpy_pixels(path, (48, 64), flip))  # the same floats as before
    assert prefetcher.take(0) is None  # taken already: not decoded twice, and batch 3 not skipped
    job, results = prefetcher.take(3)
    assert results[0][0] is None and "broken.png" not in results[0][1] and results[0][1]
    assert torch.equal(results[1][0], load_pixels_uint8(images[2], (64, 64), False))
    prefetcher.close()


def _config(model, root, tmp_path, **values):
    return TrainConfig.from_dict(dict(model=str(model), data_root=str(root), run_dir=str(tmp_path / "run"),
                                      resolution=64, batch_size=4, **values))  # fmt: skip


def test_cache_fills_a_batch_at_a_time_with_the_latents_an_uncached_batch_gets(tiny_sd1, tmp_path):
    """A cache miss is encoded in one VAE call padded to the batch size, so an image's latents
    do not depend on its company: alone, in a batch, or uncached, the same bits."""
    root = make_data_root(tmp_path / "data")
    data = scan(root)
    models = load_models(str(tiny_sd1))
    schedule = realise_epoch(data, 0, seed=1, batch_size=4, resolution=64)
    batch = local_batch(schedule.batch(0), 0, 0, 1)
    uncached = BatchEncoder(models, _config(tiny_sd1, root, tmp_path), text_encoder_trains=False, cache_dir=tmp_path / "c1")
    cached = BatchEncoder(models, _config(tiny_sd1, root, tmp_path, cache_latents="memory"), text_encoder_trains=False,
                          cache_dir=tmp_path / "c2")  # fmt: skip
    whole = uncached.latents(data, batch)
    samples = list(zip(batch.items, batch.flips))
    (first,), (error,) = cached.read_inputs(data, batch, samples[:1])  # alone (as a substitute is read)
    assert error is None and torch.equal(first, whole[0])
    assert torch.equal(cached.latents(data, batch), whole)  # the first from the cache, the others encoded together
    # A batch of one is encoded at batch size one: on this CPU that changes the last bits,
    # which is why misses are padded to the training batch instead of encoded one by one.
    one = LocalBatch(0, 0, batch.bucket, (0,), batch.items[:1], batch.flips[:1])
    assert uncached.latents(data, one).shape == (1, *whole.shape[1:])
    # The planner decodes only what the cache misses, each image once per epoch.
    local = lambda b: local_batch(b, 0, 0, 1)  # noqa: E731
    assert plan_decoding(data, schedule, 0, local, cached.latent_cache.has, cached.latent_cache.key) == []
    fresh = BatchEncoder(models, _config(tiny_sd1, root, tmp_path, cache_latents="memory"), text_encoder_trains=False,
                         cache_dir=tmp_path / "c3")  # fmt: skip
    planned = plan_decoding(data, schedule, 0, local, fresh.latent_cache.has, fresh.latent_cache.key)
    keys = [k for job in planned for k in job.keys]
    assert len(keys) == len(set(keys)) == len({(i, f) for b in range(len(schedule)) for i, f in zip(schedule.batch(b).items, schedule.batch(b).flips)})


def test_the_ema_skips_on_the_device_and_counts_only_the_steps_it_took():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    ema = make_ema(0.9, params)
    reference = make_ema(0.9, params)
    for skip in (False, True, False, True, True, False):
        with torch.no_grad():
            for p in params:
                p.add_(0.1)
        ema.step(params, torch.tensor(skip))
        if not skip:
            reference.step(params)  # the host path, stepping only when not skipped
    assert ema.state_dict()["optimization_step"] == 3 == reference.optimization_step
    for a, b in zip(ema.shadow_params, reference.shadow_params):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
