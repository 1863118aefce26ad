"""`starlingpy dashboard` in headless Chromium, over a tier started with
`starlingpy up` (server + one worker of tests/worker/sample_tasks): the
queue charts draw real samples, the workers table shows the supervisor's
processes, and the retry and drop buttons change the failure queue.

Set ``STARLINGPY_DASHBOARD_SCREENSHOT=docs/dashboard.png`` to keep the picture.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from starlingpy.client import Client
from tests.browser.test_page import browser  # noqa: F401 (fixture)
from tests.e2e.tier_helpers import logs, starlingpy, tier_status, write_tier_config
from tests.support import REPO, wait_until
from tests.worker.test_worker_metrics import scrape

_URL = re.compile(r"dashboard on (http://\S+?)/? ")


class Dashboard:
    """``starlingpy dashboard`` as a subprocess; its output drained in a thread."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "starlingpy", "dashboard", "--port", "0", *args],
                                     cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.output: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()
        match = wait_until(lambda: _URL.search("".join(self.output)) or self.proc.poll() is not None,
                           timeout=60, message="the dashboard to listen")
        if self.proc.poll() is not None:
            raise RuntimeError("dashboard did not start:\n" + "".join(self.output))
        self.url = match.group(1)

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture
def tier(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    config = write_tier_config(tmp_path, pools=textwrap.dedent(f"""\
        [pools.samples]
        module = "tests.worker.sample_tasks"
        queues = ["fast"]
        instances = 1
        directory = "{REPO}"
        env = {{ SAMPLE_MARKS = "{marks}" }}
        """))
    try:
        up = starlingpy("up", "-c", str(config))
        assert up.returncode == 0, up.stderr + logs(config)
        yield config, marks
    finally:
        starlingpy("down", "-c", str(config))


def rows(driver, table: str) -> list:
    return driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")


def click(driver, selector: str) -> bool:
    driver.find_element(By.CSS_SELECTOR, selector).click()
    return True


def test_dashboard_charts_workers_and_failure_queue(tier, browser):  # noqa: F811
    config, marks = tier
    from tests.worker import sample_tasks

    address = tier_status(config)["server_address"]
    client = Client([address])
    sample_tasks.tasks.client_factory = lambda: client
    sample_tasks.tasks._client = None
    dashboard = Dashboard("-c", str(config), "--interval", "0.3")
    try:
        for n in range(5):
            client.set("backlog", {"n": n})  # no worker reads it: it stays 5 deep
        first = sample_tasks.tasks.get("flaky").push("a")
        second = sample_tasks.tasks.get("flaky").push("b")
        wait_until(lambda: client.sizeof("failed") == 2, timeout=60, message="two failed messages")

        browser.set_window_size(1200, 1100)
        browser.get(dashboard.url)
        # The page redraws its tables as it polls: an element found may be gone a moment later.
        wait = WebDriverWait(browser, 60, ignored_exceptions=[StaleElementReferenceException])
        backlog = '.queue[data-queue="backlog"]'
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"{backlog} .depth-now")
                   and d.find_element(By.CSS_SELECTOR, f"{backlog} .depth-now").text == "5")

        def depth_points(d) -> list[tuple[float, float]]:
            lines = d.find_elements(By.CSS_SELECTOR, f'{backlog} svg.depth polyline[data-series="depth"]')
            if not lines:
                return []
            text = lines[-1].get_attribute("points")
            return [tuple(map(float, point.split(","))) for point in text.split()]

        points = wait.until(lambda d: len(depth_points(d)) >= 3 and depth_points(d))
        assert len({y for _, y in points[-3:]}) == 1, "a steady depth draws a flat line"
        assert browser.find_elements(By.CSS_SELECTOR, f'{backlog} svg.rate polyline[data-series="in"]')
        # Live: new samples arrive without a reload.
        before = len(depth_points(browser))
        wait.until(lambda d: len(depth_points(d)) > before)

        workers = wait.until(lambda d: [r.text for r in rows(d, "workers")
                                        if r.get_attribute("data-name").startswith("samples")])
        assert "running" in workers[0]
        wait.until(lambda d: any(r.get_attribute("data-name") == "server" for r in rows(d, "workers")))

        wait.until(lambda d: {r.get_attribute("data-id") for r in rows(d, "failed")} == {first, second})
        assert "flaky a is not fixed yet" in browser.find_element(By.ID, "failed").text
        wait.until(lambda d: "RuntimeError" in d.find_element(
            By.CSS_SELECTOR, f'#failed tr[data-id="{first}"] details pre').get_attribute("textContent"))
        shot = os.environ.get("STARLINGPY_DASHBOARD_SCREENSHOT")
        if shot:
            assert browser.save_screenshot(str(Path(shot).resolve()))

        # Retry: back to its queue as a first attempt; now fixed, the worker does it.
        (marks / "fixed-a").touch()
        wait.until(lambda d: click(d, f'#failed tr[data-id="{first}"] button.retry'))
        wait.until(lambda d: {r.get_attribute("data-id") for r in rows(d, "failed")} == {second})
        wait_until(lambda: any(p.name.startswith("flaky-a-") for p in marks.iterdir()), timeout=60,
                   message="the retried message to succeed")
        assert f"retry: {first}" in browser.find_element(By.ID, "failed-action").text

        wait.until(lambda d: click(d, f'#failed tr[data-id="{second}"] button.drop'))
        wait.until(lambda d: not rows(d, "failed"))
        assert client.sizeof("failed") == 0
        assert not any(p.name.startswith("flaky-b-") for p in marks.iterdir()), "dropped is not run"

        # The supervised worker's metrics, served by the dashboard.
        samples = scrape(dashboard.url + "/metrics")
        flaky = {dict(labels)["outcome"]: value for (name, labels), value in samples.items()
                 if name == "starlingpy_worker_messages_total" and dict(labels)["task"] == "flaky"}
        assert flaky == {"failed": 2.0, "succeeded": 1.0}
        assert samples[("starlingpy_pool_workers_alive", (("pool", "samples"),))] == 1
    finally:
        dashboard.stop()
        sample_tasks.tasks.client_factory = None
        sample_tasks.tasks._client = None
        client.close()
