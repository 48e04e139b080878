import logging

import pytest
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

from edlib.sample import SAMPLER_NAMES, get_sampler, make_scheduler

# SD1.5's shipped scheduler config, as the model's scheduler/scheduler_config.json holds it.
SD15_CONFIG = {
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
}

# The names the issue asks for, with the scheduler and the options that make each one.
EXPECTED = {
    "DDIM": (DDIMScheduler, {}),
    "PNDM": (PNDMScheduler, {"skip_prk_steps": True}),
    "LMS": (LMSDiscreteScheduler, {"use_karras_sigmas": False}),
    "Heun": (HeunDiscreteScheduler, {"use_karras_sigmas": False}),
    "Euler": (EulerDiscreteScheduler, {"use_karras_sigmas": False}),
    "Euler a": (EulerAncestralDiscreteScheduler, {}),
    "DPM++ 2M": (DPMSolverMultistepScheduler, {"use_karras_sigmas": False, "algorithm_type": "dpmsolver++"}),
    "DPM++ 2M Karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True, "algorithm_type": "dpmsolver++"}),
    "DPM++ SDE Karras": (DPMSolverSDEScheduler, {"use_karras_sigmas": True}),
    "UniPC": (UniPCMultistepScheduler, {"use_karras_sigmas": False}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_user_names_map_to_the_right_scheduler_and_options(name):
    scheduler_class, options = EXPECTED[name]

    scheduler = make_scheduler(name, SD15_CONFIG)

    assert type(scheduler) is scheduler_class
    for key, value in options.items():
        assert scheduler.config[key] == value, key
    # The model's noise schedule is kept.
    assert scheduler.config.beta_schedule == "scaled_linear"
    assert scheduler.config.beta_end == 0.012


def test_every_required_name_is_offered():
    assert set(EXPECTED) <= set(SAMPLER_NAMES)


@pytest.mark.parametrize("spelling", ["euler a", "EULER A", "  Euler   a ", "euler_a"])
def test_names_are_case_and_space_insensitive(spelling):
    assert get_sampler(spelling).name == "Euler a"


def test_automatic1111s_plms_is_pndm():
    assert get_sampler("PLMS").name == "PNDM"


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as error:
        make_scheduler("DPM++ 3M", SD15_CONFIG)
    message = str(error.value)
    assert "unknown sampler 'DPM++ 3M'" in message
    assert all(name in message for name in SAMPLER_NAMES)


def test_v_prediction_survives_the_switch():
    config = {**SD15_CONFIG, "_class_name": "DDIMScheduler", "prediction_type": "v_prediction"}
    for name in SAMPLER_NAMES:
        assert make_scheduler(name, config).config.prediction_type == "v_prediction", name


def test_options_of_the_models_own_scheduler_do_not_leak_into_another_sampler():
    # A model shipped with DPM++ 2M Karras (SDE) must still give plain DPM++ 2M when asked.
    config = {
        **SD15_CONFIG,
        "_class_name": "DPMSolverMultistepScheduler",
        "use_karras_sigmas": True,
        "algorithm_type": "sde-dpmsolver++",
    }

    scheduler = make_scheduler("DPM++ 2M", config)

    assert scheduler.config.use_karras_sigmas is False
    assert scheduler.config.algorithm_type == "dpmsolver++"


def test_sde_sampler_is_seeded_from_the_prompt_seed():
    # Otherwise DPMSolverSDEScheduler draws its Brownian-tree seed from torch's global RNG.
    assert make_scheduler("DPM++ SDE Karras", SD15_CONFIG, seed=1234).config.noise_sampler_seed == 1234
    # Samplers that take their noise from the pipeline's generator get no such option.
    assert "noise_sampler_seed" not in make_scheduler("Euler a", SD15_CONFIG, seed=1234).config


def test_sampler_that_cannot_follow_a_zero_terminal_snr_schedule_warns(caplog):
    config = {**SD15_CONFIG, "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}

    with caplog.at_level(logging.WARNING, logger="edlib.sample"):
        assert make_scheduler("Euler", config).config.rescale_betas_zero_snr is True
        assert not caplog.records
        make_scheduler("LMS", config)

    assert "sampler LMS cannot use the zero-terminal-SNR schedule" in caplog.text
    assert "DPM++ 2M Karras" in caplog.text  # says which samplers can


def test_karras_samplers_run_plain_on_a_zero_terminal_snr_schedule(caplog):
    # Karras sigmas on such a schedule repeat timesteps and crash DPM++ 2M Karras at 30 steps.
    from edlib.sample.samplers import sampler_for_schedule

    config = dict(DDIMScheduler().config, rescale_betas_zero_snr=True, timestep_spacing="trailing", prediction_type="v_prediction")
    assert sampler_for_schedule("dpm++ 2m karras", config) == "DPM++ 2M"
    assert sampler_for_schedule("DPM++ 2M SDE Karras", config) == "DPM++ 2M SDE"
    assert sampler_for_schedule("Euler a", config) == "Euler a"
    assert sampler_for_schedule("DPM++ 2M Karras", dict(DDIMScheduler().config)) == "DPM++ 2M Karras"
    scheduler = make_scheduler(sampler_for_schedule("DPM++ 2M Karras", config), config)
    scheduler.set_timesteps(30)
    assert len(set(scheduler.timesteps.tolist())) == 30
