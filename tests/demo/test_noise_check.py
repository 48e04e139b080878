"""The measurement behind the world model's noise schedule: under SD1.5's schedule a
16x16 latent's colour is still visible at the last timestep; under zero terminal SNR it
is not."""

from diffusers import DDPMScheduler

from edlib.demo.noise_check import colour_separation_at_last_timestep
from edlib.model.models import load_models
from edlib.model.world import bundled_model_path


def test_sd15_schedule_leaves_colours_visible_and_zero_terminal_snr_does_not():
    models = load_models(bundled_model_path())
    config = models.noise_scheduler.config
    sd15 = DDPMScheduler.from_config(config, rescale_betas_zero_snr=False)
    zero = DDPMScheduler.from_config(config, rescale_betas_zero_snr=True)
    plain = colour_separation_at_last_timestep(models, sd15.alphas_cumprod, 64)
    assert plain["median"] > 2 and plain["min"] > 1, plain
    assert colour_separation_at_last_timestep(models, zero.alphas_cumprod, 64) == {"min": 0.0, "median": 0.0}
