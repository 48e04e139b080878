"""Balancing: turn a tree of folder weights into multiply.txt values.

Users think in shares ("the character sets should be 75% of what the model sees, half of
that Bob"); multiply.txt wants a per-image multiplier. The weight tree bridges the two:

- The folders of the data root form a tree. Among siblings, weights are normalised into
  shares of their parent's share; the root's share is 1.
- A folder that holds images *and* has subfolders competes with its children as one more
  sibling: its direct images form a pseudo-child written `FOLDER/.` (`.` for images
  directly in the data root). The folder's own weight is its whole subtree's weight among
  its siblings; `FOLDER/.` weighs its direct images against its subfolders.
- Folders (and `FOLDER/.` entries) without a weight get weight 1, except those excluded
  now (an `exclude.txt`): they stay excluded unless a key of the weights matches them.
- Keys of the weights file are folder paths relative to the data root, or fnmatch-style
  glob patterns (`*` also matches `/`). An exact path beats any pattern; among patterns,
  the last matching one in the file wins. A key that matches no folder is an error (it is
  almost always a typo): the message names the key and the folder names closest to it.
- A weight of 0 excludes a folder and its subtree explicitly: its siblings share the
  parent's share. multiply.txt cannot say "never" (0 there is an error, so a typo cannot
  drop a folder), so applying writes an `exclude.txt` into each excluded folder holding
  images (a note saying which balance wrote it), which the scan reads as multiplier 0
  whatever multiply.txt says, and leaves its multiply.txt as it is. A later balance that
  gives the folder a weight again removes that exclude.txt; undo puts it back.
- Each folder holding images gets m = share * N_epoch / n (N_epoch: the wanted epoch
  size, by default the current expected one). Shares and multipliers are exact fractions;
  the written value is the exact decimal when m has one of at most 15 significant digits
  (0.5, 2.25), else m to 6 decimals (6 significant digits below 1), so nothing is rounded
  to 0 and no folder is silently excluded.

`apply_balance` writes the multiply.txt and exclude.txt files (the only files balancing
writes in the data root, besides its history under DATA_ROOT/.edlib/balance_history/, which
the scanner ignores: `balance_history`); `undo_balance` puts back what was there before.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from pathlib import Path, PurePosixPath

import yaml

from edlib.data import safe_yaml
from edlib.data.balance_history import HISTORY_DIR, record_and_apply, undo_balance
from edlib.data.folder_files import EXCLUDE_FILE, format_multiplier
from edlib.data.numbers import format_count, format_share
from edlib.data.small_files import TEXT_FILE_LIMIT, quote, read_small
from edlib.data.types import DataRootError, ScanResult

__all__ = [
    "HISTORY_DIR", "BalanceEntry", "BalancePlan", "apply_balance", "format_plan", "load_weights",
    "multiplier_text", "plan_balance", "starting_weights", "undo_balance",
]

OWN_IMAGES = "."  # name of a folder's pseudo-child holding its direct images
# Significant digits up to which a multiplier with an exact decimal form is written exactly.
EXACT_DIGITS = 15


def load_weights(path) -> dict[str, float]:
    """Read a YAML mapping of folder path or glob pattern -> weight (a number >= 0)."""
    path = Path(path)
    try:
        data = safe_yaml.load(read_small(path, str(path), TEXT_FILE_LIMIT).decode("utf-8"))
    except FileNotFoundError:
        raise DataRootError(f"{path}: weights file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DataRootError(f"{path}: not a readable YAML file: {e}") from None
    if not isinstance(data, dict) or not data:
        raise DataRootError(f"{path}: expected a mapping of folder path or glob pattern to weight, found {quote(data)}")
    return _checked_weights(data, source=str(path))


def _checked_weights(weights: dict, *, source: str) -> dict[str, float]:
    """Keys normalised (`./a/b/` -> `a/b`), values checked: finite numbers >= 0."""
    out = {}
    for key, value in weights.items():
        if not isinstance(key, str):
            raise DataRootError(f"{source}: key {quote(key)} is not a folder path or pattern")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise DataRootError(f"{source}: weight of {quote(key)} must be a finite number >= 0, found {quote(value)}")
        out[_normalise_key(key)] = value
    return out


def _normalise_key(key: str) -> str:
    key = key.strip().replace("\\", "/")
    while key.startswith("./"):
        key = key[2:]
    key = key.rstrip("/") if key not in ("", "/") else ""
    return key


@dataclass
class BalanceEntry:
    """One folder holding images, with its current and planned multiplier."""

    path: str
    images: int
    current: Fraction
    share: Fraction  # of the whole epoch
    new: Fraction  # exact m = share * epoch_size / images (0 when excluded)
    text: str | None  # the value as written to multiply.txt; None when excluded
    was_excluded: bool = False  # excluded by an exclude.txt when planned

    @property
    def excluded(self) -> bool:
        return self.text is None

    @property
    def written(self) -> Fraction:
        """The multiplier the written text gives back (what training will use)."""
        return Fraction(self.text) if self.text is not None else Fraction(0)


@dataclass
class BalancePlan:
    root: Path
    epoch_size: Fraction
    entries: list[BalanceEntry]
    warnings: list[str] = field(default_factory=list)
    # "folder: file" where a local.yaml sets multiply: it wins over multiply.txt (EveryDream2's
    # order), so a multiply.txt written there would change nothing; apply refuses.
    overridden: list[str] = field(default_factory=list)

    @property
    def excluded(self) -> list[str]:
        return [e.path for e in self.entries if e.excluded]

    def to_json(self) -> dict:
        return {
            "root": str(self.root),
            "epoch_size": float(self.epoch_size),
            "folders": [
                {
                    "path": e.path,
                    "images": e.images,
                    "current_multiply": float(e.current),
                    "currently_excluded": e.was_excluded,
                    "new_multiply": None if e.excluded else float(e.written),
                    "written": e.text,  # the exact text of multiply.txt; None when excluded
                    "share": float(e.share),
                    "expected_per_epoch": float(e.written * e.images),
                    "excluded": e.excluded,
                }
                for e in self.entries
            ],
            "warnings": list(self.warnings),
        }


def plan_balance(
    scan: ScanResult, weights: dict[str, float], *, epoch_size: float | None = None, source: str = "weights"
) -> BalancePlan:
    """Multipliers that give each folder its share of the weight tree (module docstring).
    `source` names the weights in messages (the weights file)."""
    images = {f.path: 0 for f in scan.folders}
    for it in scan.items:
        images[it.folder] += 1
    current = {f.path: f.settings.multiply for f in scan.folders}
    image_folders = [p for p, n in images.items() if n]
    if not image_folders:
        raise DataRootError(f"{scan.root}: no folders with images to balance")
    excluded_now = {f.path for f in scan.folders if f.settings.exclude}  # a scan lists only folders with images

    children = _tree(image_folders)
    kept_out = {_own(p, children) for p in excluded_now}
    weight_of, still_out = _resolve_weights(_checked_weights(weights, source=source), children, scan.root, source, kept_out)

    if epoch_size is None:
        target = sum(scan.expected_samples().values(), Fraction(0))
    else:
        if not (math.isfinite(epoch_size) and epoch_size > 0):
            raise DataRootError(f"epoch size must be a number > 0, got {epoch_size!r}")
        target = Fraction(str(epoch_size))

    shares: dict[str, Fraction] = {}
    _split(children, "", Fraction(1), weight_of, shares, scan.root, still_out)

    entries = []
    for p in sorted(image_folders):
        share = shares[_own(p, children)]
        new = share * target / images[p]
        text = multiplier_text(new) if new else None
        entries.append(BalanceEntry(p, images[p], Fraction(current[p]), share, new, text, p in excluded_now))
    plan = BalancePlan(root=Path(scan.root), epoch_size=target, entries=entries)
    for e in entries:
        if not e.excluded and e.written * e.images < 1:
            plan.warnings.append(
                f"folder {e.path or '.'}: {float(e.written * e.images):.3g} expected samples per epoch (< 1)"
            )
    _note_other_multipliers(scan, plan)
    _note_exclusions(plan, still_out)
    return plan


def _note_exclusions(plan: BalancePlan, still_out: list[str]) -> None:
    """Say what applying does about exclusions: new ones, kept ones, ended ones."""
    new = [e.path or "." for e in plan.entries if e.excluded and not e.was_excluded]
    ended = [e.path or "." for e in plan.entries if e.was_excluded and not e.excluded]
    if new:
        plan.warnings.append(
            f"weight 0 excludes {', '.join(new)}: applying writes an {EXCLUDE_FILE} into each (their images get "
            f"0 samples per epoch; multiply.txt stays as it is; undo: edlib balance {plan.root} --undo)"
        )
    if still_out:
        plan.warnings.append(
            f"{', '.join(still_out)} stay(s) excluded by {EXCLUDE_FILE}: no key of the weights names it; give it a "
            "weight (the folder path, or FOLDER/. for a folder with subfolders) to train it again"
        )
    if ended:
        plan.warnings.append(
            f"{', '.join(ended)} is/are excluded by {EXCLUDE_FILE} now; applying this plan trains it again and "
            "removes that file (a copy is kept in the balance history; undo puts it back)"
        )


def _note_other_multipliers(scan: ScanResult, plan: BalancePlan) -> None:
    """Multipliers a written multiply.txt does not change: a local.yaml's (it wins over
    multiply.txt), and images' own (`multiply:` in their .yaml sidecar)."""
    own: dict[str, int] = {}
    for item in scan.items:
        if item.own is not None and any(k == "multiply" for k, _ in item.own.settings):
            own[item.folder] = own.get(item.folder, 0) + 1
    for e in plan.entries:
        source = scan.folder(e.path).sources.get("multiply", "")
        # A folder that stays excluded gets nothing written; one trained again loses its
        # exclude.txt, and then its local.yaml's multiply is the one training uses.
        if source.endswith(("local.yaml", "local.yml")) and not (e.excluded and e.was_excluded):
            plan.overridden.append(source)
        if own.get(e.path):
            plan.warnings.append(
                f"folder {e.path or '.'}: {own[e.path]} image(s) set their own multiply in .yaml sidecars; "
                "multiply.txt does not change them, so this folder's share will differ from the plan"
            )
    if plan.overridden:
        plan.warnings.append(
            f"multiply is set in {', '.join(plan.overridden)}, which wins over multiply.txt (EveryDream2's order): "
            "remove the multiply line there before applying this plan"
        )


def starting_weights(scan: ScanResult) -> dict[str, float]:
    """The weight of every node of the scan's weight tree (the root "" included, whose
    weight is never used) when the weights name none: 1, and 0 for the node of a folder
    excluded now (an exclude.txt), which so stays excluded (`plan_balance`)."""
    children = _tree([f.path for f in scan.folders])
    weights = dict.fromkeys(children, 1.0)
    for f in scan.folders:
        if f.settings.exclude:
            weights[_own(f.path, children)] = 0.0
    return weights


def _tree(image_folders: list[str]) -> dict[str, list[str]]:
    """Children of every node: folder paths, plus `FOLDER/.` for a folder's direct images
    when it also has subfolders. Leaves are image folders without subfolders."""
    nodes = {""}
    for p in image_folders:
        parts = PurePosixPath(p).parts
        nodes.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    children: dict[str, list[str]] = {n: [] for n in nodes}
    for n in sorted(nodes - {""}):
        children[n.rsplit("/", 1)[0] if "/" in n else ""].append(n)
    for p in image_folders:
        if children[p]:
            children[p].insert(0, _pseudo(p))
            children[_pseudo(p)] = []
    return children


def _pseudo(folder: str) -> str:
    return f"{folder}/{OWN_IMAGES}" if folder else OWN_IMAGES


def _own(folder: str, children: dict[str, list[str]]) -> str:
    """The node whose share is the share of `folder`'s direct images."""
    return _pseudo(folder) if children[folder] else folder


def _resolve_weights(
    weights: dict[str, float], children: dict[str, list[str]], root, source: str, kept_out: set[str]
) -> tuple[dict[str, Fraction], list[str]]:
    """Weight of every node but the root: exact key, else the last matching pattern, else 1
    (0 for a node in `kept_out`, excluded now). Also returns the `kept_out` nodes no key
    matched, which stay excluded."""
    nodes = [n for n in children if n != ""]
    exact = {k: v for k, v in weights.items() if k in children}
    patterns = [(k, v) for k, v in weights.items() if k not in children]
    unmatched = [k for k, _ in patterns if not any(fnmatch.fnmatchcase(n, k) for n in nodes)]
    if unmatched:
        raise DataRootError(_unmatched_message(unmatched, nodes, root, source))
    resolved, still_out = {}, []
    for n in nodes:
        value = exact.get(n)
        if value is None:
            value = next((v for k, v in reversed(patterns) if fnmatch.fnmatchcase(n, k)), None)
        if value is None and n in kept_out:
            value = 0
            still_out.append(n)
        resolved[n] = Fraction(str(1 if value is None else value))  # decimal text -> exact: 0.3 stays 3/10
    return resolved, still_out


def _unmatched_message(keys: list[str], nodes: list[str], root, source: str) -> str:
    """Which keys match nothing, the folder names closest to each, and what a key may be."""
    parts = []
    for key in keys:
        # The key's last part against its siblings' names first (a typo is rarely in two
        # places, and "a/bbo" is as close to "a/amy" as to "a/bob" as a whole path).
        parent, _, last = key.rpartition("/")
        siblings = {n.rpartition("/")[2]: n for n in nodes if n.rpartition("/")[0] == parent}
        close = [siblings[m] for m in difflib.get_close_matches(last, list(siblings), n=3, cutoff=0.6)]
        close = close or difflib.get_close_matches(key, nodes, n=3, cutoff=0.75)
        hint = f"did you mean {' or '.join(map(repr, close))}?" if close else "no folder name is close to it"
        if key and not any(ch in key for ch in "*?[") and (Path(root) / key).is_dir():
            hint = "that folder holds no images, in it or below it"
        parts.append(f"{key!r} ({hint})")
    shown = sorted(nodes)
    listed = ", ".join(shown[:12]) + (f" and {len(shown) - 12} more" if len(shown) > 12 else "")
    return (
        f"{source}: {'key' if len(keys) == 1 else 'keys'} matching no folder with images (or above some) under "
        f"{root}: {'; '.join(parts)}. A key is a folder path relative to the data root ('a/b'; 'a/.' for the "
        f"images directly in a folder that has subfolders) or a glob pattern ('*/ground_truth'; * also matches /). "
        f"Folders: {listed}"
    )


def _split(children, node: str, share: Fraction, weight_of, shares: dict[str, Fraction], root, still_out) -> None:
    shares[node] = share
    kids = children[node]
    if not kids:
        return
    total = sum((weight_of[k] for k in kids), Fraction(0))
    if total == 0 and share > 0:
        excluded = [k for k in kids if k in still_out]
        why = f" ({', '.join(excluded)}: excluded by {EXCLUDE_FILE}, named by no key)" if excluded else ""
        raise DataRootError(
            f"{root}: every subfolder of {node or 'the data root'} has weight 0{why}; "
            f"give one a weight > 0, or give {node or 'the data root'} itself weight 0"
        )
    for k in kids:
        _split(children, k, share * weight_of[k] / total if total else Fraction(0), weight_of, shares, root, still_out)


def multiplier_text(m: Fraction) -> str:
    """The text written for multiplier m > 0: its exact decimal when it has one of at most
    `EXACT_DIGITS` significant digits (1/2 -> 0.5, 9/4 -> 2.25, 1/1024 -> 0.0009765625), else
    m rounded to 6 decimals, or to 6 significant digits below 1 (so a tiny value never
    becomes 0); trailing zeros stripped."""
    exact = _exact_decimal(m)
    if exact is not None:
        return exact
    exponent = math.floor(math.log10(m)) if m < 1 else 0
    places = max(6, 5 - exponent)
    d = (Decimal(m.numerator) / Decimal(m.denominator)).quantize(Decimal(1).scaleb(-places), ROUND_HALF_EVEN)
    return _plain(d)


def _exact_decimal(m: Fraction) -> str | None:
    """m's finite decimal expansion, or None when it has none (a denominator with a prime
    factor other than 2 and 5) or needs more than `EXACT_DIGITS` significant digits."""
    m = Fraction(m)
    rest, twos, fives = m.denominator, 0, 0
    while rest % 2 == 0:
        rest, twos = rest // 2, twos + 1
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    if rest != 1:
        return None
    places = max(twos, fives)
    digits = m.numerator * 10**places // m.denominator  # exact: 10**places is a multiple of the denominator
    if len(str(digits).rstrip("0")) > EXACT_DIGITS:
        return None
    return _plain(Decimal(digits).scaleb(-places))


def _plain(d: Decimal) -> str:
    text = format(d, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_plan(plan: BalancePlan) -> str:
    """The plan as a table; multipliers as multiply.txt holds them (current and new alike),
    counts and shares rounded as every panel rounds them (`edlib.data.numbers`)."""
    rows = [("folder", "images", "current", "new", "share", "per epoch")]
    for e in plan.entries:
        rows.append(
            (
                e.path or ".",
                str(e.images),
                format_multiplier(e.current, e.was_excluded),
                e.text if e.text is not None else "excluded",
                format_share(e.share),
                format_count(e.written * e.images),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows
    ]
    realised = sum((e.written * e.images for e in plan.entries), Fraction(0))
    lines += ["", f"epoch size: target {format_count(plan.epoch_size)}, with the written values {format_count(realised)}"]
    if plan.warnings:
        lines += ["", "warnings:"] + [f"  - {w}" for w in plan.warnings]
    return "\n".join(lines)


def apply_balance(plan: BalancePlan) -> Path:
    """Write the plan's multiply.txt files, and an exclude.txt into each folder it excludes;
    returns the history entry that undoes it (`balance_history`).

    An included folder that holds an exclude.txt (excluded before) loses it: the history
    keeps a copy. An excluded folder keeps its multiply.txt, and an exclude.txt it already
    has. The previous files are copied into the history before anything is written, so an
    interrupted apply can still be undone; if that copy fails (a full disk), nothing is
    written. A multiply.txt that is a symlink is written through (the link stays a link).
    """
    if plan.overridden:
        raise DataRootError(
            f"{plan.root}: cannot apply: {', '.join(plan.overridden)} set(s) multiply, which wins over the "
            "multiply.txt balancing writes (EveryDream2's order); remove the multiply line there first"
        )
    root = Path(plan.root)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    written: dict[str, str] = {}
    removed: list[str] = []
    for e in plan.entries:
        exclude = str(PurePosixPath(e.path, EXCLUDE_FILE))
        if e.excluded:
            if not (root / exclude).exists():
                written[exclude] = (
                    f"written by edlib balance --apply on {when}: weight 0 excludes this folder from training\n"
                    f"To train it again: edlib balance {root} --undo (undoes that whole balance), or delete this file.\n"
                )
        else:
            written[str(PurePosixPath(e.path, "multiply.txt"))] = e.text + "\n"
            removed.append(exclude)  # record_and_apply removes it where there is one (a link too)
    return record_and_apply(root, written, removed)
