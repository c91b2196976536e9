"""Fixtures of the browser tests (``test_browser*.py``): the real server in a thread and Chromium.

The browser tests use Debian's Chromium (``/usr/bin/chromium``) through Playwright; they skip with
the reason when it, Playwright or uvicorn is absent. ``LGGSEG_UPDATE_SCREENSHOTS=1`` makes them
also rewrite the screenshots in ``docs/screenshots/`` that the README shows.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Iterator

import pytest

from tests.integration.browser_support import CHROMIUM, CHROMIUM_ARGS


def _need_browser() -> Any:
    if not CHROMIUM.exists():
        pytest.skip(
            f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium; Playwright cannot download "
            "browsers here)"
        )
    pytest.importorskip("uvicorn")
    pytest.importorskip("httpx")
    return pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """The real app under uvicorn on a free loopback port, in a thread."""
    _need_browser()
    import uvicorn

    from lggseg.serve.app import create_app

    app = create_app()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(15)
    sock.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    sync_api = _need_browser()
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture()
def problems() -> list[str]:
    """Script errors and console errors of the page (CSP violations included); none are expected."""
    return []


@pytest.fixture()
def open_page(browser: Any, server_url: str, problems: list[str]) -> Iterator[Any]:
    """``open_page(width=1280, height=900, path="/")``: a new page, loaded; checked for errors at the end."""
    pages: list[Any] = []

    def make(width: int = 1280, height: int = 900, path: str = "/") -> Any:
        page = browser.new_page(viewport={"width": width, "height": height})
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.goto(server_url + path)
        if path == "/":
            page.wait_for_selector("#model-status[data-state=ready]")
        pages.append(page)
        return page

    yield make
    for page in pages:
        page.close()
    assert problems == [], problems


@pytest.fixture()
def page(open_page: Any) -> Any:
    return open_page()
