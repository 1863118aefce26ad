"""The reference application's page in a real browser: headless Chromium
(Debian's ``chromium`` + ``chromium-driver``, driven by Selenium) picks a
problem, pastes a program, submits, and sees the verdict appear without a
reload, graded by a real worker of a tier started with ``starlingpy up``.

Skips (with the reason) when chromium, chromedriver or selenium is missing:
    apt-get install -y chromium chromium-driver && pip install -e '.[test]'
Set ``STARLINGPY_SCREENSHOT=docs/screenshot.png`` to save the page as PNG.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from tests.support import REPO

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
INSTALL = "apt-get install -y chromium chromium-driver"

if not CHROMIUM or not CHROMEDRIVER:
    pytest.skip(f"needs Debian's chromium and chromedriver ({INSTALL})", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e '.[test]')")
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

SUM_PROGRAM = "import sys\nprint(sum(int(line) for line in sys.stdin))\n"


def starlingpy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "starlingpy", *args], cwd=REPO, check=False,
                          capture_output=True, text=True, timeout=90)


@pytest.fixture
def web_url(tmp_path):
    """A tier (server + one grader) and the web app; yields the page's URL."""
    database = f"sqlite:///{tmp_path / 'app.db'}"
    config = tmp_path / "tier.toml"
    config.write_text(textwrap.dedent(f"""\
        [server]
        port = 0
        queue_path = "spool"
        sync = "never"
        [supervisor]
        run_dir = "run"
        log_dir = "log"
        [pools.graders]
        module = "workers.tasks"
        queues = ["submissions", "regrades"]
        instances = 1
        directory = "{REPO}"
        env = {{ APP_DATABASE_URL = "{database}" }}
        """))
    web = None
    try:
        up = starlingpy("up", "-c", str(config))
        assert up.returncode == 0, up.stderr
        address = re.search(r"server (\S+)", starlingpy("status", "-c", str(config)).stdout).group(1)
        web = subprocess.Popen([sys.executable, "-m", "client.web", "--port", "0", "--database",
                                database, "--server", address], cwd=REPO, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=dict(os.environ, PYTHONUNBUFFERED="1"))
        line = web.stdout.readline()  # the first line is the address (or a traceback)
        threading.Thread(target=web.stdout.read, daemon=True).start()  # keep the pipe drained
        match = re.search(r"serving on (http://\S+)", line)
        assert match, f"web app did not start: {line}"
        yield match.group(1)
    finally:
        if web is not None:
            web.terminate()
            web.wait(timeout=30)
        starlingpy("down", "-c", str(config))


@pytest.fixture
def browser():
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1000,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_submit_on_the_page_and_see_the_verdict_without_reload(web_url, browser, tmp_path):
    browser.get(web_url)
    wait = WebDriverWait(browser, 90)
    wait.until(lambda d: len(Select(d.find_element(By.ID, "problem")).options) == 3)
    Select(browser.find_element(By.ID, "problem")).select_by_value("sum")
    assert "Print their sum" in browser.find_element(By.ID, "statement").text
    source = browser.find_element(By.ID, "source")
    source.clear()
    source.send_keys(SUM_PROGRAM)
    browser.execute_script("window.notReloaded = true")
    browser.find_element(By.ID, "submit").click()

    verdict = browser.find_element(By.ID, "verdict")
    wait.until(lambda d: verdict.get_attribute("data-status") == "done")
    assert verdict.text == "accepted"
    assert "accepted" in verdict.get_attribute("class")
    assert browser.execute_script("return window.notReloaded") is True, "the page reloaded"
    assert "5000" in browser.find_element(By.ID, "detail").text  # the program's stdout

    shot = Path(os.environ.get("STARLINGPY_SCREENSHOT") or tmp_path / "page.png")
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 1000
