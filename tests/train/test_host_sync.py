"""Issue 16: a training step that never waits on the host. The count of host round trips
(edlib.train.host_sync: values read into Python, tensors made from host data, blocking
copies) of real steps on the CPU, per step, for the fast preset (cached latents and text,
fused AdamW, channels_last) and the others."""

import pytest
import torch

from edlib.train.host_sync import CudaSyncs, HostRoundTrips, RoundTripCounter
from edlib.train.loop import train
from tests.train.loop_support import make_data_root, one_torch_thread, tiny_config  # noqa: F401

COLOURS = ["red", "green", "blue", "white"]
FAST = dict(cache_latents="memory", cache_text_embeddings=True, channels_last=True, optimizer_args={"fused": True})
LOG_EVERY = 4


def test_the_counter_counts_reads_host_data_and_nothing_else():
    x = torch.ones(4)
    with HostRoundTrips() as count:
        y = (x * 2).sum()  # device work: not counted
        torch.randn(3)
    assert count.total == 0
    with HostRoundTrips() as count:
        y.item()
        x.tolist()
        bool(x[0] > 0)
        float(y)
        torch.tensor([1.0, 2.0])
        torch.from_numpy(x.numpy())  # a read (numpy) and host data (from_numpy)
    assert count.events == {"read:item": 1, "read:tolist": 1, "read:__bool__": 1, "read:__float__": 1,
                            "read:numpy": 1, "host data:torch.tensor": 2}  # fmt: skip


def _counted_run(model, tmp_path, counter=HostRoundTrips, **settings):
    """Per-step counts of the second epoch's steps that neither log nor follow a logging step
    or an epoch end (so an interval holds one plain step and the loop's work around it)."""
    data = make_data_root(tmp_path / "data", folders={"a": COLOURS * 2, "b": COLOURS * 2})  # 16 images
    counter = RoundTripCounter(counter)
    config = tiny_config(model, data, tmp_path / "run", batch_size=2, epochs=2, log_every_n_steps=LOG_EVERY, **settings)
    try:
        train(config, plugins=[counter])
    finally:
        counter.on_end(None)
    steps_per_epoch = 8
    plain = [k for k in counter.per_step if k > steps_per_epoch + 1 and (k - 1) % LOG_EVERY and (k - 1) % steps_per_epoch]
    assert len(plain) >= 4, counter.per_step
    return {k: counter.per_step[k] for k in plain}, counter


def test_a_fast_step_makes_no_host_round_trip(tiny_sd1, tmp_path):
    plain, counter = _counted_run(tiny_sd1, tmp_path, **FAST)
    assert all(n == 0 for n in plain.values()), {k: counter.events[k] for k in plain}
    # A logging step reads its window back: a few reads, not one per step and value.
    logging = [counter.per_step[k] for k in counter.per_step if k > 9 and (k - 1) % LOG_EVERY == 0]
    assert logging and max(logging) <= 8, counter.per_step


UNCACHED = dict(decode_workers=1, optimizer_args={"fused": True})  # fused: the default on a GPU, as in FAST


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        pytest.param(UNCACHED, 0, id="uncached: images decoded by a worker, captions encoded every step"),
        pytest.param(dict(FAST, ema_decay=0.99, min_snr_gamma=5.0, loss_tracking=True), 0, id="fast+ema+min-snr+tracker"),
        # An optimizer that cannot skip on the device: the step reads its non-finite flag.
        pytest.param(dict(FAST, optimizer="adafactor", optimizer_args={}), 1, id="adafactor"),
    ],
)
def test_other_presets_stay_within_one_round_trip_per_step(tiny_sd1, tmp_path, settings, expected):
    plain, counter = _counted_run(tiny_sd1, tmp_path, **settings)
    assert all(n == expected for n in plain.values()), {k: counter.events[k] for k in plain}


@pytest.mark.gpu
@pytest.mark.parametrize("settings", [FAST, UNCACHED], ids=["fast", "uncached"])
def test_on_a_gpu_a_plain_step_never_synchronises(tiny_sd1, tmp_path, settings):
    """The ground truth on a GPU: CUDA's own sync warnings over plain steps (bf16, the fused
    AdamW a GPU run uses by default)."""
    plain, counter = _counted_run(tiny_sd1, tmp_path, counter=CudaSyncs, mixed_precision="bf16", **settings)
    assert all(n == 0 for n in plain.values()), {k: counter.events[k] for k in plain}
