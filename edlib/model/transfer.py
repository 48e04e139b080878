"""Host data onto the training device without the host waiting for it.

A copy to a CUDA device from ordinary (pageable) host memory makes CUDA finish the work
queued before it first; from pinned (page-locked) memory with `non_blocking=True` it is just
queued. `upload` does the latter. Code that builds host tensors only to upload them says so
with `uploading()`, which `edlib.train.host_sync` (the host round-trip count) honours: such a
tensor is no round trip. On a GPU, `torch.cuda.set_sync_debug_mode` checks the same claim.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

_state = threading.local()


@contextlib.contextmanager
def uploading() -> Iterator[None]:
    """Mark host tensors made inside the block as on their way to the device through `upload`."""
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1


def is_uploading() -> bool:
    return getattr(_state, "depth", 0) > 0


def upload(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """`tensor` (in host memory) on `device`; to a GPU from pinned memory, without blocking
    (torch's pinned-memory allocator keeps the source alive until the copy is done)."""
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    if not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def upload_stack(tensors: list[torch.Tensor], device: torch.device | str) -> torch.Tensor:
    """`torch.stack(tensors)` (host tensors of one shape) on `device`. For a GPU the stack is
    written straight into pinned memory, so the batch is copied once on the host, not once
    by the stack and again by `pin_memory`, and the upload does not block."""
    device = torch.device(device)
    if device.type != "cuda":
        return torch.stack(tensors).to(device)
    first = tensors[0]
    pinned = torch.empty((len(tensors), *first.shape), dtype=first.dtype, pin_memory=True)
    return upload(torch.stack(tensors, out=pinned), device)


def host_tensor(data, device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`torch.tensor(data)` on `device`, uploaded without blocking."""
    with uploading():
        return upload(torch.tensor(data, dtype=dtype), device)
