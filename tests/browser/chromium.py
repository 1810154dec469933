"""Chromium through Playwright for the page tests: a desktop and a phone, screenshots, axe.

The ``views`` fixture gives a :class:`Views`: two browser contexts of one Chromium, a
desktop (1200 px wide) and a phone (390 px, ``is_mobile``, so a page without a viewport
meta is laid out 980 px wide, as a phone does). :meth:`Views.check` renders one page in
both, saves a screenshot of each into the artifacts folder, and asserts what every CA page
must have: ``lang`` on <html>, a viewport meta, no critical or serious axe-core violation
(the vendored ``vendor/axe-core/axe.min.js``, injected past the pages' Content Security
Policy, which allows no script), and no horizontal scrolling on the phone.

Screenshots go to ``$CERTWRIGHT_TEST_ARTIFACTS/<test name>/`` (default: ``test-artifacts/``
at the top of the repository, ignored by git) and are kept after the run.

Chromium is Debian's ``/usr/bin/chromium``; the fixture skips when it is missing, and
fails instead when ``CI`` is set.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: Every host name but loopback resolves to nothing: a request leaving the machine fails.
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
ROOT = Path(__file__).resolve().parents[2]
DESKTOP = {"width": 1200, "height": 900}
PHONE = {"width": 390, "height": 844}


def artifacts_dir(test_name: str) -> Path:
    """The folder for one test's screenshots (created, kept after the run)."""
    base = Path(os.environ.get("CERTWRIGHT_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    folder = base / re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def launch(pw: Any, *extra: str) -> Any:
    """Launch Debian's Chromium headless, or skip (fail under CI) when it is missing."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing and CI is set")
        pytest.skip(f"{CHROMIUM} is not installed")
    return pw.chromium.launch(executable_path=str(CHROMIUM), args=[*ARGS, *extra],
                              headless=True)


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """The critical and serious axe-core violations of the page as it is now."""
    page.add_script_tag(path=str(AXE))
    found = page.evaluate("async () => (await axe.run(document, "
                          "{resultTypes: ['violations']})).violations")
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [n["html"] for n in v["nodes"]][:3]}
            for v in found if v["impact"] in ("critical", "serious")]


@dataclass
class Views:
    """A desktop and a phone page of one Chromium; see the module docstring."""

    desktop: Any
    phone: Any
    folder: Path
    shots: list[Path] = field(default_factory=list)

    def check(self, name: str, url: str | None = None) -> None:
        """Render ``url`` in both (or, with no url, the desktop's current page, copied
        into the phone as it is: a POST's answer cannot be fetched twice) and check it."""
        if url is not None:
            for page in (self.desktop, self.phone):
                response = page.goto(url)
                if response is None:
                    raise AssertionError(f"no response for {url}")
        else:
            self.phone.set_content(self.desktop.content())
        for label, page in (("1200", self.desktop), ("390", self.phone)):
            shot = self.folder / f"{name}-{label}.png"
            page.screenshot(path=str(shot), full_page=True)
            self.shots.append(shot)
            assert page.evaluate("document.documentElement.lang") == "en", name
            viewport = page.locator('meta[name="viewport"]')
            assert viewport.count() == 1, f"{name}: no viewport meta"
            assert "width=device-width" in (viewport.get_attribute("content") or "")
            bad = axe_violations(page)
            assert not bad, f"{name} at {label} px: {bad}"
        width = self.phone.evaluate("document.scrollingElement.scrollWidth")
        assert width <= PHONE["width"], f"{name}: {width} px wide on a 390 px phone"


@pytest.fixture
def views(request: pytest.FixtureRequest) -> Iterator[Views]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch(pw, OFFLINE)
        try:
            desktop = browser.new_context(viewport=DESKTOP, bypass_csp=True).new_page()
            phone = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True,
                                        device_scale_factor=2, bypass_csp=True).new_page()
            yield Views(desktop, phone, artifacts_dir(request.node.name))
        finally:
            browser.close()
