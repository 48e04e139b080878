"""Numbers as the panels and reports show them, one rule everywhere: expected sample counts
(per folder per epoch, epoch sizes) and shares. The exact values stay exact Fractions in the
library; only their display is rounded, the same way in every table, so two folders with the
same share never show 57.1429 beside 57.1428. Multipliers are shown as written in their
multiply.txt (`edlib.data.folder_files.format_value`), never re-rounded."""

from __future__ import annotations

from fractions import Fraction


def format_count(value: float | Fraction) -> str:
    """An expected number of samples: whole numbers as they are, one decimal from 10 on
    (57.1), two below 10 (1.5, 2.33), two significant digits below 1 (0.42, 0.0042)."""
    x = float(value)
    if x == round(x):
        return str(int(round(x)))
    if abs(x) >= 10:
        text = f"{x:.1f}"
    elif abs(x) >= 1:
        text = f"{x:.2f}"
    else:
        return f"{x:.2g}"
    return text.rstrip("0").rstrip(".")


def format_share(share: float | Fraction) -> str:
    """A share of the epoch (0..1) as a percentage with one decimal: 85.7%."""
    return f"{100 * float(share):.1f}%"

