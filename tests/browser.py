"""The Prefect UI in a real headless Chromium (Debian's package), driven by Playwright; no browser download."""

from __future__ import annotations

import shutil
from pathlib import Path

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_available() -> bool:
    return bool(shutil.which("chromium") or shutil.which("chromium-browser"))


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise RuntimeError("Debian's chromium package is needed for the browser test: apt-get install chromium")
    return found


def check_artifact_page(ui_url: str, artifact_id: str, flow_run_id: str, out_dir: Path) -> Path:
    """Open the run's artifacts in the UI; assert the metrics text is shown and the curves image loaded."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1800})
            page.goto(f"{ui_url}/runs/flow-run/{flow_run_id}", wait_until="networkidle")
            page.get_by_text("Artifacts", exact=True).first.click()
            page.get_by_text("run-report").first.wait_for(timeout=60_000)
            page.screenshot(path=str(out_dir / "flow-run-artifacts.png"), full_page=True)

            page.goto(f"{ui_url}/artifacts/artifact/{artifact_id}", wait_until="networkidle")
            page.get_by_text("test accuracy").first.wait_for(timeout=60_000)
            image = page.locator("img[alt='training curves']").first
            image.wait_for(timeout=60_000)
            page.wait_for_function(
                "() => { const i = document.querySelector(\"img[alt='training curves']\");"
                " return i && i.complete && i.naturalWidth > 0; }", timeout=60_000)
            from catsdogs.plots import DPI

            # the chart plot_curves draws (10 x 3.8 inches), decoded whole: not a broken-image icon or a stub
            size = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
            assert size == [10 * DPI, round(3.8 * DPI)], f"the curves image is {size}, not the chart"
            shot = out_dir / "run-report.png"
            page.screenshot(path=str(shot), full_page=True)
            return shot
        finally:
            browser.close()


def check_tables_fit(ui_url: str, artifact_ids: dict[str, str]) -> None:
    """Every table of these artifacts (key: id) fits the artifact pane at desktop width: the UI shows each cell on
    one line, so a wider table is cut off at the pane's edge, with nothing to say that it scrolls."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            too_wide = {}
            for key, artifact_id in artifact_ids.items():
                page.goto(f"{ui_url}/artifacts/artifact/{artifact_id}", wait_until="networkidle")
                page.locator(".artifact-data-view table").first.wait_for(timeout=60_000)
                widths = page.evaluate("() => [...document.querySelectorAll('.artifact-data-view table')]"
                                       ".map(t => [t.scrollWidth, t.parentElement.clientWidth])")
                if any(width > room for width, room in widths):
                    too_wide[key] = widths
            assert not too_wide, f"tables wider than the artifact pane ([table, pane] px): {too_wide}"
        finally:
            browser.close()
