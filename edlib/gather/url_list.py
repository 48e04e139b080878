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


_REASONS = ("", R.NO_URL, R.NO_CAPTION, R.LISTED_TWICE, R.LIST_TOO_SMALL, R.LIST_ASPECT)


@dataclass
class UrlList:
    """The rows of a list that may be downloaded, in the order they will be tried. URLs
    and captions stay in Arrow arrays (a list of millions of rows fits in memory)."""

    path: Path
    rows: int  # rows in the file
    order: np.ndarray  # row numbers of the candidates, in draw order
    url_array: object  # pyarrow array of the stripped URLs, one per row
    caption_array: object  # pyarrow array of the stripped captions ("" or null: none)
    filtered: Counter = field(default_factory=Counter)  # rows removed, by reason
    fingerprint: str = ""  # sha256 of the file: a rerun must use the same list
    columns: dict[str, str | None] = field(default_factory=dict)  # role -> column used

    def url(self, row: int) -> str:
        return self.url_array[row].as_py() or ""

    def caption(self, row: int) -> str:
        return self.caption_array[row].as_py() or ""

    def urls_at(self, rows: list[int]) -> list[str]:
        return self.url_array.take(np.asarray(rows, dtype=np.int64)).to_pylist()


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
    urls, captions = _text(table, url_col), _text(table, cap_col)
    code = _row_codes(urls, captions)
    if w_col and h_col:
        w = _numbers(path, table, w_col)
        h = _numbers(path, table, h_col)
        known = np.isfinite(w) & np.isfinite(h) & (w > 0) & (h > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            _mark(code, known & (np.minimum(w, h) < min_side), _REASONS.index(R.LIST_TOO_SMALL))
            _mark(code, known & (np.maximum(w, h) / np.minimum(w, h) > max_aspect), _REASONS.index(R.LIST_ASPECT))
    reasons = list(_REASONS)
    for cond in where:
        values = _numbers(path, table, cond.column)
        with np.errstate(invalid="ignore"):
            passes = _OPS[cond.op](values, cond.value) & np.isfinite(values)
        reasons.append(R.filter_reason(cond.text))
        _mark(code, ~passes, len(reasons) - 1)

    keep = np.flatnonzero(code == 0)
    order = keep[np.random.default_rng(seed).permutation(len(keep))]
    counts = np.bincount(code, minlength=len(reasons))
    return UrlList(
        path=path.resolve(),
        rows=table.num_rows,
        order=order,
        url_array=urls,
        caption_array=captions,
        filtered=Counter({reasons[i]: int(n) for i, n in enumerate(counts) if i and n}),
        fingerprint=file_sha256(path),
        columns={"url": url_col, "caption": cap_col, "width": w_col, "height": h_col},
    )


def _text(table, column: str):
    """A column as one Arrow array of stripped text (64-bit offsets: lists of any size)."""
    pa = _pyarrow()
    col = table.column(column)
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    return pa.compute.utf8_trim_whitespace(col.cast(pa.large_string())).combine_chunks()


def _row_codes(urls, captions) -> np.ndarray:
    """Per row, 0 or the index in `_REASONS` of why it cannot be downloaded: no http(s)
    URL, no caption, or a URL already listed in an earlier usable row."""
    pc = _pyarrow().compute
    code = np.zeros(len(urls), dtype=np.int16)
    is_url = pc.fill_null(pc.match_substring_regex(urls, "^https?://", ignore_case=True), False)
    _mark(code, ~is_url.to_numpy(zero_copy_only=False), _REASONS.index(R.NO_URL))
    empty = pc.fill_null(pc.equal(pc.utf8_length(captions), 0), True)
    _mark(code, empty.to_numpy(zero_copy_only=False), _REASONS.index(R.NO_CAPTION))
    usable = np.flatnonzero(code == 0)
    ids = urls.take(usable).dictionary_encode().indices.to_numpy(zero_copy_only=False)
    repeat = np.ones(len(usable), dtype=bool)
    repeat[np.unique(ids, return_index=True)[1]] = False
    code[usable[repeat]] = _REASONS.index(R.LISTED_TWICE)
    return code


def _mark(code: np.ndarray, mask: np.ndarray, reason: int) -> None:
    """Give rows in `mask` that have no reason yet this one (the first reason wins)."""
    code[mask & (code == 0)] = reason


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
        import pyarrow
    except ImportError:
        raise GatherError(missing_extra("reading a URL list needs pyarrow")) from None
    import pyarrow.compute
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
