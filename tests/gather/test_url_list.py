"""Reading URL lists: formats, column names, filters before download, clear errors."""

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edlib.gather import report as R
from edlib.gather.errors import GatherError
from edlib.gather.url_list import parse_condition, read_url_list

ROWS = [
    {"url": "https://a.example/1.jpg", "caption": "one", "width": 800, "height": 600, "aesthetic": 6.0},
    {"url": "https://a.example/2.jpg", "caption": "two", "width": 100, "height": 80, "aesthetic": 6.5},
    {"url": "https://a.example/3.jpg", "caption": "three", "width": 2000, "height": 600, "aesthetic": 7.0},
    {"url": "https://a.example/4.jpg", "caption": "four", "width": None, "height": None, "aesthetic": 4.0},
    {"url": "ftp://a.example/5.jpg", "caption": "five", "width": 800, "height": 800, "aesthetic": 6.0},
    {"url": "https://a.example/6.jpg", "caption": "", "width": 800, "height": 800, "aesthetic": 6.0},
    {"url": "https://a.example/1.jpg", "caption": "one again", "width": 800, "height": 600, "aesthetic": 6.0},
    {"url": "https://a.example/8.jpg", "caption": "eight", "width": 640, "height": 640, "aesthetic": None},
]


def _write(path, rows, fmt, rename=None):
    rename = rename or {}
    rows = [{rename.get(k, k): v for k, v in r.items()} for r in rows]
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t" if fmt == "tsv" else ",")
            w.writeheader()
            w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    return path


@pytest.mark.parametrize("fmt", ["parquet", "csv", "tsv", "jsonl"])
def test_every_format_reads_and_filters_the_same(tmp_path, fmt):
    path = _write(tmp_path / f"list.{fmt}", ROWS, fmt)
    urls = read_url_list(path, where=(parse_condition("aesthetic>=5"),), min_side=512, max_aspect=2.0, seed=0)
    assert urls.rows == 8
    assert sorted(urls.order.tolist()) == [0]  # only the first row passes everything
    assert urls.filtered == {
        R.LIST_TOO_SMALL: 1,  # 100x80
        R.LIST_ASPECT: 1,  # 2000x600
        R.filter_reason("aesthetic>=5"): 2,  # 4.0, and a missing score
        R.NO_URL: 1,  # ftp://
        R.NO_CAPTION: 1,
        R.LISTED_TWICE: 1,
    }
    assert urls.caption(0) == "one" and urls.url(0) == "https://a.example/1.jpg" and urls.caption(5) == ""
    assert urls.columns == {"url": "url", "caption": "caption", "width": "width", "height": "height"}


def test_laion_column_names_are_found_and_the_order_is_seeded(tmp_path):
    rows = [{"URL": f"https://x.example/{i}.jpg", "TEXT": f"photo {i}", "WIDTH": 600, "HEIGHT": 600} for i in range(50)]
    path = _write(tmp_path / "laion.parquet", rows, "parquet")
    a = read_url_list(path, min_side=512, seed=0)
    b = read_url_list(path, min_side=512, seed=0)
    c = read_url_list(path, min_side=512, seed=1)
    assert a.columns["url"] == "URL" and a.columns["caption"] == "TEXT"
    assert a.order.tolist() == b.order.tolist() != c.order.tolist()
    assert sorted(a.order.tolist()) == list(range(50))
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 64


def test_a_list_without_the_url_column_names_the_file_and_its_columns(tmp_path):
    path = _write(tmp_path / "list.csv", [{"link": "https://a/1.jpg", "caption": "x"}], "csv")
    with pytest.raises(GatherError) as err:
        read_url_list(path)
    assert str(path) in str(err.value) and "'url'" in str(err.value) and "link" in str(err.value)
    assert "--url-column" in str(err.value)
    assert read_url_list(path, url_column="link").urls_at([0]) == ["https://a/1.jpg"]


def test_a_named_column_that_is_missing_is_an_error(tmp_path):
    path = _write(tmp_path / "list.parquet", [{"url": "https://a/1.jpg", "caption": "x"}], "parquet")
    with pytest.raises(GatherError, match="no column 'TEXT'.*--caption-column"):
        read_url_list(path, caption_column="TEXT")
    with pytest.raises(GatherError, match="'aesthetic' the list does not have"):
        read_url_list(path, where=(parse_condition("aesthetic>5"),))


def test_an_empty_list_is_an_error(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("url,caption\n")
    with pytest.raises(GatherError, match="no rows"):
        read_url_list(path)


def test_a_filter_on_text_is_an_error(tmp_path):
    path = _write(tmp_path / "list.csv", [{"url": "https://a/1.jpg", "caption": "x", "kind": "photo"}], "csv")
    with pytest.raises(GatherError, match="'kind' holds values that are not numbers"):
        read_url_list(path, where=(parse_condition("kind>1"),))


@pytest.mark.parametrize("text", ["aesthetic", "aesthetic>>5", "aesthetic>=high", "score<nan"])
def test_bad_conditions_say_how_to_write_one(text):
    with pytest.raises(GatherError, match=text.split(">")[0].split("<")[0]):
        parse_condition(text)


def test_other_files_are_refused(tmp_path):
    path = tmp_path / "urls.txt"
    path.write_text("https://a/1.jpg\n")
    with pytest.raises(GatherError, match="not a URL list"):
        read_url_list(path)
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(GatherError, match="broken.parquet: cannot read it as parquet"):
        read_url_list(bad)
