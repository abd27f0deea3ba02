"""Debian's chromium driven by Playwright: where the browser is ($LLMSCOPE_CHROMIUM or the PATH; Playwright's own
download is not used), a page that collects its console errors, and the explore page's own waits."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_path() -> str | None:
    """$LLMSCOPE_CHROMIUM, else Debian's chromium on the PATH (Playwright's own download is not used)."""
    given = os.environ.get("LLMSCOPE_CHROMIUM")
    if given:
        return given if Path(given).exists() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """A page with its console errors and uncaught exceptions collected."""

    def __init__(self, browser: Any, width: int = 1280, **options: Any) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": 900}, **options)
        self.requests: list[str] = []
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def script_errors(self) -> list[str]:
        """Console errors other than chromium's own line for a refused or failed request (which a test provokes)."""
        return [e for e in self.errors if not e.startswith("Failed to load resource")]

    def block_network(self) -> None:
        """Abort every request that is not the file itself (and note it)."""
        def route(route: Any) -> None:
            if route.request.url.startswith("file:"):
                route.continue_()
            else:
                self.requests.append(route.request.url)
                route.abort()
        self.context.route("**/*", route)

    def close(self) -> None:
        self.context.close()


def run_prompt(page: Any, text: str) -> None:
    """Type the prompt, press Enter and wait until every panel of that run is drawn."""
    page.wait_for_selector("body[data-done]")  # the first run (the default prompt) is done
    before = page.get_attribute("body", "data-run")
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")
    wait_done(page, before)


def wait_done(page: Any, before: str | None) -> None:
    """Wait until a run started after run `before` has drawn every panel (or said why not)."""
    page.wait_for_function("before => document.body.dataset.run !== before && "
                           "document.body.dataset.done === document.body.dataset.run", arg=before)


def rows(page: Any, selector: str) -> list[dict[str, str]]:
    return page.eval_on_selector_all(selector, "rows => rows.map(r => Object.assign({}, r.dataset))")
