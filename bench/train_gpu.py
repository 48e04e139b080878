"""GPU benchmark of the training engine against the diffusers reference training step.

    python bench/train_gpu.py                         # SD1.5 architecture, 512 px, every SD1.5 case
    python bench/train_gpu.py --model sdxl            # SDXL base 1.0 architecture, 1024 px
    python bench/train_gpu.py --cases reference:16 fast:16 --jsonl out.jsonl --budget 300
    python bench/train_gpu.py --tiny [--model sdxl]   # smoke check anywhere (CPU, tiny model, 64 px)
    python bench/train_gpu.py --model flux            # FLUX.1-dev (sd35l, sd35m: SD3.5): bench/flow_cases.py

Builds the published architecture with random weights (bench_models.py), then measures the
cases of `CASES[model]` in order, each as a row printed and appended to `--jsonl` the moment
it is measured (so a run cut short keeps its rows):

- reference: a step written the way diffusers' examples/text_to_image scripts do it
  (bench_timing.reference_run): SD1.5 runs its VAE and text encoder every step, as
  train_text_to_image.py does; SDXL precomputes latents and prompt embeddings, as
  train_text_to_image_sdxl.py does. `reference-encoders` (SDXL, not run by default) is the
  SDXL step with both encoders and the VAE every step, labelled so.
- fast: edlib's engine (`edlib.train.train`, the real loop on a real data root) with cached
  latents and text embeddings, fused AdamW, channels_last, torch.compile.
- lean: the engine with gradient checkpointing and 8-bit AdamW (plus the caches); for SDXL
  also `full_bf16` with stochastic rounding (edlib's 8-bit AdamW), issue 9's 24 GiB preset.
- lora: the engine's LoRA (rank 16 on attention, base in bf16) with gradient checkpointing and
  the caches; lora-no-ckpt (SD1.5) the same without checkpointing.

Columns: images/s (wall clock over a window of whole steps, `torch.cuda.synchronize()` at
both ends; the engine's in its second epoch, after caching and compilation), x ref (ratio to
the reference row at the same batch measured in this run), MFU (UNet forward + backward FLOPs
per image, counted with torch.utils.flop_counter on the meta device, x images/s, over the one
peak --peak-tflops, default 989 TFLOP/s dense bf16 of an H100 SXM; recomputation by gradient
checkpointing is not counted, nor LoRA's weight gradients, which it does not compute), peak
GiB (`torch.cuda.max_memory_allocated` over the window), first step s (synchronised; for
compiled cases compile s = its excess over a window step), host syncs/step (engine: after the
window, on a GPU the synchronising CUDA calls per step, on a CPU edlib.train.host_sync's count).
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_models import (  # noqa: E402
    NAMES,
    RESOLUTION,
    append_jsonl,
    build,
    device_name,
    make_data_root,
    model_flops_per_image,
    unet_train_flops_per_image,  # noqa: F401 - re-exported: tests/bench/test_train_gpu.py uses it
)
from bench_timing import engine_run, reference_run  # noqa: E402
from flow_cases import FLOW_MODELS, run_flow  # noqa: E402 - bench/flow_cases.py: FLUX.1 and SD3.5 rows


@dataclass(frozen=True)
class Case:
    """One row: `kind` "reference" (diffusers' step) or an engine preset of `presets`."""

    kind: str
    batch: int
    estimate_s: int  # wall time on an H100, building the model aside: what --budget plans with
    note: str = ""
    nominal_batch: int | None = None  # the batch it stands for (a --tiny run scales batches down)


# The rows of each model, most important first (bench/gpu_check.sh runs them in this order).
CASES: dict[str, list[Case]] = {
    "sd15": [
        Case("reference", 16, 25),
        Case("fast", 16, 240, "compiles for ~160 s"),
        Case("reference", 8, 20),
        Case("lean", 8, 60),
        Case("lora", 16, 50),
        Case("lora-no-ckpt", 16, 45),
    ],
    "sdxl": [
        Case("reference", 4, 40),
        Case("lean", 4, 90),
        Case("lora", 4, 70),
        Case("fast", 4, 300, "compiles for minutes"),
    ],
}
BUILD_ESTIMATE_S = {"sd15": 30, "sdxl": 90}  # building and saving the random-weight model on an H100
EXTRA_CASES: dict[str, list[Case]] = {"sdxl": [Case("reference-encoders", 4, 45, "VAE and both text encoders every step")]}
REFERENCES = ("reference", "reference-encoders")


def presets(model: str, gpu: bool) -> dict[str, dict]:
    """The engine's config keys for each case (the CPU smoke check skips what needs CUDA,
    and compilation, which takes minutes on a CPU)."""
    fast = dict(
        mixed_precision="bf16" if gpu else "no",
        cache_latents="memory",
        cache_text_embeddings=True,
        channels_last=True,
        compile=gpu,
        optimizer_args={"fused": True},
    )
    # On a CPU: AdamW, fused as it is by default on a GPU (bitsandbytes' 8-bit AdamW needs CUDA).
    lean = dict(fast, channels_last=False, compile=False, gradient_checkpointing=True,
                optimizer_args={} if gpu else {"fused": True}, optimizer="adamw8bit" if gpu else "adamw")  # fmt: skip
    lora = dict(lean, optimizer="adamw", method="lora", network_dim=16, network_alpha=8.0, unet_lr=1e-4)
    if model == "sdxl":  # bf16 weights and gradients, edlib's 8-bit AdamW with stochastic rounding (runs on a CPU too)
        lean = dict(lean, mixed_precision="bf16", full_bf16=True, optimizer="adamw8bit", optimizer_args={})
    # Issue 6: LoRA with and without checkpointing; with it, the preset meant to fit 8 GiB.
    return {"fast": fast, "lean": lean, "lora": lora, "lora-no-ckpt": dict(lora, gradient_checkpointing=False)}


class Bench:
    """One model, built once; rows measured in order, printed and appended to `jsonl`."""

    def __init__(self, model: str, path: Path, work: Path, device: str, resolution: int, args, jsonl: Path | None):
        self.model, self.path, self.work, self.device, self.resolution = model, path, work, device, resolution
        self.steps, self.warmup, self.count_steps = args.steps, args.warmup, args.count_steps
        self.peak_flops, self.jsonl, self.tiny = args.peak_tflops * 1e12, jsonl, args.tiny
        self.references: dict[int, float] = {}

    def measure(self, case: Case) -> dict:
        started = time.perf_counter()
        if case.kind in REFERENCES:
            result = reference_run(self.path, case.batch, self.resolution, self.steps, self.warmup, self.device,
                                   encoders_each_step=case.kind == "reference-encoders")  # fmt: skip
            if case.kind == "reference":
                self.references[case.batch] = result["images_per_s"]
        else:
            preset = presets(self.model, self.device == "cuda")[case.kind]
            images = case.batch * (self.warmup + self.steps + self.count_steps + 1)
            data = make_data_root(self.work / f"data-{case.batch}", images, self.resolution)
            result = engine_run(self.path, data, self.work / f"run-{case.kind}", self.device, steps=self.steps,
                                warmup=self.warmup, count_steps=self.count_steps, batch_size=case.batch,
                                resolution=self.resolution, **preset)  # fmt: skip
            shutil.rmtree(self.work / f"run-{case.kind}", ignore_errors=True)
        return self.row(case, result, time.perf_counter() - started)

    def row(self, case: Case, result: dict, wall_s: float) -> dict:
        base_trains = not case.kind.startswith("lora")
        flops = model_flops_per_image(self.path, self.resolution, base_trains=base_trains)
        reference = self.references.get(case.batch)
        row = {
            "bench": "train", "model": self.model, "tiny": self.tiny, "device": device_name(self.device),
            "case": case.kind, "batch": case.batch, "case_batch": case.nominal_batch or case.batch,
            "resolution": self.resolution,
            "images_per_s": result["images_per_s"],
            "x_ref": result["images_per_s"] / reference if reference else None,
            "mfu": flops * result["images_per_s"] / self.peak_flops, "peak_tflops": self.peak_flops / 1e12,
            "gflop_per_image": flops / 1e9, "wall_s": wall_s, "note": case.note, **result,
        }  # fmt: skip
        print(_line(row), flush=True)
        append_jsonl(self.jsonl, row)
        return row


def _line(row: dict) -> str:
    def num(value, fmt):
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)

    label = f"{'edlib ' if row['case'] not in REFERENCES else ''}{row['case']} (b{row['batch']})"
    return (f"{label:28} {num(row['images_per_s'], '10.2f')} {num(row['x_ref'], '7.2f')} {num(row['mfu'], '7.1%')} "
            f"{num(row['peak_gib'], '9.2f')} {num(row['first_step_s'], '9.1f')} {num(row.get('compile_s'), '9.1f')} "
            f"{num(row.get('host_syncs_per_step'), '6.1f')}")  # fmt: skip


HEADER = (f"{'':28} {'images/s':>10} {'x ref':>7} {'MFU':>7} {'peak GiB':>9} {'first s':>9} {'compile s':>9} "
          f"{'syncs':>6}")  # fmt: skip


def parse_cases(model: str, names: list[str] | None) -> list[Case]:
    """`--cases` as KIND or KIND:BATCH, in the order given (default: `CASES[model]`)."""
    known = {c.kind: c for c in CASES[model] + EXTRA_CASES.get(model, [])}
    if not names:
        return list(CASES[model])
    cases = []
    for name in names:
        kind, _, batch = name.partition(":")
        if kind not in known:
            raise SystemExit(f"--cases: unknown case {kind!r} for {model}; allowed: {', '.join(known)}")
        base = next((c for c in CASES[model] + EXTRA_CASES.get(model, []) if c.kind == kind and (not batch or c.batch == int(batch))), known[kind])
        cases.append(Case(kind, int(batch) if batch else base.batch, base.estimate_s, base.note))
    return cases


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=(*CASES, *FLOW_MODELS), default="sd15", help="architecture to benchmark")
    parser.add_argument("--tiny", action="store_true", help="tiny model at 64 px on the CPU: a smoke check")
    parser.add_argument("--cases", nargs="+", help="rows to measure, in order: KIND or KIND:BATCH (default: all of the model's)")
    parser.add_argument("--resolution", type=int)
    parser.add_argument("--steps", type=int, default=10, help="steps in each timed window")
    parser.add_argument("--warmup", type=int, default=2, help="steps before each window")
    parser.add_argument("--count-steps", type=int, default=3, help="engine steps whose host syncs are counted after the window")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the one peak MFU is over (default: H100 SXM dense bf16)")
    parser.add_argument("--budget", type=float, help="seconds: rows whose estimate does not fit in what is left are not started")
    parser.add_argument("--jsonl", type=Path, help="append each row to this file as a JSON line")
    parser.add_argument("--batch-size", type=int, help="FLUX/SD3.5 rows: their batch (default 1)")
    args = parser.parse_args(argv)
    if args.model in FLOW_MODELS:
        return run_flow(args.model, tiny=args.tiny, cases=args.cases, batch=args.batch_size or 1, resolution=args.resolution,
                        steps=args.steps, warmup=args.warmup, jsonl=args.jsonl)  # fmt: skip

    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    resolution = args.resolution or (64 if args.tiny else RESOLUTION[args.model])
    if args.tiny:
        args.steps, args.warmup, args.count_steps = min(args.steps, 3), 1, 3
        torch.set_num_threads(1)  # tiny models: one thread is fastest, and two thrash a busy 2-core machine
    cases = parse_cases(args.model, args.cases)
    if args.tiny:  # a quarter of the batch (at least 1), so the rows stay apart
        cases = [Case(c.kind, max(1, c.batch // 4), 5, c.note, c.batch) for c in cases]
    started = time.perf_counter()
    build_s = 2 if args.tiny else BUILD_ESTIMATE_S[args.model]
    if args.budget is not None and build_s + min(c.estimate_s for c in cases) > args.budget:
        for case in cases:
            print(f"skipped {case.kind} (b{case.batch}): building the model and one row need about "
                  f"{build_s + case.estimate_s} s, {args.budget:.0f} s left", flush=True)  # fmt: skip
        return
    work = Path(tempfile.mkdtemp(prefix="edlib-bench-"))
    try:
        path = build(args.model, work / "model", device, args.tiny)
        print(f"device: {device_name(device)}, resolution {resolution}, model "
              f"{'tiny ' + args.model if args.tiny else NAMES[args.model]} (built in {time.perf_counter() - started:.0f} s); "
              f"MFU over {args.peak_tflops:g} TFLOP/s", flush=True)  # fmt: skip
        print(HEADER, flush=True)
        bench = Bench(args.model, path, work, device, resolution, args, args.jsonl)
        for case in cases:
            left = None if args.budget is None else args.budget - (time.perf_counter() - started)
            if left is not None and case.estimate_s > left:
                print(f"skipped {case.kind} (b{case.batch}): needs about {case.estimate_s} s, {left:.0f} s left", flush=True)
                continue
            bench.measure(case)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
