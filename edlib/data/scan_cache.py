"""The scan cache: what a scan learned about each file, so a re-scan of an unchanged tree
only has to list folders and stat files.

One JSON file per data root under `$EDLIB_CACHE_DIR/scan/` (default `~/.cache/edlib`), named
by a hash of the root's absolute path; nothing is ever written inside the data root. A value
only counts while its file keeps the same size and `mtime_ns`, so an edited caption or a
replaced image is read again.

Per folder the record holds the image names, their sizes and mtimes packed into one string,
their header results packed the same way, and the caption files by name. Re-scanning an
unchanged folder is then one string comparison instead of a lookup per file, which is what
makes a cached scan of 100,000 images several times faster than a cold one; when a folder
changed, its files are matched one by one, so only new or changed files are read.

The file is written to a temporary name and moved into place, so a crash never leaves half
a cache; a cache that cannot be read is ignored and rewritten, never an error.

Training adds what only decoding shows (`remember_unreadable`): an image damaged mid-file
passes the scan's header check, fails when training decodes it, and is then recorded here
as skipped, so the next scan reports it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from array import array
from pathlib import Path

from edlib.files import write_text_atomic

_VERSION = 3  # 3: caption files cached as EveryDream2 entries (sidecars.Entry)
_SKIPPED = -1  # width stored for an image the scan skipped; its reason is kept by name
_log = logging.getLogger("edlib.data")

# What a scan caches per image: (width, height), or the reason it was skipped.
Header = tuple[int, int] | str


def cache_dir() -> Path:
    """Where edlib keeps caches: `$EDLIB_CACHE_DIR`, else `~/.cache/edlib`."""
    env = os.environ.get("EDLIB_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "edlib"


def cache_path(root: Path) -> Path:
    """The cache file of a data root (an absolute, resolved path)."""
    digest = hashlib.sha256(str(root).encode("utf-8")).hexdigest()[:24]
    return cache_dir() / "scan" / f"{digest}.json"


class ScanCache:
    """Headers and captions from the previous scan of one data root.

    A scan asks `headers` and `caption` for what it knew, and records what it read with
    `store_headers` and `store_caption`; `save` writes only what this scan saw, so deleted
    files drop out.
    """

    def __init__(self, root: Path, old: dict | None = None):
        self.root = root
        self._old: dict = old or {}
        self._new: dict[str, dict] = {}
        self._dirty = False

    @classmethod
    def load(cls, root: Path) -> ScanCache:
        root = root.resolve()
        path = cache_path(root)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(root)
        except (OSError, ValueError) as exc:
            _log.info("ignoring unreadable scan cache %s (%s); it will be rewritten", path, exc)
            return cls(root)
        if not (isinstance(doc, dict) and doc.get("version") == _VERSION and doc.get("root") == str(root)):
            return cls(root)
        folders = doc.get("folders")
        return cls(root, folders if isinstance(folders, dict) else None)

    def headers(self, folder: str, names: list[str], stats: list[int]) -> list[Header | None]:
        """Cached headers of the images `names` in `folder` (None where unknown or changed).
        `stats` is [size0, mtime_ns0, size1, mtime_ns1, ...] in the order of `names`."""
        record = self._old.get(folder)
        if not isinstance(record, dict):
            return [None] * len(names)
        try:
            if record["names"] == names and record["stats"] == _pack("q", stats):
                return _unpack_headers(names, record)  # the common case: nothing changed
            old_stats = _unpack("q", record["stats"])
            old_headers = _unpack_headers(record["names"], record)
            by_name = {
                n: (old_stats[2 * i], old_stats[2 * i + 1], old_headers[i]) for i, n in enumerate(record["names"])
            }
        except (KeyError, TypeError, ValueError, IndexError):
            return [None] * len(names)  # a damaged record is as good as none
        out: list[Header | None] = []
        for i, name in enumerate(names):
            entry = by_name.get(name)
            out.append(entry[2] if entry and entry[0] == stats[2 * i] and entry[1] == stats[2 * i + 1] else None)
        return out

    def store_headers(self, folder: str, names: list[str], stats: list[int], headers: list[Header]) -> None:
        """Record the headers read (or reused) for the images `names` of `folder`."""
        sizes: list[int] = []
        skipped = {}
        for name, header in zip(names, headers):
            if isinstance(header, str):
                sizes += (_SKIPPED, 0)
                skipped[name] = header
            else:
                sizes += header
        record = self._new.setdefault(folder, {"captions": {}})
        record.update(names=names, stats=_pack("q", stats), sizes=_pack("i", sizes), skipped=skipped)
        old = self._old.get(folder)
        if not (isinstance(old, dict) and all(old.get(k) == record[k] for k in ("names", "stats", "sizes", "skipped"))):
            self._dirty = True

    def caption(self, folder: str, name: str, size: int, mtime_ns: int) -> list | None:
        """The cached parse of caption file `folder/name` if it is unchanged, else None."""
        record = self._old.get(folder)
        captions = record.get("captions") if isinstance(record, dict) else None
        entry = captions.get(name) if isinstance(captions, dict) else None
        if isinstance(entry, list) and len(entry) == 3 and entry[0] == size and entry[1] == mtime_ns:
            self._new.setdefault(folder, {"captions": {}})["captions"][name] = entry
            return entry[2]
        return None

    def store_caption(self, folder: str, name: str, size: int, mtime_ns: int, value: list) -> None:
        """Record the JSON-able parse `value` of caption file `folder/name`."""
        self._new.setdefault(folder, {"captions": {}})["captions"][name] = [size, mtime_ns, value]
        self._dirty = True

    def save(self) -> None:
        """Write the cache atomically if anything changed; failures only log."""
        if not self._dirty and self._new.keys() == self._old.keys():
            return
        path = cache_path(self.root)
        if path.resolve().is_relative_to(self.root):
            _log.warning("not writing the scan cache %s: it is inside the data root", path)
            return
        doc = {"version": _VERSION, "root": str(self.root), "folders": self._new}
        try:
            write_text_atomic(path, json.dumps(doc, separators=(",", ":")))  # one C-encoded string: fast
        except OSError as exc:
            _log.warning("could not write the scan cache %s: %s", path, exc)


def _pack(typecode: str, values: list[int]) -> str:
    return base64.b64encode(array(typecode, values).tobytes()).decode("ascii")


def _unpack(typecode: str, text: str) -> array:
    return array(typecode, base64.b64decode(text, validate=True))


def _unpack_headers(names: list[str], record: dict) -> list[Header]:
    sizes = _unpack("i", record["sizes"])
    skipped = record["skipped"]
    if len(sizes) != 2 * len(names):
        raise ValueError("sizes do not match names")
    return [skipped[n] if sizes[2 * i] == _SKIPPED else (sizes[2 * i], sizes[2 * i + 1]) for i, n in enumerate(names)]


def remember_unreadable(root: str | os.PathLike, rel_path: str, reason: str) -> bool:
    """Record in the scan cache that the image `rel_path` (relative to `root`) cannot be
    decoded, so the next scan skips it with `reason` without reading it.

    The scan reads headers only, so a file damaged mid-way passes it; training finds out when
    it decodes the file and tells the cache here. The verdict holds while the file keeps its
    size and mtime. Returns whether it was recorded (not when the cache has no record of the
    file); failures only log."""
    root_path = Path(root).resolve()
    path = cache_path(root_path)
    folder, _, name = rel_path.rpartition("/")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc["version"] != _VERSION or doc["root"] != str(root_path):
            return False
        record = doc["folders"][folder]
        index = record["names"].index(name)
        stats = _unpack("q", record["stats"])
        sizes = _unpack("i", record["sizes"])
        st = os.stat(root_path / rel_path)
        if (stats[2 * index], stats[2 * index + 1]) != (st.st_size, st.st_mtime_ns):
            return False  # changed since the scan: the next scan reads it again anyway
        sizes[2 * index : 2 * index + 2] = array("i", (_SKIPPED, 0))
        record["sizes"] = base64.b64encode(sizes.tobytes()).decode("ascii")
        record["skipped"][name] = reason
        write_text_atomic(path, json.dumps(doc, separators=(",", ":")))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        _log.info("could not record %s as unreadable in the scan cache %s: %s", rel_path, path, exc)
        return False
    return True
