"""Two CPU processes (torchrun + gloo through accelerate) split every batch of the schedule:
each scheduled sample is trained exactly once, and the run equals one process training the
same schedule with twice the batch size."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from edlib.model.checkpoint import resolve_checkpoint
from edlib.train.loop import train
from tests.train.loop_support import (
    checkpoint_weights,
    make_data_root,
    metrics,
    one_torch_thread,  # noqa: F401 - autouse fixture
    tiny_config,
)

# Each process records which schedule slots and images it trained.
_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    from edlib.model.config import TrainConfig
    from edlib.train.hooks import Plugin
    from edlib.train.loop import train

    class Record(Plugin):
        name = "record"

        def on_start(self, ctx):
            self.rank, self.world, self.seen = ctx.accelerator.process_index, ctx.accelerator.num_processes, []

        def on_sample_losses(self, ctx, batch, timesteps, losses):
            for slot, item in zip(batch.slots, batch.items):
                self.seen.append([batch.epoch, batch.index, slot, item])

    record = Record()
    train(TrainConfig.model_validate_json(Path(sys.argv[1]).read_text()), plugins=[record])
    out = {"world": record.world, "seen": record.seen}
    Path(sys.argv[2], f"rank{record.rank}.json").write_text(json.dumps(out))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_every_sample_exactly_once(tiny_sd1, tmp_path):
    data = make_data_root(
        tmp_path / "data", folders={"warm": ["red", "white", "red"], "cool": ["green", "blue", "blue"]}
    )
    (data / "warm" / "multiply.txt").write_text("1.5")  # fractional: epochs differ, fill may occur
    # The text encoder trains too: DDP wraps only the UNet, so this checks that the loop
    # averages the text encoder's gradients itself (else the processes' copies drift apart).
    config = tiny_config(tiny_sd1, data, tmp_path / "two", batch_size=1, epochs=2, unet_lr=1e-3, text_encoder_lr=1e-3)
    (tmp_path / "config.json").write_text(config.model_dump_json())
    (tmp_path / "record.py").write_text(_SCRIPT)
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "true",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(Path(__file__).parents[2]),
    }
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        str(tmp_path / "record.py"), str(tmp_path / "config.json"), str(tmp_path),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    scan_paths = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.png"))
    for epoch in (0, 1):
        # The schedule as written by the main process: one line per (batch, slot).
        lines = (tmp_path / "two" / "schedules" / f"ep{epoch}_batch_schedule.txt").read_text().splitlines()
        scheduled = Counter()
        for n, line in enumerate(lines):
            batch, _, path = line.split("\t")
            scheduled[(int(batch), n % 2, path)] += 1
        trained = Counter(
            (batch, slot, scan_paths[item]) for r in ranks for e, batch, slot, item in r["seen"] if e == epoch
        )
        assert trained == scheduled  # every scheduled sample once, none twice, none skipped
        assert {slot for e, _, slot, _ in ranks[0]["seen"] if e == epoch} == {0}
        assert {slot for e, _, slot, _ in ranks[1]["seen"] if e == epoch} == {1}

    # Same schedule in one process at batch size 2: same losses and weights, since every
    # per-sample random draw depends on the sample's slot, not on which process trains it.
    one = tmp_path / "one"
    train(config.model_copy(update={"run_dir": one, "batch_size": 2}))
    for a, b in zip(metrics(tmp_path / "two"), metrics(one), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    # Weights: the gradient all-reduce sums in another order than one process does, and
    # Adam turns those last-bit differences on near-zero gradients into steps of about lr
    # for a few parameters; on average the two runs agree to float precision.
    for name in ("unet", "text_encoder"):
        two = checkpoint_weights(resolve_checkpoint("latest", tmp_path / "two"), name)
        single = checkpoint_weights(resolve_checkpoint("latest", one), name)
        total = sum((two[k] - single[k]).abs().sum().item() for k in two)
        assert total / sum(t.numel() for t in two.values()) < 1e-6, name
