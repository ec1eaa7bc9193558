"""The timeline explorer page (/ui, api/explorer.py) in headless Chromium (Debian's chromium and
chromium-driver, driven by selenium) against a real 3-node cluster: the page loads, finds a timer
created in the test, shows its fired event from the live SSE stream, the leader and the lateness
histogram; a screenshot is saved as an artifact (tmp_path, and $MINOOTS_SCREENSHOT when set)."""
from __future__ import annotations

import json
import os
import shutil
import urllib.request

import pytest

from support import require_tool, start_cluster

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.cluster


@pytest.fixture(autouse=True)
def _browser_installed():
    """Fail with a hint, never skip: the test session installs them (ops/test-prereqs.sh)."""
    if not CHROMIUM:
        require_tool("chromium", "chromium")
    require_tool("chromedriver", "chromium-driver")


def _post(node, path, body, token):
    req = urllib.request.Request(f"http://{node.http}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_the_explorer_shows_a_timer_its_fired_event_and_the_cluster(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    c = start_cluster(tmp_path / "c", http=True)
    driver = None
    try:
        token = c.admin_token()
        leader = c.leader()
        node = c.nodes[leader]
        for i in range(5):                               # a few fired timers for the histogram
            _post(node, "/v1/timers", {"delay": "0.1s", "labels": {"ui": "warmup"}}, token)
        made = _post(node, "/v1/timers", {"delay": "4s", "name": "explorer-demo", "labels": {"ui": "yes"}},
                     token)["timer"]
        page = urllib.request.urlopen(f"http://{node.http}/ui", timeout=30)
        assert page.headers["Content-Type"].startswith("text/html") and "Content-Security-Policy" in page.headers

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=1400,900"):
            options.add_argument(arg)
        driver = webdriver.Chrome(options=options, service=Service(DRIVER))
        driver.get(f"http://{node.http}/ui#token={token}&id={made['id']}")
        # the page re-renders as events arrive: read an element's text inside the wait, which
        # tries again when the element it found was replaced meanwhile (stale)
        from selenium.common.exceptions import StaleElementReferenceException
        wait = WebDriverWait(driver, 90, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,))
        wait.until(lambda d: d.find_elements(By.ID, "tl-state"))
        assert made["id"] in wait.until(lambda d: d.find_element(By.ID, "timeline").text)
        fired = wait.until(lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, '#events li[data-kind="fired"]')])
        assert fired[0].startswith("#") and " fired at " in fired[0]
        wait.until(lambda d: d.find_element(By.ID, "tl-state").text in ("fired", "settled"))
        assert "after its deadline" in wait.until(lambda d: d.find_element(By.ID, "timeline").text)
        wait.until(lambda d: d.find_elements(By.ID, "leader") and d.find_element(By.ID, "leader").text == leader)
        driver.execute_script("histogram()")
        wait.until(lambda d: "timers fired in the last hour" in d.find_element(By.ID, "histogram").text)
        count = int(wait.until(lambda d: d.find_element(By.ID, "histogram").text).split(" timers fired")[0].split()[-1])
        assert count >= 5
        shot = tmp_path / "explorer.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        if os.environ.get("MINOOTS_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["MINOOTS_SCREENSHOT"])
    finally:
        if driver is not None:
            driver.quit()                                # stops chromedriver and the browser it started
        c.stop()
