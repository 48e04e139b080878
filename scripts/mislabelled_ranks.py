"""Where do mislabelled images land in the hardest-images list? Measured over seeds.

    PYTHONPATH=$PWD python scripts/mislabelled_ranks.py --seeds 1 2 3 4 5        # ~40 s a run on a CPU core
    PYTHONPATH=$PWD python scripts/mislabelled_ranks.py --seeds 1 2 3 --sizes small medium large --epochs 10 20

Each run is tests/train/test_mislabelled.py's setting (`rank_mislabelled`): a toy-world data
root of --images images (seed s), --mislabelled of them given another shape's and colour's
caption, the bundled world model trained --epochs epochs with loss tracking on one CPU thread,
then the run's image_loss.csv ranked as `edlib review` ranks it. Prints a markdown table, one
row per (sizes, epochs, seed) with the mislabelled images' ranks ("-": not listed, i.e. not
above expectation) and drawn sizes (S/M/L), and a summary per setting
with the chance baseline (a uniformly random order of all images); docs/loss_tracking.md
quotes it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.*

from tests.train.test_mislabelled import IMAGES, MISLABELLED, VISIBLE, rank_mislabelled  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--epochs", type=int, nargs="+", default=[10])
    parser.add_argument("--images", type=int, default=IMAGES)
    parser.add_argument("--mislabelled", type=int, default=MISLABELLED)
    parser.add_argument("--sizes", nargs="+", default=list(VISIBLE), help="sizes the mislabelled shapes are drawn at")
    parser.add_argument("--all-sizes-too", action="store_true", help="also run with mislabelled shapes of any size")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the test and CI: comparable times

    n, k = args.images, args.mislabelled
    settings = [tuple(args.sizes)] + ([("small", "medium", "large")] if args.all_sizes_too else [])
    print(f"{n} images, {k} mislabelled; chance: mean rank {(n + 1) / 2:.1f}, {k * k / n:.2f} of {k} in the top {k}\n")
    print("| sizes | epochs | seed | ranks | listed | flagged | in top k | mean rank | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    summary = []
    for sizes in settings:
        for epochs in args.epochs:
            results = []
            for seed in args.seeds:
                start = time.perf_counter()
                with tempfile.TemporaryDirectory() as tmp:
                    r = rank_mislabelled(Path(tmp), seed, images=n, mislabelled=k, epochs=epochs, sizes=sizes)
                seconds = time.perf_counter() - start
                results.append(r)
                ranks = ", ".join(f"{'-' if x is None else x} ({size[0].upper()})" for x, size in zip(r.ranks, r.sizes))
                print(f"| {'/'.join(sizes)} | {epochs} | {seed} | {ranks} | {r.listed} | {r.flagged} | {r.in_top}/{k} | {r.mean_rank:.1f} | {seconds:.0f} |", flush=True)
            summary.append((sizes, epochs, results))
    print()
    for sizes, epochs, results in summary:
        top = sum(r.in_top for r in results)
        worst = max(n if x is None else x for r in results for x in r.ranks)
        mean = np.mean([r.mean_rank for r in results])
        print(
            f"sizes {'/'.join(sizes)}, {epochs} epochs, {len(results)} seeds: {top}/{k * len(results)} in the top {k} "
            f"(chance {k * k / n * len(results):.1f}), mean rank {mean:.1f} (chance {(n + 1) / 2:.1f}), worst rank {worst}"
        )


if __name__ == "__main__":
    main()
