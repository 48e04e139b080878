"""Noise, timesteps, targets, Min-SNR weights and the per-sample loss."""

import pytest
import torch
from diffusers import DDPMScheduler

from edlib.train.noise import min_snr_weights, per_sample_loss, sample_noise, sample_timesteps, training_target

SD_BETAS = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _latents(batch=4, size=32):
    return torch.zeros(batch, 4, size, size)


def test_noise_shape_and_determinism():
    latents = _latents()
    a = sample_noise(latents, _gen(0))
    assert a.shape == latents.shape and a.dtype == latents.dtype
    assert torch.equal(a, sample_noise(latents, _gen(0)))
    assert not torch.equal(a, sample_noise(latents, _gen(1)))
    assert abs(a.mean().item()) < 0.05 and abs(a.std().item() - 1) < 0.05


def test_per_sample_generators_make_a_sample_independent_of_its_batch():
    full = sample_noise(_latents(3), [_gen(10), _gen(11), _gen(12)], noise_offset=0.1, multires_iterations=4)
    alone = sample_noise(_latents(1), [_gen(11)], noise_offset=0.1, multires_iterations=4)
    assert torch.equal(full[1], alone[0])
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        sample_noise(_latents(3), [_gen(1), _gen(2)])


def test_noise_offset_adds_a_per_channel_constant_of_the_given_size():
    latents = _latents(batch=256, size=16)
    plain = sample_noise(latents, _gen(0))
    offset = sample_noise(latents, _gen(0), noise_offset=0.5)
    channel_means = offset.mean(dim=(2, 3))  # [B, C]
    # Without offset a channel mean over 256 pixels has std 1/16; the offset adds std 0.5.
    assert plain.mean(dim=(2, 3)).std().item() == pytest.approx(1 / 16, rel=0.1)
    assert channel_means.std().item() == pytest.approx((0.5**2 + 1 / 256) ** 0.5, rel=0.1)
    # Constant over the image: removing each channel's mean leaves white noise of std 1.
    residual = offset - offset.mean(dim=(2, 3), keepdim=True)
    assert residual.std().item() == pytest.approx(1.0, rel=0.02)


def test_multires_noise_is_normalised_and_correlated_across_pixels():
    latents = _latents(batch=64, size=32)
    plain = sample_noise(latents, _gen(0))
    pyramid = sample_noise(latents, _gen(0), multires_iterations=6, multires_discount=0.8)
    for sample in pyramid:
        assert sample.std().item() == pytest.approx(1.0, abs=1e-4)

    def neighbour_correlation(noise):
        a, b = noise[..., :, :-1].flatten(), noise[..., :, 1:].flatten()
        return torch.corrcoef(torch.stack([a, b]))[0, 1].item()

    assert abs(neighbour_correlation(plain)) < 0.02
    assert neighbour_correlation(pyramid) > 0.15  # low-frequency content
    weaker = sample_noise(latents, _gen(0), multires_iterations=6, multires_discount=0.1)
    assert neighbour_correlation(pyramid) > neighbour_correlation(weaker)


def test_timesteps_are_uniform_longs_in_range():
    scheduler = DDPMScheduler(**SD_BETAS)
    t = sample_timesteps(scheduler, _gen(0), batch_size=4000)
    assert t.dtype == torch.long and t.shape == (4000,)
    assert t.min() >= 0 and t.max() <= 999
    assert t.float().mean().item() == pytest.approx(499.5, rel=0.05)
    per_sample = sample_timesteps(scheduler, [_gen(1), _gen(2)])
    assert per_sample[0] == sample_timesteps(scheduler, [_gen(1)])[0]
    with pytest.raises(ValueError, match="batch_size"):
        sample_timesteps(scheduler, _gen(0))


def test_epsilon_target_is_the_noise_and_v_target_the_velocity():
    latents, noise = torch.randn(3, 4, 8, 8, generator=_gen(0)), torch.randn(3, 4, 8, 8, generator=_gen(1))
    t = torch.tensor([0, 500, 999])
    assert torch.equal(training_target(DDPMScheduler(**SD_BETAS), latents, noise, t), noise)
    scheduler = DDPMScheduler(prediction_type="v_prediction", **SD_BETAS)
    v = training_target(scheduler, latents, noise, t)
    torch.testing.assert_close(v, scheduler.get_velocity(latents, noise, t))
    a = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(v, a.sqrt() * noise - (1 - a).sqrt() * latents)
    with pytest.raises(ValueError, match="'sample' is not supported"):
        training_target(DDPMScheduler(prediction_type="sample", **SD_BETAS), latents, noise, t)


def test_min_snr_weights_follow_the_formula_and_clamp():
    scheduler = DDPMScheduler(**SD_BETAS)
    t = torch.tensor([0, 10, 100, 500, 999])
    a = scheduler.alphas_cumprod[t].double()
    snr = a / (1 - a)
    gamma = 5.0
    eps = min_snr_weights(scheduler, t, gamma, "epsilon")
    v = min_snr_weights(scheduler, t, gamma, "v_prediction")
    torch.testing.assert_close(eps.double(), torch.minimum(snr, torch.tensor(gamma, dtype=torch.float64)) / snr)
    torch.testing.assert_close(v.double(), torch.minimum(snr, torch.tensor(gamma, dtype=torch.float64)) / (snr + 1))
    low_noise = snr > gamma  # clamped: weight below 1; high noise: epsilon weight exactly 1
    assert (eps[low_noise] < 1).all() and torch.allclose(eps[~low_noise], torch.ones_like(eps[~low_noise]))
    assert eps[0] == pytest.approx(gamma / snr[0].item(), rel=1e-4)
    # The prediction type defaults to the scheduler's.
    v_scheduler = DDPMScheduler(prediction_type="v_prediction", **SD_BETAS)
    torch.testing.assert_close(min_snr_weights(v_scheduler, t, gamma), v)
    with pytest.raises(ValueError, match="min_snr_gamma"):
        min_snr_weights(scheduler, t, 0.0)


def test_zero_terminal_snr_schedule_and_finite_weights_at_the_end():
    scheduler = DDPMScheduler(rescale_betas_zero_snr=True, **SD_BETAS)
    assert scheduler.alphas_cumprod[-1] == 0
    assert DDPMScheduler(**SD_BETAS).alphas_cumprod[-1] > 0
    t = torch.tensor([998, 999])
    eps = min_snr_weights(scheduler, t, 5.0, "epsilon")
    v = min_snr_weights(scheduler, t, 5.0, "v_prediction")
    assert torch.isfinite(eps).all() and eps[1] == 1.0
    assert v[1] == 0.0


def test_per_sample_loss_is_the_mse_of_each_sample_times_its_weight():
    pred = torch.zeros(3, 4, 2, 2, dtype=torch.bfloat16)
    target = torch.stack([torch.full((4, 2, 2), float(v)) for v in (0, 1, 2)])
    losses = per_sample_loss(pred, target)
    assert losses.dtype == torch.float32
    torch.testing.assert_close(losses, torch.tensor([0.0, 1.0, 4.0]))
    weighted = per_sample_loss(pred, target, torch.tensor([5.0, 0.5, 0.0]))
    torch.testing.assert_close(weighted, torch.tensor([0.0, 0.5, 0.0]))
