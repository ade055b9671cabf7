"""Browser tests: the system Chromium, driven by Playwright, against the real server.

One gunicorn and one Chromium serve the whole session; every test gets a fresh
page whose JavaScript errors and failed requests are recorded (`problems`). When
a test fails, its page is saved as a screenshot and as HTML under artifacts/.

Nothing here reaches the network: the server listens on 127.0.0.1, Chromium's
own background traffic is switched off, and Xception has no weights (503).
"""

import importlib.util
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ACTION_TIMEOUT_MS = 15_000  # a prediction takes well under a second
HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE / "artifacts"
from benchmarks.live_server import live_server  # noqa: E402

CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root in a container
    "--disable-gpu",
    # No traffic of Chromium's own: the tests must never touch the network.
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]


def why_no_browser():
    """Why the browser tests cannot run on this machine, or None when they can."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"browser tests skipped: Chromium not installed ({CHROMIUM}): apt-get install chromium"
    if importlib.util.find_spec("playwright") is None:
        return ("browser tests skipped: the playwright package is missing: "
                "pip install -r requirements-test.txt (never `playwright install`)")
    return None


NO_BROWSER = why_no_browser()


class SkippedModule(pytest.Module):
    """A test module skipped before it is imported (it imports Playwright)."""

    def collect(self):
        pytest.skip(NO_BROWSER)


def pytest_pycollect_makemodule(module_path, parent):
    # Each browser test module shows up as skipped, with the reason, under `pytest -ra`.
    if NO_BROWSER:
        return SkippedModule.from_parent(parent, path=module_path)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test, so the page fixture knows it failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def server_uploads(tmp_path_factory):
    """The browser tests' server's upload folder."""
    return tmp_path_factory.mktemp("e2e") / "uploads"


@pytest.fixture(scope="session")
def base_url(server_uploads):
    """The production server (gunicorn, committed config) with its own upload folder."""
    with live_server(server_uploads) as url:
        yield url


@pytest.fixture(scope="session")
def playwright_driver():
    from playwright.sync_api import expect, sync_playwright

    # expect() has its own default, 5 s: too short for a result page while the 2-core CI
    # machine also runs pytest and Chromium (a drawing's result page took over 5 s once
    # there, 2026-11-27). Every assertion waits as long as every action.
    expect.set_options(timeout=ACTION_TIMEOUT_MS)
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright_driver):
    # Last run's pictures would mislead: keep only this run's failures.
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    browser = playwright_driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@dataclass
class Problems:
    """What went wrong on a page that a visitor would not see but a developer must.

    A test that provokes an error status on purpose says so with `expect(status)`;
    that status then counts neither as a failed response nor as the console line
    Chromium logs for it ("Failed to load resource: ... status of 415").
    """

    console_errors: list = field(default_factory=list)
    page_errors: list = field(default_factory=list)
    failed_requests: list = field(default_factory=list)
    error_responses: list = field(default_factory=list)
    expected_statuses: set = field(default_factory=set)

    def expect(self, status):
        self.expected_statuses.add(status)

    def on_console(self, message):
        if message.type != "error":
            return
        status = re.search(r"status of (\d{3})", message.text)
        if status and int(status.group(1)) in self.expected_statuses:
            return
        self.console_errors.append(f"{message.text} at {message.location.get('url')}")

    def on_response(self, response):
        if response.status >= 400 and response.status not in self.expected_statuses:
            self.error_responses.append(f"{response.status} {response.request.method} {response.url}")

    def watch(self, page):
        page.on("console", self.on_console)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("requestfailed", lambda request: self.failed_requests.append(
            f"{request.method} {request.url}: {request.failure}"))
        page.on("response", self.on_response)

    def all(self):
        return self.console_errors + self.page_errors + self.failed_requests + self.error_responses


@pytest.fixture
def problems():
    return Problems()


@pytest.fixture
def context_options():
    """Options of the test's browser context; a test overrides it for a phone."""
    return {"viewport": {"width": 1024, "height": 800}}


@pytest.fixture
def page(request, browser, base_url, problems, context_options):
    """A fresh page in a fresh context; saved to artifacts/ if the test fails."""
    context = browser.new_context(base_url=base_url, **context_options)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    page = context.new_page()
    problems.watch(page)
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        save_artifacts(page, problems, request.node.name)
    context.close()


def save_artifacts(page, problems, test_name):
    """The page as the test left it (screenshot, HTML) and what went wrong on it."""
    ARTIFACTS.mkdir(exist_ok=True)
    stem = ARTIFACTS / re.sub(r"[^\w.-]+", "_", test_name)
    Path(f"{stem}.problems.txt").write_text("".join(f"{line}\n" for line in problems.all()))
    try:
        page.screenshot(path=f"{stem}.png", full_page=True)
        Path(f"{stem}.html").write_text(page.content())
    except Exception as exc:  # a crashed page: the test's own failure says more
        Path(f"{stem}.error.txt").write_text(f"could not save the page: {exc}\n")

