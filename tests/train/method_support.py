"""Helpers of the method tests (LoRA, textual inversion, hypernetwork): real optimizer steps
outside the loop, a UNet output to compare, and a callback that stops a run as a user does."""

import torch

from edlib.model.models import encode_prompts
from edlib.train.noise import per_sample_loss, sample_noise, sample_timesteps, training_target


def train_steps(models, method, *, steps: int = 3, captions=("a photo of a cat", "red dog"), weight_decay=0.1):
    """Real optimizer steps: AdamW with weight decay over the method's parameter groups, each
    step a forward and backward pass of text encoder and UNet on noised random latents, with
    the loss the loop uses. Returns the losses."""
    optimizer = torch.optim.AdamW(method.param_groups(models), weight_decay=weight_decay)
    prepare = getattr(method, "prepare_captions", list)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        latents = torch.randn(len(captions), 4, 8, 8, generator=generator)
        noise = sample_noise(latents, generator)
        timesteps = sample_timesteps(models.noise_scheduler, generator, batch_size=len(captions))
        noisy = models.noise_scheduler.add_noise(latents, noise, timesteps)
        text = encode_prompts(models, prepare(list(captions))).hidden
        prediction = models.unet(noisy, timesteps, encoder_hidden_states=text).sample
        target = training_target(models.noise_scheduler, latents, noise, timesteps)
        loss = per_sample_loss(prediction, target).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def stop_after(run_dir, step: int):
    """A loop callback that asks the run to stop after ``step``, as a user does: by creating
    `control/stop` in the run folder."""

    def callback(event):
        if event.kind == "step" and event.data["step"] == step:
            (run_dir / "control" / "stop").touch()

    return callback


@torch.no_grad()
def unet_output(models) -> torch.Tensor:
    generator = torch.Generator().manual_seed(5)
    latents = torch.randn(1, 4, 8, 8, generator=generator)
    text = encode_prompts(models, ["a photo of a red cat"]).hidden
    return models.unet(latents, 500, encoder_hidden_states=text).sample
