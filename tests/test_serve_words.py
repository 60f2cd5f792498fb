"""Text search and zero-shot over HTTP and in the web UI (a real server; Debian's chromium for the UI)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from servekit import CHROMIUM, TOKEN, LiveServer, browser_page, private_workspace

import pixelmine


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = private_workspace(tmp_path_factory, "words")
    with pixelmine.open_workspace(root) as ws:
        ws.extract("mobilenet_v2", progress=False)  # ImageNet tags: what the offline text search reads
    with LiveServer(root) as live:
        live.root = root
        yield live


@pytest.fixture(scope="module")
def query(server):
    """A query that has hits among these made-up images: the ImageNet tag MobileNetV2 gave one of them."""
    with pixelmine.open_workspace(server.root) as ws:
        tags = ws.tags("mobilenet_v2")
    return "a " + next(iter(tags.values()))[0][0]


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def test_search_over_http_equals_the_library(client, server, query):
    answer = client.get("/search", params={"q": query, "k": 5})
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["method"] == "imagenet-concepts" and data["backbone"] == "mobilenet_v2"
    with pixelmine.open_workspace(server.root) as ws:
        expected = ws.search_text(query, 5)
    assert data["hits"] and [h["image_id"] for h in data["hits"]] == [h.image_id for h in expected.hits]
    assert data["concepts"] and data["concepts"][0][0] == expected.concepts[0][0]
    assert client.get("/search", params={"q": ""}).status_code == 422


def test_zero_shot_over_http_needs_the_token_and_is_stored(client):
    body = {"labels": ["cup", "dog"]}
    assert client.post("/zero-shot", json=body).status_code == 401
    answer = client.post("/zero-shot", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["labels"] == ["cup", "dog"] and data["total"] == data["images"] > 0
    probabilities = [p["probability"] for p in data["items"]]
    assert probabilities == sorted(probabilities, reverse=True)
    latest = client.get("/zero-shot", params={"label": "cup", "limit": 5}).json()
    assert latest["run_id"] == data["run_id"] and all(p["label"] == "cup" for p in latest["items"])
    bad = client.post("/zero-shot", json={"labels": ["cup", ""]}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert bad.status_code == 422 and "empty label" in bad.text


pytest.importorskip("playwright.sync_api")


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no chromium; install it with: make browser")
def test_the_search_box_and_the_zero_shot_form_in_a_browser(server, query):
    with browser_page(f"{server.url}/#token={TOKEN}") as page:
        page.fill("#search-input", query)
        page.press("#search-input", "Enter")
        page.wait_for_selector("#search-grid .tile")
        assert "imagenet-concepts" in page.inner_text("#search-method")
        assert page.locator("#search-grid .tile").count() >= 1
        page.fill("#zero-shot-labels", "cup, dog")
        page.click("#zero-shot-form button[type=submit]")
        page.wait_for_selector("#zero-shot-grid .tile")
        assert "run " in page.inner_text("#zero-shot-result")
