"""A real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright, for the page tests.

Never `playwright install`: the tests use the system browser that .ci/run installs with apt, and
skip with a reason where it is missing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Dialog, Page, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
HAVE_CHROMIUM = CHROMIUM.exists()
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


async def launch() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium; .ci/run does)")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, timeout=20_000)
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Watch:
    """What the page did that a test must not miss: alerts, script errors, CSP refusals."""

    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # Console errors a test causes on purpose (e.g. Chromium logs each refused reconnect).
    expected: list[str] = field(default_factory=list)

    async def on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        await dialog.dismiss()

    def on_console(self, message: ConsoleMessage) -> None:
        # Ship renders are blocked on purpose (offline); anything else logged as an error counts.
        if message.type != "error" or "Failed to load resource" in message.text:
            return
        if not any(text in message.text for text in self.expected):
            self.errors.append(message.text)

    def on_page_error(self, error: Exception) -> None:
        self.errors.append(f"uncaught: {error}")


async def new_page(browser: Browser) -> tuple[BrowserContext, Page, Watch]:
    """A fresh context with EVE's image server unreachable, as on a machine without internet."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    await context.route("https://images.evetech.net/**", lambda route: route.abort())
    page = await context.new_page()
    watch = Watch()
    page.on("dialog", watch.on_dialog)
    page.on("console", watch.on_console)
    page.on("pageerror", watch.on_page_error)
    return context, page, watch
