"""Notebooks 01, 03 and 04 in one real JupyterLab, driven by Playwright with Debian's chromium.

JupyterLab runs on 127.0.0.1 with a random free port and a token, in a temporary folder
holding copies of the notebooks and a generated data root; each notebook opens in its own
workspace and runs all its cells. 01: type a new multiplier into the table, Save, check
multiply.txt on disk and the table's numbers in the page. 03: set a short run in the form
(an advanced section too), Start it, watch the loss chart grow, change a multiplier mid-run
and see the next epoch take it, Stop. 04: on that run, generate a grid and export. One test,
because 04 needs 03's run and one server should serve all three. Screenshots at 1440x900 go
to $EDLIB_TEST_ARTIFACTS (else the test's tmp dir).

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
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NAMES = (
    "01_dataset_and_balancing.ipynb", "03_training.ipynb", "04_sampling_and_export.ipynb", "02_preservation_mixing.ipynb"
)
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
    for name in NAMES:
        shutil.copy(NOTEBOOKS / name, work / name)
    data = work / "data"
    write_data_root(data, SPEC, seed=3, size=64)
    port, token = _free_port(), secrets.token_hex(16)
    settings = tmp_path / "lab-settings"
    _write_lab_settings(settings)
    run = work / "runs" / "browser"
    env = {
        **os.environ,
        "EDLIB_DATA_ROOT": str(data),
        "EDLIB_RUN_DIR": str(run),  # 03 trains it, 04 opens it
        "EDLIB_QUICK": "1",  # 03's form starts with short settings
        "EDLIB_AUTOSTART": "0",  # ... and the run is started from the panel, not by a cell
        "OMP_NUM_THREADS": "1",
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
            yield {"url": f"http://127.0.0.1:{port}", "token": token, "data": data, "run": run}
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


def _wait_for_file(path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert path.exists(), f"{path} was not written"


def _open_and_run_all(browser, lab, name: str, shots: Path):
    """A new page with `name` in a workspace of its own (no other notebook restored into
    it), its kernel started, and Run All Cells clicked."""
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(f"{lab['url']}/lab/workspaces/{Path(name).stem}/tree/{name}?token={lab['token']}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    # JupyterLab may ask which kernel to start while its kernel list is still loading.
    try:
        page.locator(".jp-Dialog button.jp-mod-accept").click(timeout=5_000)
    except playwright_api.TimeoutError:
        pass
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
    page.click("li.lm-MenuBar-item:has-text('Run')")
    page.click("li.lm-Menu-item:has-text('Run All Cells')")
    return page


def _wait_for_text(page, selector: str, text: str, shots: Path, name: str, timeout: float = 60_000) -> None:
    """Wait until the element's text contains `text`; on a timeout, save a screenshot."""
    try:
        page.wait_for_function(
            "([s, t]) => (document.querySelector(s) || {}).innerText?.includes(t)", arg=[selector, text], timeout=timeout
        )
    except playwright_api.Error:
        page.screenshot(path=str(shots / f"{name}_failed.png"), full_page=True)
        raise


def _loss_points(page) -> int:
    return page.evaluate(
        "() => { const g = document.querySelector('.edlib-loss-chart .js-plotly-plot');"
        " return g && g.data ? g.data[0].x.length : 0; }"
    )


def test_notebooks_in_jupyterlab(lab, tmp_path):
    shots = _artifacts(tmp_path)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            _dataset_and_balancing(browser, lab, shots)
            _training(browser, lab, shots)
            _sampling_and_export(browser, lab, shots)
            _preservation(browser, lab, shots)
        finally:
            browser.close()


def _dataset_and_balancing(browser, lab, shots):
    page = _open_and_run_all(browser, lab, NAMES[0], shots)
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
    page.locator("button.edlib-save").click()

    written = lab["data"] / "stars" / "multiply.txt"
    _wait_for_file(written)
    assert written.read_text(encoding="utf-8") == "3\n"
    _wait_for_text(page, ".edlib-status", "wrote stars/multiply.txt", shots, "01")
    # The table was rebuilt from a fresh scan: the file's value, not just the typed one.
    assert page.locator(".edlib-multiply-1 input").input_value() == "3"
    assert page.locator(".edlib-per-epoch-1").inner_text().strip() == "15"
    # 12 zorblat + 3 x 5 stars + 0.1 x 30 preservation
    assert "Epoch: 30 expected samples" in page.locator(".edlib-summary").inner_text()
    page.screenshot(path=str(shots / "01_table_after_save.png"))

    page.locator(".js-plotly-plot").first.scroll_into_view_if_needed(timeout=30_000)
    page.screenshot(path=str(shots / "01_balance.png"))
    page.close()


def _preservation(browser, lab, shots):
    """02 after the others (it writes nothing until Save): its panel and charts as shown."""
    page = _open_and_run_all(browser, lab, NAMES[3], shots)
    _wait_for_text(page, ".edlib-preservation-result", "multiply.txt for", shots, "02", timeout=120_000)
    page.locator(".edlib-preservation-result").scroll_into_view_if_needed()
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 2", timeout=30_000)
    page.screenshot(path=str(shots / "02_preservation.png"))
    # Issue 19: the mode toggle's labels were cut, and plotly's toolbar covered the charts' corner.
    cut = page.evaluate(
        "() => [...document.querySelectorAll('.widget-toggle-button')].filter(b => b.scrollWidth > b.clientWidth + 1)"
        ".map(b => b.innerText)"
    )
    assert cut == []
    assert page.locator(".js-plotly-plot .modebar-container .modebar-btn").count() == 0
    page.close()


def _commit(page, selector: str, value: str) -> None:
    """Type into a number box and commit it as a user does (number boxes send on Enter)."""
    box = page.locator(f"{selector} input")
    box.fill(value)
    box.press("Enter")


def _training(browser, lab, shots):
    page = _open_and_run_all(browser, lab, NAMES[1], shots)
    start = page.locator("button.edlib-start")
    try:
        start.wait_for(state="visible", timeout=120_000)
    except playwright_api.Error:
        page.screenshot(path=str(shots / "03_failed_waiting_for_form.png"), full_page=True)
        raise
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
    # 30 samples per epoch after 01's Save, batch 2: 15 steps an epoch. 60 steps cross three epoch
    # boundaries: room to change a multiplier early and see the next epoch take it, then Stop.
    _commit(page, ".edlib-field-epochs", "20")
    page.locator(".edlib-advanced").get_by_text("Steps", exact=True).click()
    _commit(page, ".edlib-field-max_steps", "60")
    _wait_for_text(page, ".edlib-plan", "60 optimizer steps (15 per epoch)", shots, "03")
    page.locator(".edlib-field-epochs").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "03_training_form.png"))
    # Issue 19: checkbox labels were cut ("gradient...", "cache_te...").
    page.locator(".edlib-advanced").get_by_text("Memory and speed", exact=True).click()
    page.locator(".edlib-advanced .widget-checkbox").first.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "03_memory_section.png"))
    labels = page.evaluate(
        """() => [...document.querySelectorAll('.edlib-advanced .widget-checkbox')].filter(b => b.offsetParent)
            .map(b => [b.innerText.trim(), [...b.querySelectorAll('span, label')].some(e => e.scrollWidth > e.clientWidth + 1)])"""
    )
    assert labels and not [text for text, cut in labels if cut], labels

    start.click()
    _wait_for_text(page, ".edlib-live", " left", shots, "03", timeout=120_000)  # the time left while it runs
    page.wait_for_function("() => document.querySelector('.edlib-loss-chart .js-plotly-plot')", timeout=30_000)
    first = _loss_points(page)
    page.wait_for_function(  # the chart is redrawn while the run trains
        "(n) => document.querySelector('.edlib-loss-chart .js-plotly-plot').data[0].x.length > n",
        arg=first,
        timeout=60_000,
    )
    assert 0 < first < 60
    page.locator(".edlib-loss-chart").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "03_training_live.png"))

    # Mid-run: stars back to 1 in the multiplier table (row 1), Save; the next epoch takes it.
    box = page.locator(".edlib-multiply-1 input")
    box.scroll_into_view_if_needed()
    box.fill("1")
    page.locator("button.edlib-save").click()
    _wait_for_text(page, ".edlib-multipliers-note", "the run uses the new multipliers from epoch", shots, "03")
    assert (lab["data"] / "stars" / "multiply.txt").read_text(encoding="utf-8") == "1\n"
    _wait_for_text(page, ".edlib-multipliers-note", "trains with the new multipliers: 20 samples", shots, "03", 120_000)
    page.locator(".edlib-multipliers-note").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "03_multipliers_mid_run.png"))

    page.locator("button.edlib-stop").click()
    _wait_for_text(page, ".edlib-train-status", "stop request", shots, "03", 120_000)
    page.locator(".edlib-loss-chart").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "03_training_stopped.png"))
    log = (lab["run"] / "log.txt").read_text(encoding="utf-8")
    assert "stars/multiply.txt: 3 -> 1" in log
    page.close()


def _sampling_and_export(browser, lab, shots):
    page = _open_and_run_all(browser, lab, NAMES[2], shots)
    generate = page.locator("button.edlib-generate")
    try:
        generate.wait_for(state="visible", timeout=120_000)
    except playwright_api.Error:
        page.screenshot(path=str(shots / "04_failed_waiting_for_panel.png"), full_page=True)
        raise
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=180_000)
    generate.scroll_into_view_if_needed()
    generate.click()
    _wait_for_text(page, ".edlib-grid-status", "prompts:", shots, "04", 180_000)
    grids = sorted((lab["run"] / "samples" / "compare").glob("grid-*.png"))
    assert grids and page.locator(".edlib-grid-status").inner_text().strip().endswith(grids[-1].name)
    page.locator("button.edlib-generate").scroll_into_view_if_needed()
    page.mouse.wheel(0, 200)  # the buttons near the top, the grid below them
    page.screenshot(path=str(shots / "04_sampling_grid.png"))

    page.locator("button.edlib-export").click()
    _wait_for_text(page, ".edlib-export-status", "Written:", shots, "04", 120_000)
    # A full fine-tune's default format: a diffusers folder, named in the panel.
    [exported] = (lab["run"] / "exports").glob("*-diffusers")
    assert (exported / "model_index.json").is_file()
    assert str(exported) in page.locator(".edlib-export-status").inner_text()
    page.locator(".edlib-export-status").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "04_export.png"))
    page.close()
