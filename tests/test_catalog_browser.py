"""The rendered catalog in a real browser from file://: Debian's Chromium driven by
Playwright. No server, no network: every asset is local."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from tests.conftest import UPSTREAM_PREFIX
from tests.support.catalog_cache import XSS

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    page = context.new_page()
    requests_made: list[str] = []
    page.on("request", lambda request: requests_made.append(request.url))
    page.requests_made = requests_made
    yield page
    context.close()


def _visible_repositories(page) -> list[str]:
    return page.locator("tr[data-search]:visible th a").all_inner_texts()


def test_search_box_filters_the_list_offline(page, site: Path):
    page.goto((site / "index.html").as_uri())
    everything = _visible_repositories(page)
    assert len(everything) >= 10
    page.get_by_label("Filter").fill("sif")
    assert sorted(_visible_repositories(page)) == [
        "bad/sif",
        "sif/legacy",
        "sif/tool",
        "sif/zeroconfig",
    ]
    page.get_by_label("Filter").fill("tools 2.0")  # every word must match
    assert _visible_repositories(page) == ["tools/beta"]
    page.get_by_label("Filter").fill("arm64")
    assert _visible_repositories(page) == ["multi/app"]
    page.get_by_label("Filter").fill("no-such-image-anywhere")
    assert _visible_repositories(page) == []
    assert page.locator("#no-match").is_visible()
    assert all(url.startswith("file://") for url in page.requests_made)


def test_sif_page_shows_the_definition_file(page, site: Path):
    page.goto((site / "index.html").as_uri())
    page.get_by_role("link", name="sif/tool", exact=True).click()
    page.get_by_role("link", name="1.0", exact=True).first.click()
    definition = page.locator("pre.deffile").inner_text()
    assert definition.startswith("Bootstrap: docker")
    assert "%runscript" in definition


def test_script_in_a_label_does_not_run(page, site: Path):
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    pages = [site / "index.html"] + sorted(
        (site / "r" / UPSTREAM_PREFIX / "hostile" / "labels").glob("*.html")
    )
    for path in pages:
        page.goto(path.as_uri())
        assert page.evaluate("window.__xss") is None
    assert dialogs == []
    assert XSS in page.locator("body").inner_text()
