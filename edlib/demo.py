"""`edlib demo`: the edlib flow on a generated toy-world data root.

It writes a small, deliberately unbalanced data root (a new concept with 40 images, a
second one with 10, and 200 preservation images at a fractional multiplier), then does
what a user does before paying for a GPU: scan it, plan a balance, and preview the epochs.
Everything it prints comes from the same library calls the CLI and notebooks use.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edlib.data.balance import format_plan, plan_balance
from edlib.data.preview import format_preview, preview
from edlib.data.scan import format_report, scan
from edlib.data.schedule import write_schedule
from edlib.world import write_data_root

log = logging.getLogger("edlib.demo")

# The new concept is a shape the base world never had ("zorblat", a crescent); "stars" is
# a concept with few images; "preservation" is ordinary world images, mixed in at 0.1 per
# epoch (20 of 200) so the model keeps what it knew.
DEMO_SPEC = {
    "zorblat": {"count": 40, "shapes": ["zorblat"]},
    "stars": {"count": 10, "shapes": ["star"]},
    "preservation": {"count": 200, "multiply": "0.1"},
}
# Target shares for balancing: the two concepts equally, preservation a fifth of the epoch.
DEMO_WEIGHTS = {"zorblat": 2, "stars": 2, "preservation": 1}


def _heading(text: str) -> None:
    print(f"\n== {text} ==")


def run_demo(out: Path, *, quick: bool = False, seed: int = 0) -> dict:
    """Run the demo into `out` (created if needed); returns where things are."""
    out = Path(out)
    data_root = out / "data"
    if not (data_root.exists() and any(data_root.iterdir())):
        _heading(f"Writing a toy-world data root to {data_root}")
        written = write_data_root(data_root, DEMO_SPEC, seed=seed, size=64)
        for folder, count in written.items():
            print(f"  {folder}: {count} images")
    else:
        print(f"Using the existing demo data root {data_root}")

    _heading("Scan")
    result = scan(data_root)
    print(format_report(result))

    _heading("Balance plan (not applied): equal shares for the two concepts")
    plan = plan_balance(result, DEMO_WEIGHTS)
    print(format_plan(plan))

    epochs = 2 if quick else 10
    _heading(f"Preview of {epochs} epochs, batch size 4, 64 px")
    p = preview(result, epochs=epochs, batch_size=4, resolution=64, seed=seed, lr=1e-4, lr_scheduler="cosine")
    print(format_preview(p))

    schedules = out / "schedules"
    for epoch in range(epochs):
        write_schedule(p.realise(epoch), result, schedules)
    _heading("Where things are")
    print(f"  data root:  {data_root}")
    print(f"  schedules:  {schedules} (ep0_batch_schedule.txt ... ep{epochs - 1}_batch_schedule.txt)")
    return {"data_root": data_root, "schedules": schedules, "preview": p}
