"""Notebook 01 in a real JupyterLab, driven by Playwright with Debian's chromium.

JupyterLab runs on 127.0.0.1 with a random free port and a token, in a temporary folder
holding a copy of the notebook and a generated data root. The test runs all cells, types a
new multiplier into the table, clicks Save, and checks multiply.txt on disk and the table's
numbers in the page. Screenshots go to $EDLIB_TEST_ARTIFACTS (else the test's tmp dir).

Skipped only when /usr/bin/chromium or playwright is missing
(scripts/install_browser_test_deps.sh installs both)."""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from edlib.world import write_data_root

CHROMIUM = Path("/usr/bin/chromium")
NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "01_dataset_and_balancing.ipynb"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SPEC = {
    "zorblat": {"count": 12, "shapes": ["zorblat"]},
    "stars": {"count": 5, "shapes": ["star"]},
    "preservation": {"count": 30, "multiply": "0.1"},
}

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is missing (apt-get install chromium)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with code {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"JupyterLab did not answer at {url} within {timeout} s")


def _write_lab_settings(settings: Path) -> None:
    """No news pop-up over the screenshots, and every cell rendered (not only those in
    view), so the panel exists in the page wherever it is scrolled."""
    for plugin, values in {
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    }.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")


@pytest.fixture
def lab(tmp_path):
    work = tmp_path / "lab"
    work.mkdir()
    shutil.copy(NOTEBOOK, work / NOTEBOOK.name)
    data = work / "data"
    write_data_root(data, SPEC, seed=3, size=64)
    port, token = _free_port(), secrets.token_hex(16)
    settings = tmp_path / "lab-settings"
    _write_lab_settings(settings)
    env = {
        **os.environ,
        "EDLIB_DATA_ROOT": str(data),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
    }
    log_path = tmp_path / "jupyterlab.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterlab",
                "--no-browser",
                "--ip=127.0.0.1",
                f"--port={port}",
                f"--ServerApp.token={token}",
                f"--ServerApp.root_dir={work}",
                "--allow-root",  # CI containers run as root
                "--LabApp.news_url=",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", proc, log_path)
            yield {"url": f"http://127.0.0.1:{port}", "token": token, "data": data}
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _artifacts(tmp_path) -> Path:
    out = Path(os.environ.get("EDLIB_TEST_ARTIFACTS") or tmp_path / "artifacts")
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_notebook_01_in_jupyterlab(lab, tmp_path):
    shots = _artifacts(tmp_path)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(f"{lab['url']}/lab/tree/{NOTEBOOK.name}?token={lab['token']}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            # JupyterLab may ask which kernel to start while its kernel list is still loading.
            try:
                page.locator(".jp-Dialog button.jp-mod-accept").click(timeout=5_000)
            except playwright_api.TimeoutError:
                pass
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)

            page.click("li.lm-MenuBar-item:has-text('Run')")
            page.click("li.lm-Menu-item:has-text('Run All Cells')")

            # Row 1 is "stars" (folders are sorted: preservation, stars, zorblat).
            box = page.locator(".edlib-multiply-1 input")
            try:
                box.wait_for(state="attached", timeout=60_000)
            except playwright_api.Error:
                page.screenshot(path=str(shots / "01_failed_waiting_for_table.png"), full_page=True)
                raise
            per_epoch = page.locator(".edlib-per-epoch-1")
            assert per_epoch.inner_text().strip() == "5"
            box.scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "01_table_before.png"))

            box.fill("3")
            page.wait_for_function(
                "() => document.querySelector('.edlib-per-epoch-1').innerText.trim() === '15'", timeout=20_000
            )
            page.locator(".edlib-save button, button.edlib-save").first.click()

            written = lab["data"] / "stars" / "multiply.txt"
            deadline = time.monotonic() + 20
            while not written.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert written.read_text(encoding="utf-8") == "3\n"
            page.wait_for_function(
                "() => (document.querySelector('.edlib-status') || {}).innerText?.includes('wrote stars/multiply.txt')",
                timeout=20_000,
            )
            # The table was rebuilt from a fresh scan: the file's value, not just the typed one.
            assert page.locator(".edlib-multiply-1 input").input_value() == "3"
            assert page.locator(".edlib-per-epoch-1").inner_text().strip() == "15"
            # 12 zorblat + 3 x 5 stars + 0.1 x 30 preservation
            assert "Epoch: 30 expected samples" in page.locator(".edlib-summary").inner_text()
            page.screenshot(path=str(shots / "01_table_after_save.png"))

            page.locator(".js-plotly-plot").first.scroll_into_view_if_needed(timeout=30_000)
            page.screenshot(path=str(shots / "01_balance.png"))
        finally:
            browser.close()
