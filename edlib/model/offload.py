"""Where the frozen encoders live: CPU memory, when the run caches everything they compute.

With `cache_latents` the VAE only encodes images not yet in the cache; with
`cache_text_embeddings` the frozen text encoder(s) only encode captions not yet in it. A
training step then needs neither, so on an accelerator they are kept in CPU memory (for
SDXL about 1.8 GB of bf16 weights the GPU need not hold) and brought to the training device
only for the moments that run them: encoding cache misses (a move there and back for each
batch of the first epoch that has one; for SDXL's encoders about 0.1-0.3 s by PCIe bandwidth,
not yet measured), a sampling event, a validation pass. Modules keep their dtype on the way,
and each runs on the training device, so cached values and samples are the same as without
offloading. On a CPU-only run the training device is the CPU: nothing moves.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

HOME = torch.device("cpu")  # where offloaded modules wait


def offloaded_modules(config, models) -> tuple[str, ...]:
    """`Models` attribute names of the frozen modules whose every output the run caches:
    the VAE with `cache_latents`, the text encoders with `cache_text_embeddings` (which the
    config allows only while they are frozen)."""
    names = ("vae",) if config.cache_latents != "no" else ()
    if config.cache_text_embeddings:
        names += models.text_encoder_names
    return names


def home_device(name: str, config, models, training_device: torch.device) -> torch.device:
    """The device the module `name` stays on between uses during training."""
    return HOME if name in offloaded_modules(config, models) else torch.device(training_device)


@contextmanager
def on_device(models, names: Sequence[str], device: torch.device) -> Iterator[None]:
    """The modules `names` of `models` on `device` for the block, and back on the CPU after
    (only those this moved: a module already there stays)."""
    device = torch.device(device)
    moved = [getattr(models, name) for name in names if not _same(_device_of(getattr(models, name)), device)]
    for module in moved:
        module.to(device)
    try:
        yield
    finally:
        for module in moved:
            module.to(HOME)


@contextmanager
def park_on_cpu(module: torch.nn.Module) -> Iterator[None]:
    """``module``'s weights and buffers that are on an accelerator wait in CPU memory for the
    block, and go back to the device each came from after it (weights already in CPU memory,
    e.g. swapped blocks', stay). Nothing moves on a CPU-only run, or for a module DDP wraps
    (its gradient hooks hold on to the parameters)."""
    if isinstance(module, torch.nn.parallel.DistributedDataParallel):
        yield
        return
    tensors = [t for t in (*module.parameters(), *module.buffers()) if t.device.type != "cpu"]
    homes = [t.device for t in tensors]
    for tensor in tensors:
        tensor.data = tensor.data.to(HOME)
    if tensors and torch.cuda.is_available():
        torch.cuda.empty_cache()  # give the freed memory to what the block loads
    try:
        yield
    finally:
        for tensor, device in zip(tensors, homes):
            tensor.data = tensor.data.to(device)


@contextmanager
def encoders_on_device(ctx) -> Iterator[None]:
    """A plugin's block (sampling, validation) with the run's offloaded modules on its
    training device."""
    with on_device(ctx.models, offloaded_modules(ctx.config, ctx.models), ctx.accelerator.device):
        yield


def _same(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are one ("cuda" and "cuda:0" are, for the current GPU)."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _device_of(module: torch.nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return HOME if parameter is None else parameter.device
