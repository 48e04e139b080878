"""Samplers by the names users know from AUTOMATIC1111 / ComfyUI, mapped to diffusers schedulers.

A model ships one scheduler config (betas, prediction type, timestep spacing); a "sampler" is a
scheduler class plus a few options, built from that config. Every option that tells one sampler
from its sibling (Karras sigmas, SDE vs ODE solver, ...) is set explicitly, so a model that ships
e.g. ``use_karras_sigmas: true`` still gets plain "DPM++ 2M" when that is what was asked for.

SD3 and FLUX models (flow matching; their scheduler config is a FlowMatchEulerDiscreteScheduler's)
sample with one sampler, Euler on the flow: diffusers' ``FlowMatchEulerDiscreteScheduler`` built
from the model's own config (its shift, and FLUX's resolution-dependent shift). AUTOMATIC1111
Forge writes it as "Sampler: Euler, Schedule type: Simple" and ComfyUI calls it sampler
``euler`` with scheduler ``simple``, so it goes by "Euler" here too; any other sampler named for
such a model samples with it, with a warning.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    SchedulerMixin,
    UniPCMultistepScheduler,
)

logger = logging.getLogger("edlib.sample")

# Options that pick a sigma spacing; set on every k-diffusion style sampler so a model's own
# choice never leaks into a sampler that names a different one.
_PLAIN_SIGMAS = {"use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False}
_KARRAS_SIGMAS = {**_PLAIN_SIGMAS, "use_karras_sigmas": True}


@dataclass(frozen=True)
class Sampler:
    """A user-facing sampler: the diffusers class and the options that make it that sampler."""

    name: str
    scheduler_class: type[SchedulerMixin]
    options: Mapping[str, Any] = field(default_factory=dict)
    # Samplers that draw their own noise from a seed in the config rather than from the
    # generator the pipeline passes (DPM++ SDE's Brownian tree); see make_scheduler.
    seeded_by_config: bool = False


_SAMPLERS = [
    Sampler("DDIM", DDIMScheduler),
    Sampler("PNDM", PNDMScheduler, {"skip_prk_steps": True}),
    Sampler("LMS", LMSDiscreteScheduler, _PLAIN_SIGMAS),
    Sampler("LMS Karras", LMSDiscreteScheduler, _KARRAS_SIGMAS),
    Sampler("Heun", HeunDiscreteScheduler, _PLAIN_SIGMAS),
    Sampler("Euler", EulerDiscreteScheduler, _PLAIN_SIGMAS),
    Sampler("Euler a", EulerAncestralDiscreteScheduler),
    Sampler("DPM2", KDPM2DiscreteScheduler, _PLAIN_SIGMAS),
    Sampler("DPM2 Karras", KDPM2DiscreteScheduler, _KARRAS_SIGMAS),
    Sampler("DPM2 a", KDPM2AncestralDiscreteScheduler, _PLAIN_SIGMAS),
    Sampler("DPM++ 2M", DPMSolverMultistepScheduler, {**_PLAIN_SIGMAS, "algorithm_type": "dpmsolver++", "solver_order": 2}),
    Sampler(
        "DPM++ 2M Karras",
        DPMSolverMultistepScheduler,
        {**_KARRAS_SIGMAS, "algorithm_type": "dpmsolver++", "solver_order": 2},
    ),
    Sampler(
        "DPM++ 2M SDE",
        DPMSolverMultistepScheduler,
        {**_PLAIN_SIGMAS, "algorithm_type": "sde-dpmsolver++", "solver_order": 2},
    ),
    Sampler(
        "DPM++ 2M SDE Karras",
        DPMSolverMultistepScheduler,
        {**_KARRAS_SIGMAS, "algorithm_type": "sde-dpmsolver++", "solver_order": 2},
    ),
    Sampler("DPM++ SDE", DPMSolverSDEScheduler, _PLAIN_SIGMAS, seeded_by_config=True),
    Sampler("DPM++ SDE Karras", DPMSolverSDEScheduler, _KARRAS_SIGMAS, seeded_by_config=True),
    Sampler("UniPC", UniPCMultistepScheduler, _PLAIN_SIGMAS),
]

SAMPLERS: dict[str, Sampler] = {sampler.name.lower(): sampler for sampler in _SAMPLERS}
SAMPLER_NAMES: tuple[str, ...] = tuple(sampler.name for sampler in _SAMPLERS)


# Other spellings in common use: A1111 calls PNDM "PLMS"; configs often write "euler_a".
ALIASES = {"plms": "pndm"}


def get_sampler(name: str) -> Sampler:
    """The sampler called ``name``: case, extra spaces and ``_`` for space do not matter."""
    key = " ".join(str(name).replace("_", " ").split()).lower()
    key = ALIASES.get(key, key)
    if key not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid samplers: {', '.join(SAMPLER_NAMES)}")
    return SAMPLERS[key]


def canonical_sampler_name(name: str) -> str:
    """``"euler A"`` -> ``"Euler a"``: the spelling written into PNG parameters."""
    return get_sampler(name).name


def sampler_for_schedule(name: str, scheduler_config: Mapping[str, Any]) -> str:
    """The sampler that runs for ``name`` on a model's schedule: on a zero-terminal-SNR
    schedule a Karras sampler runs with its plain spacing instead. Karras sigmas reach up to
    the last timestep's (huge) sigma and bunch most steps there: the timesteps repeat
    (999, 999, 998, ...), and diffusers' DPM++ 2M Karras indexes past its sigmas at 30 steps.
    The name returned is the one that goes into the PNG, so the file says what made it."""
    if is_flow_schedule(scheduler_config):
        return _flow_sampler(name)
    sampler = get_sampler(name)
    if not (scheduler_config.get("rescale_betas_zero_snr") and sampler.options.get("use_karras_sigmas")):
        return sampler.name
    plain = sampler.name.removesuffix(" Karras")
    if sampler.name not in _warned:
        _warned.add(sampler.name)
        logger.warning(
            "sampler %s: Karras sigmas do not fit this model's zero-terminal-SNR schedule; sampling with %s",
            sampler.name,
            plain,
        )
    return plain


_warned: set[str] = set()


FLOW_SCHEDULER = "FlowMatchEulerDiscreteScheduler"
FLOW_SAMPLER = "Euler"


def is_flow_schedule(scheduler_config: Mapping[str, Any]) -> bool:
    """Whether a model's scheduler config is a flow-matching one (SD3, FLUX)."""
    return scheduler_config.get("_class_name") == FLOW_SCHEDULER


def _flow_sampler(name: str) -> str:
    sampler = get_sampler(name)
    if sampler.name != FLOW_SAMPLER and sampler.name not in _warned_flow:
        _warned_flow.add(sampler.name)
        logger.warning("sampler %s: SD3 and FLUX models sample with Euler on their flow (ComfyUI: euler, simple)", sampler.name)
    return FLOW_SAMPLER


_warned_flow: set[str] = set()


def make_scheduler(name: str, scheduler_config: Mapping[str, Any], *, seed: int | None = None) -> SchedulerMixin:
    """A fresh scheduler for sampler ``name`` built from a model's ``scheduler_config``.

    The config keeps the model's betas and prediction type (epsilon or v). ``seed`` fixes the
    noise of samplers that seed themselves from their config (DPM++ SDE); without it they would
    draw a seed from torch's global RNG, making images irreproducible and disturbing training.
    """
    if is_flow_schedule(scheduler_config):
        from diffusers import FlowMatchEulerDiscreteScheduler

        _flow_sampler(name)
        return FlowMatchEulerDiscreteScheduler.from_config(dict(scheduler_config))
    sampler = get_sampler(name)
    options = dict(sampler.options)
    if sampler.seeded_by_config and seed is not None:
        options["noise_sampler_seed"] = seed
    scheduler = sampler.scheduler_class.from_config(dict(scheduler_config), **options)
    accepted = inspect.signature(sampler.scheduler_class.__init__).parameters
    if scheduler_config.get("rescale_betas_zero_snr") and "rescale_betas_zero_snr" not in accepted:
        logger.warning(
            "sampler %s cannot use the zero-terminal-SNR schedule this model was trained with; its images "
            "will be off. Samplers that can: %s",
            sampler.name,
            ", ".join(zero_terminal_snr_samplers()),
        )
    return scheduler


def zero_terminal_snr_samplers() -> list[str]:
    """Samplers that honour ``rescale_betas_zero_snr`` (models trained with zero terminal SNR)."""
    return [
        sampler.name
        for sampler in _SAMPLERS
        if "rescale_betas_zero_snr" in inspect.signature(sampler.scheduler_class.__init__).parameters
    ]


def scheduler_from_config(scheduler_config: Mapping[str, Any] | SchedulerMixin) -> SchedulerMixin:
    """A scheduler object as it is, or one of the class its config names (`_class_name`, as
    saved in scheduler_config.json), so its config keeps every key samplers and exports are
    later built from. Sampling and exporting both build theirs here."""
    import diffusers

    if isinstance(scheduler_config, SchedulerMixin):
        return scheduler_config
    if not isinstance(scheduler_config, Mapping) or "_class_name" not in scheduler_config:
        raise ValueError("scheduler_config: expected a diffusers scheduler config with '_class_name'")
    scheduler_class = getattr(diffusers, scheduler_config["_class_name"], None)
    if not (isinstance(scheduler_class, type) and issubclass(scheduler_class, SchedulerMixin)):
        raise ValueError(f"scheduler_config: diffusers has no scheduler {scheduler_config['_class_name']!r}")
    return scheduler_class.from_config(dict(scheduler_config))
