"""Counting host round trips: the places where the training thread would wait for the GPU.

A GPU runs the work the host queues, in order, while the host goes on queueing; the host
waits (and the GPU's queue drains) whenever it needs a value the GPU computes, or copies
between pageable host memory and the GPU. So a training step is written to queue everything
and read nothing back except on logging steps. `HostRoundTrips` counts what would break
that, in a way that works on the CPU too, where "device" and host are the same memory:

- **reads**: a tensor's value brought into Python (`item`, `tolist`, `numpy`, `bool(t)`,
  `float(t)`, `int(t)`, `t.__index__`, an `if` on a tensor). On a GPU each waits for every
  queued kernel before it.
- **host data**: a tensor made from Python or numpy data (`torch.tensor`, `torch.as_tensor`,
  `torch.from_numpy`, `Tensor.new_tensor`). In a training step such a tensor is on its way
  to the device, and a copy from pageable memory makes CUDA synchronise the stream first.
  Not counted when made inside `edlib.model.transfer.uploading()`: that code copies it from
  pinned memory without blocking (`upload`).
- **copies**: a copy between two devices that blocks (on a GPU: device to host, or host to
  device from pageable memory or without `non_blocking`). None exist on a CPU-only machine.

A call counts once, whatever it does inside (`tolist` of a CUDA tensor is one read, not a
read and a copy). Library code is counted too (torch, diffusers, accelerate): the test is
of the step as it runs, not of edlib's lines alone. On a GPU, `torch.cuda.set_sync_debug_mode`
is the ground truth; this count is what a CPU machine can check in CI.
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from edlib.model.transfer import is_uploading
from edlib.train.hooks import Plugin

_READS = {"item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__"}
_HOST_DATA = {torch.ops.aten.lift_fresh.default, torch.ops.aten.lift_fresh_copy.default}
_COPIES = {torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default}


class HostRoundTrips:
    """Counts reads, host data and blocking copies (see the module docstring) between
    `start()` and `stop()`, or inside `with HostRoundTrips() as count:`. `events` keeps what
    was counted (e.g. "read:item"), for a message naming the culprits."""

    def __init__(self):
        self.events: Counter[str] = Counter()
        self._inside = 0  # > 0 while a counted call runs: what it does inside is not counted again
        self._function_mode = _FunctionMode(self)
        self._dispatch_mode = _DispatchMode(self)

    @property
    def total(self) -> int:
        return sum(self.events.values())

    def start(self) -> HostRoundTrips:
        self._dispatch_mode.__enter__()
        self._function_mode.__enter__()
        return self

    def stop(self) -> None:
        self._function_mode.__exit__(None, None, None)
        self._dispatch_mode.__exit__(None, None, None)

    def __enter__(self) -> HostRoundTrips:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _count(self, event: str) -> None:
        if not self._inside:
            self.events[event] += 1


class _FunctionMode(TorchFunctionMode):
    def __init__(self, counter: HostRoundTrips):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name not in _READS:
            return func(*args, **(kwargs or {}))
        self.counter._count(f"read:{name}")
        self.counter._inside += 1
        try:
            return func(*args, **(kwargs or {}))
        finally:
            self.counter._inside -= 1


class _DispatchMode(TorchDispatchMode):
    def __init__(self, counter: HostRoundTrips):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _HOST_DATA:
            if not is_uploading():
                self.counter._count("host data:torch.tensor")
        elif func is torch.ops.aten._local_scalar_dense.default:
            self.counter._count("read:_local_scalar_dense")  # a read from inside C++ code
        elif func in _COPIES and _blocking_transfer(func, args, kwargs):
            self.counter._count("copy:blocking")
        return func(*args, **kwargs)


def _blocking_transfer(func, args, kwargs) -> bool:
    """Whether a copy moves data between devices in a way that makes the host wait."""
    if func is torch.ops.aten.copy_.default:
        destination, source = args[0].device, args[1].device
        non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
        pinned_source = source.type == "cpu" and args[1].is_pinned()
    else:
        source = args[0].device
        destination = kwargs.get("device") or source
        non_blocking = kwargs.get("non_blocking", False)
        pinned_source = source.type == "cpu" and args[0].is_pinned()
    if torch.device(destination) == source:
        return False
    to_device = source.type == "cpu"
    return not (to_device and non_blocking and pinned_source)


class CudaSyncs:
    """On a GPU, the ground truth: the synchronising CUDA calls torch reports itself
    (`torch.cuda.set_sync_debug_mode`), counted between `start()` and `stop()`. It sees what
    waits inside torch's CUDA code (reads, blocking copies), not a non-blocking copy from
    pageable memory (CUDA synchronises that one silently), which `HostRoundTrips` counts."""

    def __init__(self):
        self.events: Counter[str] = Counter()
        self._catching = None

    @property
    def total(self) -> int:
        return sum(self.events.values())

    def start(self) -> CudaSyncs:
        self._catching = warnings.catch_warnings(record=True)
        self._records = self._catching.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        return self

    def stop(self) -> None:
        torch.cuda.set_sync_debug_mode(0)
        self._catching.__exit__(None, None, None)
        for record in self._records:
            if "synchroniz" in str(record.message):
                self.events[f"cuda sync:{record.filename.rsplit('/', 1)[-1]}:{record.lineno}"] += 1


class RoundTripCounter(Plugin):
    """Counts host round trips per optimizer step of a real run: from one `on_step` to the
    next, so an interval holds a step's compute and the loop's work after the step before.
    Put it first among the plugins, so the interval of step k ends before the other plugins'
    work for step k. `per_step[k]` is the count of the interval that ends at step k; the
    caller knows which steps log (`log_every_n_steps`) and which end an epoch. `counter`:
    `HostRoundTrips` (anywhere) or `CudaSyncs` (on a GPU)."""

    name = "round_trip_counter"

    def __init__(self, counter=HostRoundTrips):
        self.make_counter = counter
        self.per_step: dict[int, int] = {}
        self.events: dict[int, dict[str, int]] = {}
        self._counter = None

    def on_step(self, ctx, metrics: dict[str, Any]) -> None:
        step = metrics["step"]
        if self._counter is not None:
            self._counter.stop()
            self.per_step[step] = self._counter.total
            self.events[step] = dict(self._counter.events)
        self._counter = self.make_counter().start()

    def on_end(self, ctx) -> None:
        if self._counter is not None:
            self._counter.stop()
            self._counter = None
