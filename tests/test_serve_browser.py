"""The web UI in a real browser: Playwright driving Debian's chromium headless against a real server.

Screenshots of every page go to ``test-artifacts/`` (gitignored). Chromium comes from Debian (``make browser``);
Playwright's own browser download is not used.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from imagefactory import encoded, photo
from servekit import COUNTS, TOKEN, LiveServer, private_workspace, shared_base

import pixelmine
from pixelmine.corrections import effective_labels

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = os.environ.get("PIXELMINE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

if not Path(CHROMIUM).exists():  # make test installs it (make browser); a bare pytest run may not have it
    pytest.skip(f"no chromium at {CHROMIUM}; install it with: make browser", allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = private_workspace(tmp_path_factory, "browser")
    with LiveServer(root) as live:
        live.root = root
        live.images = shared_base(tmp_path_factory) / "images"
        yield live


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    requests_elsewhere = []
    page.on("request", lambda r: None if r.url.startswith(server.url) or r.url.startswith(("blob:", "data:"))
            else requests_elsewhere.append(r.url))
    page.goto(f"{server.url}/#token={TOKEN}")
    yield page
    assert not requests_elsewhere, f"the UI reached outside the server: {requests_elsewhere[:5]}"
    context.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"serve-{name}.png"), full_page=False)


def api(server, path):
    return httpx.get(server.url + path, timeout=30).json()


def test_gallery_pages_and_filters(page, server):
    total = api(server, "/images?limit=1")["total"]
    page.wait_for_selector("#gallery-grid .tile")
    assert page.locator("#gallery-count").inner_text() == f"1–{total} of {total}"
    assert page.locator("#gallery-grid .tile").count() == total
    page.wait_for_function("[...document.querySelectorAll('#gallery-grid img')].slice(0, 12).every(i => i.complete && i.naturalWidth > 0)")
    shot(page, "gallery")
    page.select_option("#filter-label", "c")
    page.wait_for_function(f"document.querySelector('#gallery-count').textContent.endsWith('of {COUNTS['c']}')")
    captions = page.locator("#gallery-grid .tile .cap b").all_inner_texts()
    assert captions == ["c"] * COUNTS["c"]
    assert "label=c" in page.url
    shot(page, "gallery-filtered")


def test_duplicate_group_side_by_side_and_detail(page, server):
    page.click("nav >> text=Duplicates")
    page.wait_for_selector(".group .tile")
    first = page.locator(".group").first
    assert first.locator(".tile").count() >= 2
    shot(page, "duplicates")
    first.locator(".tile").first.click()
    page.wait_for_selector("#detail[open] #detail-title")
    assert page.locator("#detail .kv").inner_text().count("/") >= 1
    # what GET /images/{id} knows is shown: the cached tags and the served model's prediction
    assert "tiny_class_" in page.locator("#detail-tags").inner_text()
    assert " by logreg-tiny_test" in page.locator("#detail-prediction").inner_text()
    shot(page, "duplicate-detail")


def test_relabel_in_the_detail_dialog_is_persisted(page, server):
    target = next(i for i in api(server, "/images?label=a&limit=100")["items"])
    page.goto(f"{server.url}/#/gallery?label=a")
    page.wait_for_selector(f'.tile[data-id="{target["id"]}"]')
    page.click(f'.tile[data-id="{target["id"]}"]')
    page.wait_for_selector("#detail[open] #detail-new-label")
    page.fill("#detail-new-label", "b")
    page.click("#detail-relabel")
    page.wait_for_function("document.querySelector('#detail-label').textContent === 'b'")
    assert page.locator("#detail tbody tr.correction").first.inner_text().split("\t")[1:] == ["relabel", "a", "b"]
    shot(page, "relabelled")
    assert api(server, f"/images/{target['id']}")["label"] == "b"
    with pixelmine.open_workspace(server.root) as ws:
        assert effective_labels(ws.catalog)[target["id"]] == "b"
    page.keyboard.press("Escape")
    page.reload()
    page.wait_for_selector("#gallery-grid .tile")
    assert target["id"] not in page.locator("#gallery-grid .tile").evaluate_all("els => els.map(e => e.dataset.id)")


def test_review_label_errors_with_the_keyboard(page, server):
    page.goto(f"{server.url}/#/review?kind=label_issue")
    page.wait_for_selector(".review-item")
    first_two = page.locator(".review-item").evaluate_all("els => els.slice(0, 2).map(e => e.dataset.id)")
    page.locator("main h1").click()  # focus the page, not a form field
    page.keyboard.press("j")
    page.keyboard.press("i")  # ignore the second item
    page.wait_for_function("document.querySelectorAll('.review-item')[1].querySelector('.review-status').textContent === 'ignore'")
    page.keyboard.press("k")
    page.keyboard.press("a")  # accept the first item's current label
    page.wait_for_function("document.querySelectorAll('.review-item')[0].querySelector('.review-status').textContent === 'accept'")
    shot(page, "review")
    assert api(server, f"/images/{first_two[1]}")["correction"] == "ignore"
    assert api(server, f"/images/{first_two[0]}")["correction"] == "accept"


def test_a_slow_page_the_user_left_does_not_paint_over_the_current_one(page, server):
    held = []
    page.route("**/images?*", lambda route: held.append(route))  # the gallery's request hangs until released
    page.goto(f"{server.url}/#/gallery?label=b")
    for _ in range(100):
        if held:
            break
        page.wait_for_timeout(50)
    assert held, "the gallery never asked for its images"
    page.goto(f"{server.url}/#/review?kind=label_issue")
    page.wait_for_selector(".review-item")
    for route in held:
        route.continue_()
    page.unroute("**/images?*")
    page.wait_for_timeout(500)  # time for the released gallery render to (wrongly) paint
    assert page.locator("#gallery-grid").count() == 0
    assert page.locator(".review-item").count() >= 2


def test_detail_view_overlays_where_the_model_looks(page, server):
    target = api(server, "/images?label=c&limit=1")["items"][0]
    page.goto(f"{server.url}/#/gallery?label=c")
    page.click(f'.tile[data-id="{target["id"]}"]')
    page.wait_for_selector("#detail[open] #detail-view")
    page.select_option("#detail-view", "class")
    page.wait_for_function("document.querySelector('#detail-explain-note').textContent.startsWith('cam map of')")
    assert "/explanation?format=png" in page.locator("#detail-image").get_attribute("src")
    assert page.locator("#detail-image").evaluate("img => img.complete && img.naturalWidth >= 256")
    shot(page, "explanation")
    page.select_option("#detail-view", "photo")
    page.wait_for_function("document.querySelector('#detail-image').src.includes('/thumbnail')")


def test_upload_shows_the_prediction_and_similar_images(page, server, tmp_path):
    upload = tmp_path / "upload.jpg"
    upload.write_bytes(encoded(photo(7, (64, 48)), "JPEG"))
    page.click("nav >> text=Predict")
    page.set_input_files("#upload-input", str(upload))
    page.wait_for_selector("#predicted-label")
    assert page.locator("#predicted-label").inner_text() in COUNTS
    page.wait_for_selector("#similar-grid .tile")
    assert page.locator("#similar-grid .tile").count() == 12
    page.wait_for_function("[...document.querySelectorAll('#similar-grid img')].every(i => i.complete && i.naturalWidth > 0)")
    shot(page, "upload")


def test_cluster_map_hover_shows_a_thumbnail(page, server):
    page.click("nav >> text=Cluster map")
    canvas = page.wait_for_selector("#map-canvas")
    box = canvas.bounding_box()
    found = False
    for fy in [i / 24 for i in range(1, 24)]:
        for fx in [i / 40 for i in range(1, 40)]:
            page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
            if page.locator("#hover-card").is_visible():
                found = True
                break
        if found:
            break
    assert found, "no point of the map showed its thumbnail on hover"
    page.wait_for_function("document.querySelector('#hover-card img').naturalWidth > 0")
    shot(page, "map")


def test_label_next_shows_suggestions_and_the_manifest_link(page, server):
    page.click("nav >> text=Label next")
    page.wait_for_selector("#suggest-grid .tile")
    assert page.locator("#suggest-grid .tile").count() == 1  # one unlabelled image (conflicting labels)
    page.select_option("#suggest-pool", "all")
    page.wait_for_function("document.querySelectorAll('#suggest-grid .tile').length > 1")
    captions = page.locator("#suggest-grid .tile .cap").all_inner_texts()
    assert captions[0].startswith("#1") and "margin" in captions[0]
    link = page.locator("#suggest-manifest").get_attribute("href")
    assert link.startswith("/suggestions/manifest?") and "pool=all" in link
    shot(page, "suggest")


def test_runs_and_models_overview(page, server):
    page.click("nav >> text=Runs & models")
    page.wait_for_selector("#models-table tbody tr")
    assert "logreg" in page.locator("#models-table").inner_text()
    kinds = page.locator("#runs-table tbody tr td:nth-child(2)").all_inner_texts()
    assert {"ingest", "extract", "train", "discover"} <= set(kinds)
    shot(page, "overview")


def test_keyboard_reaches_a_tile_and_opens_it(page, server):
    page.wait_for_selector("#gallery-grid .tile")
    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('tile')"):
            break
    assert page.evaluate("document.activeElement.classList.contains('tile')")
    page.keyboard.press("Enter")
    page.wait_for_selector("#detail[open] #detail-title")
    page.keyboard.press("Escape")
    page.wait_for_selector("#detail", state="hidden")


def test_undecodable_images_show_their_status_not_a_broken_picture(page, server, tmp_path):
    from imagefactory import write

    write(tmp_path / "extra" / "broken" / "cut.jpg", encoded(photo(3, (200, 150)), "JPEG")[:700])
    with pixelmine.open_workspace(server.root) as ws:
        ws.ingest(tmp_path / "extra", labels_from_folders=True, progress=False, workers=1)
    page.goto(f"{server.url}/#/gallery?status=truncated")
    page.wait_for_selector("#gallery-grid .tile .no-thumb")
    assert page.locator("#gallery-grid .tile .no-thumb").inner_text() == "truncated"
    page.click("#gallery-grid .tile")
    page.wait_for_selector("#detail[open] .no-thumb")
    assert "ends early" in page.locator("#detail .kv").inner_text()
