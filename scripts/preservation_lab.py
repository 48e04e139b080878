"""The preservation lab: does mixing real world images into a fine-tune stop forgetting?

    python scripts/preservation_lab.py --out /tmp/lab            # about 9 minutes on a 2-core CPU
    python scripts/preservation_lab.py --out /tmp/lab --quick    # a minute: the flow, not the numbers

Runs `edlib demo`'s fine-tune of the bundled world model (new shape "zorblat", 40 images;
stars, 10 images) once with no preservation folder and once per --fractions value (the
multiplier on 200 ordinary world images), scores each with the automatic check on the same
prompts and seeds, and writes lab.md (the table), lab.json and lab.html (a plotly chart)
into --out. The logic lives in edlib.demo.lab.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from edlib.demo.lab import DEFAULT_FRACTIONS, format_table, run_lab, write_chart


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for data roots, runs, samples and results")
    parser.add_argument("--fractions", type=float, nargs="+", default=list(DEFAULT_FRACTIONS))
    parser.add_argument("--epochs", type=int, default=40, help="fine-tune epochs (the demo's 40)")
    parser.add_argument("--prompts", type=int, default=32, help="prompts per measurement")
    parser.add_argument("--quick", action="store_true", help="2 epochs, 4 prompts, one fraction (for tests)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a shared machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.epochs, args.prompts, args.fractions = 2, 4, args.fractions[:1]
    result = run_lab(args.out, fractions=args.fractions, epochs=args.epochs, prompts=args.prompts)
    table = format_table(result)
    (args.out / "lab.md").write_text(table + "\n", encoding="utf-8")
    chart = write_chart(result, args.out / "lab.html")
    print(f"\n{table}\n\ntable: {args.out / 'lab.md'}\nchart: {chart}\nnumbers: {args.out / 'lab.json'}")


if __name__ == "__main__":
    main()
