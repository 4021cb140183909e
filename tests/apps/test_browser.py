"""The real dashboard in a real browser: ``twin dashboard`` on a free 127.0.0.1 port, Debian's
chromium (headless) driven by Selenium through chromium-driver, every page visited, its text
checked and a screenshot saved. With ``TWIN_UPDATE_SCREENSHOTS=1`` the screenshots replace
docs/screenshots/ (shown by README and docs/dashboard.md); otherwise they go to a temporary
directory, so a test run never modifies tracked files.

CI installs chromium and chromium-driver (.ci/run); without them this test fails and says so.
Set ``TWIN_SKIP_BROWSER=1`` to skip it deliberately (e.g. on a machine without a browser).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from dashboard_testlib import FACILITY, ROOT, free_port

DOC_SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = ("chromium", "chromium-browser")
DRIVER = ("chromedriver", "chromium-driver")
#: Page (query parameter), text that must appear once the page has run, file name.
PAGES = (
    ("fleet", ("Fleet — two-story-mini", "Run totals", "Mount Pleasant", "Atlanta"), "fleet"),
    ("hall", ("Halls — two-story-mini", "Floor 1 (ground)", "Floor 2 (upper)", "CDU loop"), "hall"),
    ("gpu", ("GPUs — calibrated twin", "Anomaly", "Calibrated parameters"), "gpu"),
    (
        "placement&policies=pack,spread&hours=1",
        ("Placement what-if", "Comparison", "Least energy", "Download the plan"),
        "placement",
    ),
    ("live", ("Live telemetry", "simulated fleet", "Hottest GPU now"), "live"),
)


def _which(names: tuple[str, ...]) -> str | None:
    for n in names:
        path = shutil.which(n) or (f"/usr/bin/{n}" if Path(f"/usr/bin/{n}").exists() else None)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    if os.environ.get("TWIN_SKIP_BROWSER") == "1":
        pytest.skip("TWIN_SKIP_BROWSER=1: real-browser test skipped on request")
    chromium, driver_path = _which(CHROMIUM), _which(DRIVER)
    if chromium is None or driver_path is None:
        pytest.fail(
            "the browser test needs Debian's chromium and chromium-driver "
            f"(found chromium={chromium}, chromedriver={driver_path}): "
            "apt-get install -y chromium chromium-driver (.ci/run does), or set "
            "TWIN_SKIP_BROWSER=1 to skip this test"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ModuleNotFoundError:
        pytest.fail("selenium is not installed: pip install -e '.[test]'")
    profile = tempfile.mkdtemp(prefix="twin-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1400,1700",
        "--hide-scrollbars",
    ):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def dashboard():
    """``twin dashboard`` on a free port of 127.0.0.1 (the mini facility, no telemetry)."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TWIN_TELEMETRY="")
    cmd = [
        sys.executable,
        "-m",
        "twin.cli",
        "dashboard",
        "--facility",
        str(FACILITY),
        "--port",
        str(port),
    ]
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            proc.kill()
            pytest.fail(
                f"twin dashboard did not start: {log.read().decode(errors='replace')[-3000:]}"
            )
        time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


_PAGE_STATE_JS = """
const q = (sel) => Array.from(document.querySelectorAll(sel));
return {
  body: document.body ? document.body.innerText : "",
  running: q('[data-testid="stStatusWidget"]').some((e) => e.innerText.includes("Running")),
  spinners: q('[data-testid="stSpinner"]').length,
  exceptions: q('[data-testid="stException"]').length,
};
"""


def _page_state(drv) -> dict:
    """Body text, run status, spinners and exceptions read in one script call.

    Streamlit re-renders while it runs, so element handles fetched one call and read the
    next can be stale; one script evaluates the DOM atomically and returns plain values.
    """
    return drv.execute_script(_PAGE_STATE_JS)


def _wait_for(drv, texts: tuple[str, ...], timeout: float) -> str:
    """Wait until the app has finished running and shows every text; return the page text."""
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        state = _page_state(drv)
        body = state["body"]
        if all(t in body for t in texts) and not state["spinners"] and not state["running"]:
            return body
        if "Traceback" in body or state["exceptions"]:
            pytest.fail(f"the page shows an exception:\n{body[-3000:]}")
        time.sleep(0.5)
    missing = [t for t in texts if t not in body]
    pytest.fail(f"page never showed {missing} within {timeout:.0f} s; it shows:\n{body[-3000:]}")


_CLICK_JS = """
const b = Array.from(document.querySelectorAll("button"))
  .find((e) => e.innerText.includes(arguments[0]));
if (b) { b.click(); }
return Boolean(b);
"""


def _run_placement(drv) -> None:
    """Press 'Run the optimizer' (the URL chose the fast policies and a short replay)."""
    _wait_for(drv, ("Placement what-if", "Run the optimizer"), 120)
    # found and clicked in one script call (a handle kept across calls can go stale),
    # retried while Streamlit is still drawing the page
    deadline = time.monotonic() + 30
    while not drv.execute_script(_CLICK_JS, "Run the optimizer"):
        if time.monotonic() > deadline:
            buttons = drv.execute_script(
                "return Array.from(document.querySelectorAll('button')).map((e) => e.innerText);"
            )
            pytest.fail(f"no 'Run the optimizer' button; buttons: {buttons}")
        time.sleep(0.5)


def test_every_page_in_chromium(browser, dashboard):
    update = os.environ.get("TWIN_UPDATE_SCREENSHOTS") == "1"
    shots = DOC_SCREENSHOTS if update else Path(tempfile.mkdtemp(prefix="twin-shots-"))
    shots.mkdir(parents=True, exist_ok=True)
    for page, texts, name in PAGES:
        browser.get(f"{dashboard}/?page={page}")
        if page.startswith("placement"):
            _run_placement(browser)
        body = _wait_for(browser, texts, 240)
        assert "Traceback" not in body
        if name in ("fleet", "hall", "placement", "live"):  # let Vega draw the charts
            time.sleep(2.0)
        out = shots / f"{name}.png"
        assert browser.save_screenshot(str(out)), out
        assert out.stat().st_size > 10_000, f"{out} looks blank"
