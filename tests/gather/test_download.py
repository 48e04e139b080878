"""Gathering from URL lists with img2dataset, against a real HTTP server on 127.0.0.1 that
serves good images, 404s, a slow response past the timeout, a web page, a tiny and a long
image, copies of one image and a copy of a training image.

Each test runs img2dataset for real (a subprocess that imports it, ~10-20 s on the 2-core
CI machine), so there are few of them and each checks much."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from edlib.data.scan import scan
from edlib.gather import DownloadSettings, GatherError, GatherOptions, gather
from edlib.gather import report as R
from edlib.gather.journal import Journal
from edlib.gather.target import STAGING
from tests.gather.conftest import inventory
from tests.gather.http_server import closed_port_url
from tests.gather.test_from_folder import _snapshot

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # img2dataset's child inherits the environment: never send 127.0.0.1 through a proxy.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def _kept(root: Path) -> list[dict]:
    return Journal(root / "gt" / STAGING / "journal.jsonl").state.kept


def _expected_kept(rows) -> tuple[set[str], set[str]]:
    """URLs that must all be kept, and the copies of good0 of which exactly one is kept."""
    good = {r.url for r in rows if r.kind == "good"}
    first = rows[0].url
    return good - {first}, {first} | {r.url for r in rows if r.kind == "dup"}


def test_csv_list_end_to_end(server, data_root, tmp_path):
    rows = inventory(server, data_root, "/csv")
    path = tmp_path / "list.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["url", "caption", "width", "height", "score"])
        for r in rows:
            w.writerow([r.url, r.caption or "", r.width or "", r.height or "", r.score])
    before = _snapshot(data_root)
    settings = DownloadSettings(processes=1, threads=8, timeout=3, shard_size=8)
    options = GatherOptions(resolution=64, where=("score>=0.5",), download=settings, progress=False)
    report = gather(data_root, path, "gt", count=50, per_epoch=3, options=options)

    assert report.reasons == {
        f"{R.HTTP_ERROR} 404": 2,
        R.TIMEOUT: 1,
        R.UNREACHABLE: 1,
        R.NOT_AN_IMAGE: 1,
        R.TOO_SMALL: 1,
        R.ASPECT: 1,
        R.DUPLICATE: 2,
        R.DUPLICATE_OF_TRAINING: 1,
        R.LIST_TOO_SMALL: 1,
        R.filter_reason("score>=0.5"): 1,
        R.NO_CAPTION: 1,
        R.LISTED_TWICE: 1,
    }
    assert (report.kept, report.added, report.downloaded, report.looked_at, report.candidates) == (12, 12, 18, 22, 22)
    assert report.exhausted and report.multiply == "0.25" and report.per_epoch == pytest.approx(3)
    assert (data_root / "gt/multiply.txt").read_text().strip() == "0.25"

    must, one_of = _expected_kept(rows)
    kept_urls = {k["origin"] for k in _kept(data_root)}
    assert must <= kept_urls and len(kept_urls & one_of) == 1 and len(kept_urls) == 12
    # What training will see: 12 images, each with its list caption, shrunk to 64 px.
    caption_of = {r.url: r.caption for r in rows if r.kind != "listed_twice"}
    result = scan(data_root)
    items = {it.path: it for it in result.items if it.folder == "gt"}
    assert len(items) == 12
    for k in _kept(data_root):
        item = items[f"gt/{k['name']}"]
        assert item.caption.main_prompt == caption_of[k["origin"]]
        assert min(item.width, item.height) == 64
    assert not [w for w in result.warnings if "gt" in w]
    # Rows removed from the list were never requested; a URL listed twice was fetched once.
    counts = server.counts()
    for r in rows:
        path_part = r.url.split(str(server.port), 1)[-1]
        if r.kind in ("list_small", "low_score", "no_caption"):
            assert counts[path_part] == 0, r.kind
        elif r.kind != "unreachable":
            assert counts[path_part] == 1, r.kind
    doc = json.loads((data_root / "gt" / R.REPORT_NAME).read_text())
    assert doc["kept"] == 12 and doc["reasons"] == report.reasons and len(doc["runs"]) == 1
    assert _snapshot(data_root, skip="gt") == before
    assert not list((data_root / "gt" / STAGING).glob("round-*"))  # the finished round is cleaned up


def _cli(root: Path, source: Path, count: int, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [
        sys.executable, "-m", "edlib", "gather", str(root), "--from", str(source), "--to", "gt", "--count", str(count),
        "--per-epoch", "2", "--resolution", "64", "--where", "aesthetic>=0.5", "--shard-size", "4",
        "--processes", "1", "--threads", "4", "--timeout", "30", "--no-progress",
    ]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_parquet_list_interrupted_midway_resumes_without_fetching_again(server, data_root, tmp_path):
    rows = inventory(server, data_root, "/pq", slow=False, unreachable=False)
    path = tmp_path / "laion_part.parquet"
    table = {
        "URL": [r.url for r in rows],
        "TEXT": [r.caption for r in rows],
        "WIDTH": [r.width for r in rows],
        "HEIGHT": [r.height for r in rows],
        "aesthetic": [r.score for r in rows],
    }
    pq.write_table(pa.table(table), path)
    round_dir = data_root / "gt" / STAGING / "round-0001"
    # Hold every request once the first shard is finished: the download is then midway.
    server.gate = lambda p: p.startswith("/pq/") and (round_dir / "00000_stats.json").exists()
    first = _cli(data_root, path, 8)
    try:
        assert server.held.wait(240), "the download never reached its second shard"
        shard0 = set(pq.read_table(round_dir / "00000.parquet", columns=["url"]).column("url").to_pylist())
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=60)
    finally:
        server.gate = None
        server.release.set()
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, err
    assert "run the same command again" in err
    assert len(shard0) == 4 and not list((data_root / "gt").glob("*.jpg"))

    second = _cli(data_root, path, 8)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert "8 of 8 images" in out
    requests_after_second = server.counts()

    third = _cli(data_root, path, 100)
    out, err = third.communicate(timeout=300)
    assert third.returncode == 0, err
    # The spare candidates of the first round were downloaded already: nothing is fetched again.
    assert server.counts() == requests_after_second

    counts = server.counts()
    for url in shard0:  # finished before the interruption: never downloaded again
        assert counts[url.split(str(server.port), 1)[-1]] == 1
    assert max(counts.values()) <= 2  # at most the shard in flight was fetched twice
    must, one_of = _expected_kept(rows)
    kept = {k["origin"] for k in _kept(data_root)}
    assert must <= kept and len(kept & one_of) == 1 and len(kept) == 12
    doc = json.loads((data_root / "gt" / R.REPORT_NAME).read_text())
    assert doc["kept"] == 12 and doc["exhausted"] and doc["multiply"] == "0.166667"  # 2 of 12 per epoch
    assert [r["added"] for r in doc["runs"]] == [0, 8, 4] and doc["runs"][0]["stopped_by"] == "KeyboardInterrupt"
    assert doc["reasons"][R.DUPLICATE] == 2 and doc["reasons"][f"{R.HTTP_ERROR} 404"] == 2
    for k in _kept(data_root):
        with Image.open(data_root / "gt" / k["name"]) as im:
            assert min(im.size) == 64


def test_unreachable_hosts_stop_with_a_clear_error(data_root, tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text("".join(json.dumps({"url": closed_port_url(f"/{i}.jpg"), "caption": f"c{i}"}) + "\n" for i in range(3)))
    settings = DownloadSettings(processes=1, threads=4, timeout=5)
    started = time.time()
    with pytest.raises(GatherError, match=r"none of the 3 URLs tried could be reached \(unreachable host: 3\)"):
        gather(data_root, path, "gt", count=2, options=GatherOptions(resolution=64, download=settings, progress=False))
    assert time.time() - started < 120
    assert not [p for p in (data_root / "gt").iterdir() if p.suffix in (".jpg", ".png", ".txt")]
    assert Journal(data_root / "gt" / STAGING / "journal.jsonl").state.round is None  # a rerun tries again
