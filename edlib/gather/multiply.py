"""The gathered folder's multiply.txt, from the amount per epoch the user asks for.

The value comes from `edlib.data.preservation.preservation_multiplier`, the function notebook
02's panel uses, so "50 images per epoch" means the same everywhere. The request is
remembered: when a later run adds images, an images-per-epoch or share-of-the-epoch
request is recomputed for the new image count, unless the file was changed by hand since
edlib wrote it (then it is left alone, and the report says so).
"""

from __future__ import annotations

from pathlib import Path

from edlib.data.preservation import expected_mix, preservation_multiplier
from edlib.data.types import ScanResult
from edlib.files import write_text_atomic
from edlib.gather.journal import Journal

KINDS = ("per_epoch", "fraction", "share")


def requested_amount(per_epoch: float | None, fraction: float | None, share: float | None) -> tuple[str, float] | None:
    """The one amount given, checked, as (kind, value); None when none is given."""
    given = [(k, v) for k, v in zip(KINDS, (per_epoch, fraction, share)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"give one of per_epoch, fraction or share, not {' and '.join(k for k, _ in given)}")
    if not given:
        return None
    kind, value = given[0]
    value = float(value)
    if not value > 0:
        raise ValueError(f"{kind} must be > 0, got {value}")
    if kind == "share" and not value < 1:
        raise ValueError(f"share of the epoch must be below 1 (e.g. 0.1 for 10%), got {value}")
    return kind, value


def update_multiply(
    scan: ScanResult, folder: str, path: Path, journal: Journal, request: tuple[str, float] | None
) -> tuple[str | None, float | None, str | None]:
    """Write `path/multiply.txt` for `request` (or the remembered one); returns the file's
    value, the expected images per epoch and a note for the report."""
    file = path / "multiply.txt"
    current = file.read_text(encoding="utf-8").strip() if file.is_file() else None
    remembered = journal.state.multiply
    note = None
    if request is None and remembered is not None:
        if current == remembered["written"]:
            request = (remembered["kind"], remembered["value"])
        else:
            note = f"multiply.txt was changed by hand ({remembered['written']} -> {current}); left as it is"
    if not any(f.path == folder for f in scan.folders):
        return current, None, note
    if request is None:
        if current is None:
            note = (
                "no multiply.txt: every image of the folder is used once per epoch. "
                "Give an amount per epoch (e.g. --per-epoch 50) to mix in a part of it"
            )
            return None, None, note
        return current, _per_epoch(scan, folder, current), note
    kind, value = request
    text = preservation_multiplier(scan, folder, **{kind: value})
    if text != current:
        write_text_atomic(file, text + "\n")
    journal.append({"t": "multiply", "multiply": {"kind": kind, "value": value, "written": text}})
    return text, _per_epoch(scan, folder, text), note


def _per_epoch(scan: ScanResult, folder: str, text: str) -> float | None:
    try:
        return float(expected_mix(scan, folder, text).per_epoch)
    except (ValueError, ZeroDivisionError):
        return None  # a hand-written value the scan reports as an error
