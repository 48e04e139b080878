"""Where cached latents, text embeddings and per-sample constants live between steps.

A cached tensor used every epoch is best kept on the training device: a step then reads it
with no copy at all. An SD1.5 latent at 512 px is 64 KiB and an SDXL text embedding 630 KiB,
so a data root of a few thousand images fits in a small share of a GPU. `DeviceStore` keeps
entries on the device until `DEVICE_CACHE_SHARE` of the device's memory is used, and the rest
in pinned host memory, copied to the device without blocking when a step needs them. On a
CPU there is one memory and everything stays where it is.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from edlib.model.transfer import upload, uploading

# The share of the GPU's memory cached tensors may take (4 GiB of an 80 GiB H100, 1.2 GiB of
# a 24 GiB card); past it, entries wait in pinned host memory.
DEVICE_CACHE_SHARE = 0.05


class DeviceStore:
    """Keeps tensors on `device` while `budget_bytes` last (default: `DEVICE_CACHE_SHARE` of a
    CUDA device's memory; unlimited elsewhere), then in host memory, pinned unless `pin` is
    False (a copy from it then goes through a pinned buffer, still without blocking)."""

    def __init__(self, device: torch.device | str, budget_bytes: int | None = None, pin: bool = True):
        self.device, self.pin = torch.device(device), pin
        if budget_bytes is None:
            on_gpu = self.device.type == "cuda"
            budget_bytes = int(torch.cuda.get_device_properties(self.device).total_memory * DEVICE_CACHE_SHARE) if on_gpu else -1
        self.budget_bytes = budget_bytes  # -1: no limit (the device is host memory)
        self.used_bytes = 0

    def keep(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` as the store keeps it: on the device, or in pinned host memory."""
        tensor = tensor.detach()
        size = tensor.numel() * tensor.element_size()
        if self.budget_bytes < 0 or self.used_bytes + size <= self.budget_bytes:
            self.used_bytes += size
            # A copy even when it is on the device already: a row of an encoded batch is a
            # view that would keep the whole batch alive (and `used_bytes` would count one row).
            return tensor.to(self.device, copy=True, memory_format=torch.contiguous_format)
        tensor = tensor.to("cpu").contiguous()
        return tensor.pin_memory() if self.pin and self.device.type == "cuda" else tensor

    def fetch(self, tensor: torch.Tensor) -> torch.Tensor:
        """A kept tensor on the device (queued, not waited for, when it was in host memory)."""
        return tensor if tensor.device == self.device else upload(tensor, self.device)


class LatentCache:
    """Latents per (image, bucket, flip), so the VAE encodes each once.

    `mode` "memory" keeps them in a `DeviceStore`; "disk" writes safetensors files to
    `directory`, reused by a resumed run (the key includes the file's size and mtime, so an
    edited image is encoded again), and reads them back when used. Latents are the VAE
    posterior mean (see `edlib.model.models.encode_images`), so cached and uncached training
    are identical.
    """

    def __init__(self, mode: str, directory: Path | None = None, store: DeviceStore | None = None):
        self.mode = mode
        self.directory = directory
        self.store = store or DeviceStore("cpu")
        self._memory: dict[str, torch.Tensor] = {}
        if mode == "disk":
            directory.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(path: Path, bucket: tuple[int, int], flip: bool) -> str:
        stat = path.stat()
        text = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{bucket[0]}x{bucket[1]}|{int(flip)}"
        return hashlib.sha1(text.encode()).hexdigest()

    def has(self, key: str) -> bool:
        if self.mode == "memory":
            return key in self._memory
        return (self.directory / f"{key}.safetensors").exists()

    def get(self, key: str) -> torch.Tensor | None:
        """The latents of `key` on the store's device, or None."""
        if self.mode == "memory":
            found = self._memory.get(key)
            return None if found is None else self.store.fetch(found)
        file = self.directory / f"{key}.safetensors"
        if not file.exists():
            return None
        with uploading():
            return upload(load_file(str(file))["latents"], self.store.device)

    def put(self, key: str, latents: torch.Tensor) -> None:
        if self.mode == "memory":
            self._memory[key] = self.store.keep(latents)
        else:  # written under a temp name and renamed: a killed run never leaves half a file
            tmp = self.directory / f".{key}.tmp"
            save_file({"latents": latents.detach().to("cpu").contiguous()}, str(tmp))
            tmp.replace(self.directory / f"{key}.safetensors")
