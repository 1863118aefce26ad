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
import shutil
from pathlib import Path

import pytest

from tests.e2e.tier_helpers import WebApp, graders_pool, starlingpy, tier_status, write_tier_config

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


@pytest.fixture
def web_url(tmp_path):
    """A tier (server + one grader) and the web app; yields the page's URL."""
    database = f"sqlite:///{tmp_path / 'app.db'}"
    config = write_tier_config(tmp_path, pools=graders_pool(database, instances=1))
    web = None
    try:
        up = starlingpy("up", "-c", str(config))
        assert up.returncode == 0, up.stderr
        web = WebApp(database, tier_status(config)["server_address"])
        yield web.url
    finally:
        if web is not None:
            web.stop()
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
