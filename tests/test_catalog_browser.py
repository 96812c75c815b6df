"""The rendered catalog in a real browser from file://: Debian's Chromium driven by
Playwright. No server, no network: every asset is local."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from mirror.catalog.render import render
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


def test_wide_tables_scroll_inside_their_box_on_a_phone(browser, site: Path):
    """On a 390-px phone the index table is wider than the screen: it must scroll inside
    its own box (every column reachable), while the page itself does not scroll sideways."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = context.new_page()
        page.goto((site / "index.html").as_uri())
        box = page.locator("section.upstream .scroll").first
        sizes = box.evaluate(
            "b => ({scroll: b.scrollWidth, client: b.clientWidth,"
            " page: document.documentElement.scrollWidth,"
            " view: document.documentElement.clientWidth})"
        )
        assert sizes["page"] <= sizes["view"], sizes  # no sideways scroll of the page
        assert sizes["client"] <= sizes["view"], sizes
        assert sizes["scroll"] > sizes["client"], sizes  # the table is wider: its box scrolls
        box.evaluate("b => { b.scrollLeft = b.scrollWidth; }")
        last = box.locator("thead th").last
        last_box, scroll_box = last.bounding_box(), box.bounding_box()
        assert last_box is not None and scroll_box is not None
        assert last_box["x"] + last_box["width"] <= scroll_box["x"] + scroll_box["width"] + 1
    finally:
        context.close()


_OVERFLOW = """() => {
  const view = document.documentElement.clientWidth;
  const out = [];
  if (document.documentElement.scrollWidth > view) out.push("page");
  for (const table of document.querySelectorAll("table")) {
    let box = table.parentElement;
    while (box && !["auto", "scroll"].includes(getComputedStyle(box).overflowX)) {
      box = box.parentElement;
    }
    if (table.getBoundingClientRect().right > view + 1 && !box) out.push("table");
  }
  return out;
}"""


def test_no_page_scrolls_sideways_on_a_phone(browser, site: Path):
    """Every page of every kind (index, repository, manifest, SIF, stats) fits a 390-px
    screen: a table wider than that scrolls inside its own box."""
    assert _overflowing_on_a_phone(browser, site) == {}


def test_local_image_pages_fit_a_phone(browser, local_catalog, tmp_path: Path):
    """The local images' sections and pages (pushers, signatures, referrers) too."""
    render(local_catalog.config(), tmp_path / "site")
    assert _overflowing_on_a_phone(browser, tmp_path / "site") == {}


def _overflowing_on_a_phone(browser, site: Path) -> dict:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = context.new_page()
        overflowing = {}
        for html in sorted(site.rglob("*.html")):
            page.goto(html.as_uri())
            found = page.evaluate(_OVERFLOW)
            if found:
                overflowing[str(html.relative_to(site))] = found
        return overflowing
    finally:
        context.close()
