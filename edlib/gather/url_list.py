"""Reading a URL list (Parquet, CSV, TSV or JSON lines) into the candidates to download.

A list has a URL column and a caption column; their names are given or found among the
common spellings (`url`/`caption` as img2dataset writes them, `URL`/`TEXT` as LAION's
metadata has them). Optional width and height columns (`width`/`WIDTH`, ...) and `--where`
conditions on any numeric column (`aesthetic>=5`, `punsafe<0.1`) remove rows before
anything is downloaded. The rows left are put in a seeded random order, so a gather of N
images is a fair sample of a sorted list and the same seed draws the same rows.

Reading needs pyarrow, which the `gather` extra installs (img2dataset depends on it).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edlib.gather import report as R
from edlib.gather.errors import GatherError, missing_extra

URL_COLUMNS = ("url", "URL")
CAPTION_COLUMNS = ("caption", "TEXT", "text")
WIDTH_COLUMNS = ("width", "WIDTH")
HEIGHT_COLUMNS = ("height", "HEIGHT")

LIST_FORMATS = {
    ".parquet": "parquet",
    ".csv": "csv",
    ".csv.gz": "csv",
    ".tsv": "tsv",
    ".tsv.gz": "tsv",
    ".jsonl": "jsonl",
    ".jsonl.gz": "jsonl",
}
_CONDITION = re.compile(r"^\s*([^<>=!]+?)\s*(>=|<=|==|=|>|<)\s*(\S+)\s*$")
_OPS = {
    ">=": np.greater_equal,
    "<=": np.less_equal,
    ">": np.greater,
    "<": np.less,
    "==": np.equal,
    "=": np.equal,
}


def list_format(path: str | Path) -> str | None:
    """"parquet", "csv", "tsv" or "jsonl" from the file name, or None."""
    name = str(path).lower()
    for suffix, fmt in sorted(LIST_FORMATS.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(suffix):
            return fmt
    return None


@dataclass(frozen=True)
class Condition:
    """A `--where` filter: keep rows whose `column` compares true against `value`."""

    column: str
    op: str
    value: float

    @property
    def text(self) -> str:
        return f"{self.column}{self.op}{self.value:g}"


def parse_condition(text: str) -> Condition:
    """`"aesthetic>=5"` -> Condition("aesthetic", ">=", 5.0); a clear error otherwise."""
    m = _CONDITION.match(text)
    if not m:
        raise GatherError(f"filter {text!r}: write COLUMN OP NUMBER, e.g. 'aesthetic>=5' or 'punsafe<0.1'")
    column, op, value = m.groups()
    try:
        number = float(value)
    except ValueError:
        raise GatherError(f"filter {text!r}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise GatherError(f"filter {text!r}: the number must be finite")
    return Condition(column, op, number)


@dataclass
class UrlList:
    """The rows of a list that may be downloaded, in the order they will be tried."""

    path: Path
    rows: int  # rows in the file
    urls: list[str]  # per row
    captions: list[str]  # per row ("" when missing)
    order: np.ndarray  # row numbers of the candidates, in draw order
    filtered: Counter = field(default_factory=Counter)  # rows removed, by reason
    fingerprint: str = ""  # sha256 of the file: a rerun must use the same list
    columns: dict[str, str | None] = field(default_factory=dict)  # role -> column used


def read_url_list(
    path: str | Path,
    *,
    url_column: str | None = None,
    caption_column: str | None = None,
    width_column: str | None = None,
    height_column: str | None = None,
    where: tuple[Condition, ...] = (),
    min_side: int = 0,
    max_aspect: float = math.inf,
    seed: int = 0,
) -> UrlList:
    """Read, check and filter a URL list; errors name the file and the column."""
    path = Path(path).expanduser()
    fmt = list_format(path)
    if fmt is None:
        raise GatherError(
            f"{path}: not a URL list this reads (give a {', '.join(sorted(LIST_FORMATS))} file, or a folder of images)"
        )
    if not path.is_file():
        raise GatherError(f"{path}: no such file")
    names = _column_names(path, fmt)
    url_col = _pick(path, names, url_column, URL_COLUMNS, "URL", "--url-column")
    cap_col = _pick(path, names, caption_column, CAPTION_COLUMNS, "caption", "--caption-column")
    w_col = _pick(path, names, width_column, WIDTH_COLUMNS, "width", "--width-column", required=False)
    h_col = _pick(path, names, height_column, HEIGHT_COLUMNS, "height", "--height-column", required=False)
    for cond in where:
        if cond.column not in names:
            raise GatherError(f"{path}: filter {cond.text!r} names a column {cond.column!r} the list does not have (its columns: {', '.join(names)})")
    wanted = list(dict.fromkeys(c for c in (url_col, cap_col, w_col, h_col, *(c.column for c in where)) if c))
    table = _read_table(path, fmt, wanted)
    if table.num_rows == 0:
        raise GatherError(f"{path}: the list has no rows")
    urls = [u.strip() if isinstance(u, str) else "" for u in table.column(url_col).to_pylist()]
    captions = [_caption_text(c) for c in table.column(cap_col).to_pylist()]

    reason = np.full(table.num_rows, "", dtype=object)
    _mark(reason, np.array([not u.lower().startswith(("http://", "https://")) for u in urls]), R.NO_URL)
    _mark(reason, np.array([not c for c in captions]), R.NO_CAPTION)
    seen: set[str] = set()
    twice = np.zeros(table.num_rows, bool)
    for i, u in enumerate(urls):
        if reason[i] == "":
            twice[i] = u in seen
            seen.add(u)
    _mark(reason, twice, R.LISTED_TWICE)
    if w_col and h_col:
        w = _numbers(path, table, w_col)
        h = _numbers(path, table, h_col)
        known = np.isfinite(w) & np.isfinite(h) & (w > 0) & (h > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            _mark(reason, known & (np.minimum(w, h) < min_side), R.LIST_TOO_SMALL)
            _mark(reason, known & (np.maximum(w, h) / np.minimum(w, h) > max_aspect), R.LIST_ASPECT)
    for cond in where:
        values = _numbers(path, table, cond.column)
        with np.errstate(invalid="ignore"):
            passes = _OPS[cond.op](values, cond.value) & np.isfinite(values)
        _mark(reason, ~passes, R.filter_reason(cond.text))

    keep = np.flatnonzero(reason == "")
    order = keep[np.random.default_rng(seed).permutation(len(keep))]
    filtered = Counter(r for r in reason if r)
    return UrlList(
        path=path.resolve(),
        rows=table.num_rows,
        urls=urls,
        captions=captions,
        order=order,
        filtered=filtered,
        fingerprint=file_sha256(path),
        columns={"url": url_col, "caption": cap_col, "width": w_col, "height": h_col},
    )


def _mark(reason: np.ndarray, mask: np.ndarray, text: str) -> None:
    """Give `text` as the reason to rows in `mask` that have none yet (first reason wins)."""
    reason[mask & (reason == "")] = text


def _caption_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    return str(value).strip()


def _pick(path: Path, names: list[str], given: str | None, defaults: tuple[str, ...], what: str, option: str, *, required: bool = True) -> str | None:
    if given:
        if given not in names:
            raise GatherError(f"{path}: no column {given!r} ({option}); its columns are: {', '.join(names)}")
        return given
    for name in defaults:
        if name in names:
            return name
    if required:
        raise GatherError(
            f"{path}: no {what} column (looked for {', '.join(repr(d) for d in defaults)}); its columns are: "
            f"{', '.join(names)}. Name the column with {option}"
        )
    return None


def _pyarrow():
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise GatherError(missing_extra("reading a URL list needs pyarrow")) from None
    import pyarrow.csv
    import pyarrow.json
    import pyarrow.parquet

    return pyarrow


def _column_names(path: Path, fmt: str) -> list[str]:
    pa = _pyarrow()
    try:
        if fmt == "parquet":
            return list(pa.parquet.read_schema(path).names)
        if fmt in ("csv", "tsv"):
            reader = pa.csv.open_csv(path, parse_options=pa.csv.ParseOptions(delimiter="\t" if fmt == "tsv" else ","))
            return list(reader.schema.names)
        return list(pa.json.read_json(path).column_names)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise GatherError(f"{path}: cannot read it as {fmt}: {exc}") from exc


def _read_table(path: Path, fmt: str, columns: list[str]):
    pa = _pyarrow()
    try:
        if fmt == "parquet":
            return pa.parquet.read_table(path, columns=columns)
        if fmt in ("csv", "tsv"):
            return pa.csv.read_csv(
                path,
                parse_options=pa.csv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=True),
                convert_options=pa.csv.ConvertOptions(include_columns=columns),
            )
        return pa.json.read_json(path).select(columns)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise GatherError(f"{path}: cannot read it as {fmt}: {exc}") from exc


def _numbers(path: Path, table, column: str) -> np.ndarray:
    """A column as float64, missing values as NaN; an error names a non-numeric column."""
    pa = _pyarrow()
    col = table.column(column)
    try:
        col = col.cast(pa.float64())
    except (pa.ArrowException, ValueError):
        raise GatherError(f"{path}: column {column!r} holds values that are not numbers") from None
    return col.fill_null(float("nan")).to_numpy()


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
