"""The estimate's CPU row (`edlib.model.estimate.CPU_MEASURED`): edlib's training loop on the
bundled world model, full fine-tune with the text encoder, cached latents, fp32, 64 px.

It counts the training thread's CPU time per optimizer step with one torch thread: what one
quiet core delivers, and a figure a shared machine can still measure (the wall clock of a
2-core machine running other jobs is not). Prints the median over the steps after the first.

    python bench/cpu_world.py [--batch 4] [--steps 41]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from edlib.model.config import TrainConfig
from edlib.train import train
from edlib.train.hooks import Plugin
from edlib.world import write_data_root
from edlib.world.demo_data import DEMO_SPEC


class CpuClock(Plugin):
    """This thread's CPU seconds between optimizer steps."""

    name = "cpu_clock"

    def __init__(self):
        self.last, self.per_step = 0.0, []

    def on_start(self, ctx):
        self.last = time.thread_time()

    def on_step(self, ctx, metrics):
        now = time.thread_time()
        self.per_step.append(now - self.last)
        self.last = now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=41)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_data_root(data, DEMO_SPEC, seed=0, size=64)
        config = TrainConfig.from_dict(
            {
                "model": "edlib:world",
                "data_root": str(data),
                "run_dir": str(Path(tmp) / "run"),
                "resolution": 64,
                "batch_size": args.batch,
                "epochs": 1000,
                "max_steps": args.steps,
                "unet_lr": 3e-4,
                "text_encoder_lr": 3e-4,
                "cache_latents": "memory",
                "save_every_n_epochs": None,
                "save_every_n_minutes": None,
                "export_formats": [],
            }
        )
        clock = CpuClock()
        train(config, progress_bar=False, plugins=[clock])
    seconds = statistics.median(clock.per_step[1:])
    print(json.dumps({"batch": args.batch, "steps": args.steps, "cpu_s_per_step": round(seconds, 4), "images_per_cpu_s": round(args.batch / seconds, 2)}))


if __name__ == "__main__":
    main()
