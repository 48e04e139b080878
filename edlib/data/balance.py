"""Balancing: turn a tree of folder weights into multiply.txt values.

Users think in shares ("the character sets should be 75% of what the model sees, half of
that Bob"); multiply.txt wants a per-image multiplier. The weight tree bridges the two:

- The folders of the data root form a tree. Among siblings, weights are normalised into
  shares of their parent's share; the root's share is 1.
- A folder that holds images *and* has subfolders competes with its children as one more
  sibling: its direct images form a pseudo-child written `FOLDER/.` (`.` for images
  directly in the data root). The folder's own weight is its whole subtree's weight among
  its siblings; `FOLDER/.` weighs its direct images against its subfolders.
- Folders (and `FOLDER/.` entries) without a weight get weight 1.
- Keys of the weights file are folder paths relative to the data root, or fnmatch-style
  glob patterns (`*` also matches `/`). An exact path beats any pattern; among patterns,
  the last matching one in the file wins. A key that matches no folder is an error (it is
  almost always a typo).
- A weight of 0 excludes a folder and its subtree explicitly: its siblings share the
  parent's share. multiply.txt cannot say "never" (its value must be > 0), so a plan
  that excludes a folder holding images can be shown but `apply_balance` refuses it and
  says which folders to move out of the data root (or give a small weight) instead.
- Each folder holding images gets m = share * N_epoch / n (N_epoch: the wanted epoch
  size, by default the current expected one). Shares and multipliers are exact fractions;
  the written value keeps 6 decimals (6 significant digits below 1), so nothing is
  rounded to 0 and no folder is silently excluded.

`apply_balance` writes the multiply.txt files (the only files balancing writes in the
data root, besides its history under DATA_ROOT/.edlib/balance_history/, which the scanner
ignores); `undo_balance` puts back what was there before.
"""

from __future__ import annotations

import fnmatch
import json
import math
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from pathlib import Path, PurePosixPath

import yaml

from edlib.data import safe_yaml
from edlib.data.folder_files import format_value
from edlib.data.numbers import format_count, format_share
from edlib.data.small_files import TEXT_FILE_LIMIT, quote, read_small
from edlib.data.types import DataRootError, ScanResult
from edlib.files import copy_atomic, describe_write_error, write_text_atomic

HISTORY_DIR = PurePosixPath(".edlib", "balance_history")
MANIFEST = "manifest.json"
OWN_IMAGES = "."  # name of a folder's pseudo-child holding its direct images


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


def plan_balance(scan: ScanResult, weights: dict[str, float], *, epoch_size: float | None = None) -> BalancePlan:
    """Multipliers that give each folder its share of the weight tree (module docstring)."""
    images = {f.path: 0 for f in scan.folders}
    for it in scan.items:
        images[it.folder] += 1
    current = {f.path: f.settings.multiply for f in scan.folders}
    image_folders = [p for p, n in images.items() if n]
    if not image_folders:
        raise DataRootError(f"{scan.root}: no folders with images to balance")

    children = _tree(image_folders)
    weight_of = _resolve_weights(_checked_weights(weights, source="weights"), children, scan.root)

    if epoch_size is None:
        target = sum(scan.expected_samples().values(), Fraction(0))
    else:
        if not (math.isfinite(epoch_size) and epoch_size > 0):
            raise DataRootError(f"epoch size must be a number > 0, got {epoch_size!r}")
        target = Fraction(str(epoch_size))

    shares: dict[str, Fraction] = {}
    _split(children, "", Fraction(1), weight_of, shares, scan.root)

    entries = []
    for p in sorted(image_folders):
        share = shares[_own(p, children)]
        new = share * target / images[p]
        entries.append(BalanceEntry(p, images[p], Fraction(current[p]), share, new, multiplier_text(new) if new else None))
    plan = BalancePlan(root=Path(scan.root), epoch_size=target, entries=entries)
    for e in entries:
        if not e.excluded and e.written * e.images < 1:
            plan.warnings.append(
                f"folder {e.path or '.'}: {float(e.written * e.images):.3g} expected samples per epoch (< 1)"
            )
    _note_other_multipliers(scan, plan)
    if plan.excluded:
        plan.warnings.append(
            "weight 0 excludes " + ", ".join(p or "." for p in plan.excluded) + "; multiply.txt cannot hold 0, "
            "so this plan cannot be applied: move those folders out of the data root or give them a small weight"
        )
    return plan


def _note_other_multipliers(scan: ScanResult, plan: BalancePlan) -> None:
    """Multipliers a written multiply.txt does not change: a local.yaml's (it wins over
    multiply.txt), and images' own (`multiply:` in their .yaml sidecar)."""
    own: dict[str, int] = {}
    for item in scan.items:
        if item.own is not None and any(k == "multiply" for k, _ in item.own.settings):
            own[item.folder] = own.get(item.folder, 0) + 1
    for e in plan.entries:
        source = scan.folder(e.path).sources.get("multiply", "")
        if source.endswith(("local.yaml", "local.yml")):
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


def _resolve_weights(weights: dict[str, float], children: dict[str, list[str]], root) -> dict[str, Fraction]:
    """Weight of every node but the root: exact key, else the last matching pattern, else 1."""
    nodes = [n for n in children if n != ""]
    exact = {k: v for k, v in weights.items() if k in children}
    patterns = [(k, v) for k, v in weights.items() if k not in children]
    unmatched = [k for k, _ in patterns if not any(fnmatch.fnmatchcase(n, k) for n in nodes)]
    if unmatched:
        raise DataRootError(
            f"{root}: weights name no folder with images (or above some): {', '.join(map(repr, unmatched))}"
        )
    resolved = {}
    for n in nodes:
        value = exact.get(n)
        if value is None:
            value = next((v for k, v in reversed(patterns) if fnmatch.fnmatchcase(n, k)), 1)
        resolved[n] = Fraction(str(value))  # decimal text -> exact: 0.3 stays 3/10
    return resolved


def _split(children, node: str, share: Fraction, weight_of, shares: dict[str, Fraction], root) -> None:
    shares[node] = share
    kids = children[node]
    if not kids:
        return
    total = sum((weight_of[k] for k in kids), Fraction(0))
    if total == 0 and share > 0:
        raise DataRootError(
            f"{root}: every subfolder of {node or 'the data root'} has weight 0; "
            f"give one a weight > 0, or give {node or 'the data root'} itself weight 0"
        )
    for k in kids:
        _split(children, k, share * weight_of[k] / total if total else Fraction(0), weight_of, shares, root)


def multiplier_text(m: Fraction) -> str:
    """6 decimals, or 6 significant digits below 1 (so a tiny value never becomes 0),
    trailing zeros stripped."""
    exponent = math.floor(math.log10(m)) if m < 1 else 0
    places = max(6, 5 - exponent)
    d = (Decimal(m.numerator) / Decimal(m.denominator)).quantize(Decimal(1).scaleb(-places), ROUND_HALF_EVEN)
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
                format_value(e.current),
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
    """Write the plan's multiply.txt files; returns the history entry that undoes it.

    The previous files are copied into DATA_ROOT/.edlib/balance_history/<time>/ with a
    manifest before anything is written, so an interrupted apply can still be undone. If
    that copy fails (a full disk), the history entry is removed and nothing is written. A
    multiply.txt that is a symlink is written through (the link stays a link).
    """
    if plan.excluded:
        raise DataRootError(
            f"{plan.root}: cannot apply: weight 0 excludes {', '.join(p or '.' for p in plan.excluded)}, and "
            "multiply.txt must be > 0; move those folders out of the data root or give them a small weight"
        )
    if plan.overridden:
        raise DataRootError(
            f"{plan.root}: cannot apply: {', '.join(plan.overridden)} set(s) multiply, which wins over the "
            "multiply.txt balancing writes (EveryDream2's order); remove the multiply line there first"
        )
    root = Path(plan.root)
    entry = _new_history_entry(root)
    try:
        manifest = _keep_previous(root, entry, plan)
    except OSError as error:
        shutil.rmtree(entry, ignore_errors=True)
        raise DataRootError(
            f"{root}: could not keep the previous multiply.txt files ({describe_write_error(error, entry)}); "
            "nothing was written, free some space and apply again"
        ) from None
    written = 0
    for rel, text in manifest["written"].items():
        try:
            write_text_atomic(root / rel, text)
        except OSError as error:
            raise DataRootError(
                f"{root / rel}: could not write ({describe_write_error(error, root / rel)}); {written} of "
                f"{len(manifest['written'])} multiply.txt files were written. Undo them with: "
                f"edlib balance {root} --undo"
            ) from None
        written += 1
    return entry


def _keep_previous(root: Path, entry: Path, plan: BalancePlan) -> dict:
    """Copy the multiply.txt files the plan replaces into the history `entry` and write its
    manifest; returns the manifest."""
    manifest = {"created": [], "replaced": [], "written": {}}
    for e in plan.entries:
        rel = str(PurePosixPath(e.path, "multiply.txt"))
        target = root / rel
        if target.exists():
            backup = entry / "files" / rel
            backup.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(target, backup)
            manifest["replaced"].append(rel)
        else:
            manifest["created"].append(rel)
        manifest["written"][rel] = e.text + "\n"
    write_text_atomic(entry / MANIFEST, json.dumps(manifest, indent=2))
    return manifest


def undo_balance(root, *, force: bool = False) -> list[str]:
    """Undo the newest `apply_balance`: restore the files it replaced, remove the ones it
    created, drop its history entry. Returns one line per file touched.

    A file changed since the apply (someone edited it) is not overwritten unless `force`:
    undo never destroys an edit it did not make.
    """
    root = Path(root)
    history = root / HISTORY_DIR
    entries = sorted(p for p in history.iterdir() if (p / MANIFEST).is_file()) if history.is_dir() else []
    if not entries:
        raise DataRootError(f"{root}: no balance history to undo (looked in {history})")
    entry = entries[-1]
    manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
    if not force:
        edited = [
            rel
            for rel, text in manifest["written"].items()
            if (root / rel).exists() and (root / rel).read_text(encoding="utf-8") != text
        ]
        if edited:
            raise DataRootError(
                f"{root}: changed since the balance was applied, not undoing: {', '.join(edited)}. "
                f"To restore the older files anyway: edlib balance {root} --undo --force "
                "(from Python: undo_balance(root, force=True))"
            )
    done = []
    for rel in manifest["replaced"]:
        copy_atomic(entry / "files" / rel, root / rel)  # through a symlink: the link stays
        done.append(f"restored {rel}")
    for rel in manifest["created"]:
        if (root / rel).exists():
            (root / rel).unlink()
            done.append(f"removed {rel} (it did not exist before)")
    shutil.rmtree(entry)
    return done


def _new_history_entry(root: Path) -> Path:
    history = root / HISTORY_DIR
    history.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S_%fZ")
    entry = history / stamp
    n = 1
    while entry.exists():  # two applies within a microsecond: keep both, in order
        entry = history / f"{stamp}-{n}"
        n += 1
    entry.mkdir()
    return entry
