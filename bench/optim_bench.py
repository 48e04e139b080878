"""How long a full_bf16 + stochastic-rounding optimizer step takes at SDXL's parameter shapes.

    python bench/optim_bench.py                 # CPU: SDXL's 1,680 tensors in 44 shapes, scaled down (below)
    python bench/optim_bench.py --torchao       # also torchao's AdamW (compiles once per shape: minutes)
    python bench/optim_bench.py --scale 1       # on a GPU: SDXL's real shapes (2.57B bf16 weights)

The cost that matters here is the host's: how many operations a step launches and what runs
before the first one (torchao compiled one kernel per parameter shape: 236-256 s on a CPU for
SDXL's shapes, then 0.75-0.87 s of host time per step). Both depend on how many tensors and
shapes there are, not on their size. So on the CPU the bench takes the real shapes of SDXL's
UNet (read on the meta device) and divides every dimension of at least `--scale` by it
(default 64): the same 1,680 tensors, the same 44 distinct shapes, 0.65M elements instead of
2.57B, small enough that the arithmetic is a few milliseconds. One torch thread (`--threads`):
the 2-core development machine is shared, and OpenMP across both cores of a busy machine made
elementwise operations ten times slower, not faster. edlib's chunk size is scaled by the same
factor in elements, so the stand-in has as many chunks as the real model (about 80) and
launches as many operations. On a GPU, `--scale 1` times the real thing (about 21 GB).

Rows: first step (state allocation, layout and any compilation), then the median of the later
steps: host time (wall clock until `step()` returns; and the CPU time this process spent, which
a busy shared machine inflates less) and, on a GPU, the time until the GPU is done; and x torch,
the ratio of that host CPU time to torch AdamW's, measured in the same run (below 1: the step
costs the host less than torch's own AdamW; JSONL rows: `x_ref`).
The update itself is checked against exact fp32 AdamW in tests/model/test_sr_optim.py and
tests/model/test_optim.py (mean move within 5%).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_models import append_jsonl  # noqa: E402

from edlib.model import architectures as arch  # noqa: E402
from edlib.model.sr_optim import CHUNK_ELEMENTS, AdamW8bitStochasticRounding, AdamWStochasticRounding  # noqa: E402


def sdxl_shapes() -> list[tuple[int, ...]]:
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**arch.SDXL_UNET)
    return [tuple(p.shape) for p in unet.parameters()]


def scaled(shapes: list[tuple[int, ...]], scale: int) -> list[tuple[int, ...]]:
    """Each dimension of at least `scale` divided by it; smaller ones (3x3 kernels) kept, so
    the 44 distinct shapes stay distinct."""
    return [tuple(d // scale if d >= scale else d for d in shape) for shape in shapes]


REFERENCE = "torch AdamW foreach (round to nearest; for scale)"  # the x torch column's denominator


def optimizers(chunk: int, with_torchao: bool) -> dict:
    cases = {
        "edlib AdamW, bf16 moments (stochastic rounding)": lambda p: AdamWStochasticRounding(p, lr=1e-5, chunk_elements=chunk),
        "edlib AdamW8bit (stochastic rounding)": lambda p: AdamW8bitStochasticRounding(p, lr=1e-5, chunk_elements=chunk),
        REFERENCE: lambda p: torch.optim.AdamW(p, lr=1e-5, foreach=True),
    }
    if with_torchao:
        from torchao.optim import _AdamW

        cases["torchao AdamW (bf16_stochastic_round)"] = lambda p: _AdamW(p, lr=1e-5, bf16_stochastic_round=True)
    return cases


def time_optimizer(make, shapes, device: str, steps: int) -> dict:
    params = [torch.nn.Parameter(torch.randn(shape, device=device, dtype=torch.bfloat16) * 0.05) for shape in shapes]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    optimizer = make(params)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    optimizer.step()
    sync()
    first = time.perf_counter() - start
    host, cpu, done = [], [], []
    for _ in range(steps):
        sync()
        start, start_cpu = time.perf_counter(), time.process_time()
        optimizer.step()
        host.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        sync()
        done.append(time.perf_counter() - start)
    ms = lambda values: 1000 * statistics.median(values)  # noqa: E731
    return {"first_step_s": first, "host_ms": ms(host), "host_cpu_ms": ms(cpu), "done_ms": ms(done)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=int, help="divide every dimension by this (default: 64 on a CPU, 1 on a GPU)")
    parser.add_argument("--steps", type=int, default=5, help="later steps timed")
    parser.add_argument("--torchao", action="store_true", help="also time torchao's AdamW (minutes of compilation on a CPU)")
    parser.add_argument("--jsonl", help="append each row as a JSON line to this file")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; see above)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    scale = args.scale or (1 if device == "cuda" else 64)
    real = sdxl_shapes()
    shapes = scaled(real, scale)
    elements, real_elements = sum(math.prod(s) for s in shapes), sum(math.prod(s) for s in real)
    chunk = max(1024, CHUNK_ELEMENTS * elements // real_elements)
    print(f"device {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'} ({os.cpu_count()} cores); "
          f"SDXL UNet shapes / {scale}: {len(shapes)} tensors, {len(set(shapes))} distinct shapes, "
          f"{elements / 1e6:.1f}M elements (real: {real_elements / 1e9:.2f}B); edlib chunks of {chunk} elements, "
          f"{math.ceil(elements / chunk)}+ chunks (real model: {math.ceil(real_elements / CHUNK_ELEMENTS)}+)", flush=True)
    print(f"{'optimizer':52} {'first step s':>12} {'later: host ms':>15} {'host CPU ms':>12} {'done ms':>9} {'x torch':>8}",
          flush=True)  # fmt: skip
    cases = optimizers(chunk, args.torchao)
    # torch's AdamW first: the reference every row's ratio is over, measured in this run.
    results = {name: time_optimizer(cases[name], shapes, device, args.steps) for name in (REFERENCE,)}
    for name, make in cases.items():
        result = results.get(name) or time_optimizer(make, shapes, device, args.steps)
        reference_ms = results[REFERENCE]["host_cpu_ms"]
        x_ref = result["host_cpu_ms"] / reference_ms if reference_ms > 0 else float("nan")
        print(f"{name:52} {result['first_step_s']:12.2f} {result['host_ms']:15.1f} {result['host_cpu_ms']:12.1f} "
              f"{result['done_ms']:9.1f} {x_ref:8.2f}", flush=True)  # fmt: skip
        if args.jsonl:
            append_jsonl(args.jsonl, {"bench": "optim", "case": name, "device": device, "scale": scale, "tensors": len(shapes),
                                      **result, "x_ref": x_ref, "ref": REFERENCE})  # fmt: skip

if __name__ == "__main__":
    main()
