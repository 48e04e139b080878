"""Does sampling during training fit in the memory training already takes? (issue 4)

    python bench/sample_memory_gpu.py --model sd15    # on a CUDA GPU; --model sdxl at 1024
    python bench/sample_memory_gpu.py --tiny          # smoke check of this script on the CPU

Trains edlib's `lean` preset of bench/train_gpu.py (the one a small card runs) on the
architecture's random-weight model for two epochs, sampling every epoch through the engine's
own sampling plugin (prompts at the training resolution, CFG on, 20 DPM++ 2M steps), and
prints the peak GPU memory of the training steps of the second epoch (caches full), of the
sampling events, and their ratio: sampling must not need more than training (ratio <= 1.0),
or a run that fits would fail at its first sample.

Peaks are `torch.cuda.max_memory_allocated`, reset between phases by a probe plugin that runs
before the sampling plugin in each step.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_models  # noqa: E402 - the same model builders and data root as bench/train_gpu.py
import train_gpu  # noqa: E402 - its presets
from bench_timing import WindowDone  # noqa: E402

from edlib.model.config import TrainConfig  # noqa: E402
from edlib.train.hooks import Plugin  # noqa: E402
from edlib.train.loop import train  # noqa: E402

BATCH = {"sd15": 8, "sdxl": 4}


class PeakProbe(Plugin):
    """Peak memory of training steps (second epoch on) and of sampling events, apart.

    `on_step` runs before the sampling plugin's (plugins given by the caller come first), so
    the peak it reads is the step's own; the "sample" event comes right after an event's
    images, so the peak read there is the event's own."""

    name = "peak_probe"

    def __init__(self, device: str):
        self.device = device
        self.training = self.sampling = 0.0  # GiB
        self.events = 0

    def on_step(self, ctx, metrics) -> None:
        if metrics["epoch"] > 1.0:
            self.training = max(self.training, self._read_and_reset())
        else:
            self._read_and_reset()

    def on_event(self, event) -> None:
        if event.kind == "sample":
            self.sampling = max(self.sampling, self._read_and_reset())
            self.events += 1
            if self.events == 2:  # both measured: end the run before its last checkpoint (minutes of disk)
                raise WindowDone

    def _read_and_reset(self) -> float:
        if self.device != "cuda":
            return 0.0
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
        return peak


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=tuple(BATCH), default="sd15")
    parser.add_argument("--tiny", action="store_true", help="tiny model at 64 px on the CPU: a smoke check")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per epoch")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--sample-steps", type=int, default=20, help="denoising steps of each sample")
    parser.add_argument("--jsonl", type=Path, help="append the result to this file as a JSON line")
    args = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    if args.tiny:
        torch.set_num_threads(1)  # tiny models: one thread is fastest, and two thrash a busy 2-core machine
    batch = args.batch_size or (2 if args.tiny else BATCH[args.model])
    resolution = 64 if args.tiny else bench_models.RESOLUTION[args.model]
    work = Path(tempfile.mkdtemp(prefix="edlib-sample-memory-"))
    started = time.perf_counter()
    model = bench_models.build(args.model, work / "model", device, args.tiny)
    prompts = work / "prompts.yaml"
    prompts.write_text(
        yaml.safe_dump(
            {
                "defaults": {"steps": args.sample_steps, "sampler": "DPM++ 2M", "cfg_scale": 7.0, "width": resolution, "height": resolution},
                "prompts": ["a photo of a red cube", "a photo of a blue sphere"],
            }
        ),
        encoding="utf-8",
    )
    config = TrainConfig.from_dict(
        dict(
            model=str(model),
            data_root=str(bench_models.make_data_root(work / "data", batch * args.steps, resolution)),
            run_dir=str(work / "run"),
            resolution=resolution,
            batch_size=batch,
            epochs=2,
            save_every_n_epochs=None,
            save_every_n_minutes=None,
            keep_last_n_checkpoints=1,
            export_formats=[],
            sample_prompts=str(prompts),
            sample_every_n_epochs=1,
            log_every_n_steps=1000,
            **train_gpu.presets(args.model, device == "cuda")["lean"],
        )
    )
    probe = PeakProbe(device)
    try:
        train(config, plugins=[probe], callbacks=[probe.on_event], progress_bar=False)
    except WindowDone:
        pass
    gpu = bench_models.device_name(device)
    print(f"device: {gpu}, {args.model} lean preset, batch {batch}, {resolution} px, {probe.events} sampling event(s)")
    if device == "cuda":
        print(f"training peak GiB  {probe.training:8.2f}")
        print(f"sampling peak GiB  {probe.sampling:8.2f}")
        print(f"sampling / training {probe.sampling / probe.training:7.2f}  (target <= 1.00)")
    else:
        print("peaks: not measured (needs CUDA)")
    print(f"total {time.perf_counter() - started:.0f} s")
    bench_models.append_jsonl(args.jsonl, {
        "bench": "sample_memory", "model": args.model, "tiny": args.tiny, "device": gpu, "case": "lean", "batch": batch,
        "resolution": resolution, "events": probe.events, "training_peak_gib": probe.training if device == "cuda" else None,
        "sampling_peak_gib": probe.sampling if device == "cuda" else None,
        "ratio": probe.sampling / probe.training if device == "cuda" and probe.training else None,
        "wall_s": time.perf_counter() - started,
    })  # fmt: skip


if __name__ == "__main__":
    main()
