"""Suite-wide settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

# CI runs two xdist workers on two cores. Torch's default of one thread per core in each worker
# oversubscribes the CPUs, and OpenMP's spin-waiting then makes small convolutions up to 100x slower.
# Set before any test module imports torch (torch reads it once, at start-up); subprocesses inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.setdefault("MKL_NUM_THREADS", "1")


CHROMIUM = "/usr/bin/chromium"
"""Debian's chromium: the browser tests drive it through Playwright (never ``playwright install``)."""


@pytest.fixture()
def chromium() -> Iterator[Browser]:
    """A headless Debian chromium under Playwright, closed after the test."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def umask_002() -> Iterator[None]:
    """The umask a shared workstation has: a new file is 0o664, readable by the group."""
    old = os.umask(0o002)
    yield
    os.umask(old)
