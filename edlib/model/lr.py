"""Learning-rate schedules: the one place both the trainer and the preview get them from.

The preview draws the curve the trainer will follow, so both build the scheduler the same
way, through diffusers' `get_scheduler` (the schedules users know from the diffusers and
kohya scripts), on a throwaway optimizer when only the curve is wanted.
"""

from __future__ import annotations

from dataclasses import replace

from edlib.data.preview import Preview

LR_SCHEDULERS = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
)


def make_lr_scheduler(
    optimizer,
    name: str,
    *,
    total_steps: int,
    warmup_steps: int = 0,
    num_cycles: int = 1,
    power: float = 1.0,
):
    """A torch LR scheduler stepping once per optimizer step."""
    from diffusers.optimization import get_scheduler

    if name not in LR_SCHEDULERS:
        raise ValueError(f"lr_scheduler: unknown value {name!r}; allowed: {', '.join(LR_SCHEDULERS)}")
    kwargs = {}
    if name == "cosine_with_restarts":
        kwargs["num_cycles"] = num_cycles
    if name == "polynomial":
        kwargs["power"] = power
    scheduler = get_scheduler(
        name,
        optimizer=optimizer,
        num_warmup_steps=warmup_steps,
        num_training_steps=max(total_steps, 1),
        **kwargs,
    )
    # A run can take more steps than planned (a multiplier raised mid-run, a hard-example
    # boost): hold the schedule at its end value then, instead of letting cosine rise again.
    end = max(total_steps, 1)
    scheduler.lr_lambdas = [_held_at(end, factor) for factor in scheduler.lr_lambdas]
    return scheduler


def _held_at(end: int, factor):
    return lambda step: factor(min(step, end))


def lr_curve(
    name: str,
    base_lr: float,
    *,
    total_steps: int,
    warmup_steps: int = 0,
    num_cycles: int = 1,
    power: float = 1.0,
) -> list[float]:
    """The learning rate used at each optimizer step 0..total_steps-1.

    diffusers' schedulers are `LambdaLR`s, so the curve is read off the multiplier function
    directly instead of stepping an optimizer (100,000 steps in milliseconds).
    """
    import torch

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=base_lr)
    sched = make_lr_scheduler(
        opt, name, total_steps=total_steps, warmup_steps=warmup_steps, num_cycles=num_cycles, power=power
    )
    factor = sched.lr_lambdas[0]
    return [base_lr * factor(step) for step in range(total_steps)]


def with_lr_curve(
    p: Preview,
    name: str,
    base_lr: float,
    *,
    warmup_steps: int = 0,
    num_cycles: int = 1,
    power: float = 1.0,
) -> Preview:
    """The preview `p` with the learning-rate curve its run follows over its total steps."""
    curve = lr_curve(name, base_lr, total_steps=p.total_steps, warmup_steps=warmup_steps, num_cycles=num_cycles, power=power)
    return replace(p, lr_scheduler=name, lr=curve)
