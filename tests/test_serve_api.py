"""The HTTP API against a real uvicorn server on 127.0.0.1: every route, every bad input, no 5xx."""

from __future__ import annotations

import concurrent.futures
import io
import shutil

import httpx
import numpy as np
import pytest
from imagefactory import encoded, photo, png_bomb
from PIL import Image
from servekit import COUNTS, ROTATED, TOKEN, LiveServer, build_workspace, files_digest, shared_base

import pixelmine
from pixelmine.corrections import effective_labels
from pixelmine.uploads import UploadLimits

pytest.importorskip("fastapi")
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMITS = UploadLimits(max_bytes=300_000, max_pixels=4_000_000)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return build_workspace(shared_base(tmp_path_factory))


@pytest.fixture(scope="module")
def server(shared, tmp_path_factory):
    root = tmp_path_factory.mktemp("api") / "ws"
    shutil.copytree(shared, root)
    with LiveServer(root, limits=LIMITS, max_request_bytes=1_000_000) as live:
        live.root = root
        live.images = shared.parent / "images"
        yield live


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def jpeg(seed=3, size=(64, 48)) -> bytes:
    return encoded(photo(seed, size), "JPEG")


def all_images(client) -> list[dict]:
    return client.get("/images", params={"limit": 500}).json()["items"]


# -- reading ----------------------------------------------------------------------------------------------
def test_health_and_metrics(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["images"] == sum(COUNTS.values()) + 2
    text = client.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain")
    assert 'pixelmine_http_requests_total{method="GET",route="/health",status="200"}' in text.text
    assert "# TYPE pixelmine_predict_batch_size histogram" in text.text


def test_images_are_paged_without_overlap(client):
    total = client.get("/images", params={"limit": 1}).json()["total"]
    seen = []
    for offset in range(0, total, 10):
        page = client.get("/images", params={"limit": 10, "offset": offset}).json()
        assert page["total"] == total and page["offset"] == offset
        seen += [item["id"] for item in page["items"]]
    assert len(seen) == len(set(seen)) == total == sum(COUNTS.values()) + 2


def test_filters(client):
    labelled_a = client.get("/images", params={"label": "a", "limit": 500}).json()
    assert labelled_a["total"] >= COUNTS["a"] and all(item["label"] == "a" for item in labelled_a["items"])
    splits = client.get("/facets").json()["splits"]
    assert set(splits) <= {"train", "val", "test"} and splits
    in_test = client.get("/images", params={"split": "test", "limit": 500}).json()
    assert 0 < in_test["total"] < labelled_a["total"] * 3 and {i["split"] for i in in_test["items"]} == {"test"}
    assert client.get("/images", params={"status": "corrupt"}).json()["total"] == 0
    facets = client.get("/facets").json()
    assert "near_duplicate" in facets["findings"] and facets["clusters"]
    near = client.get("/images", params={"finding": "near_duplicate", "limit": 500}).json()
    flagged = {f["image_id"] for f in client.get("/findings", params={"kind": "near_duplicate", "limit": 500}).json()["items"]}
    assert {i["id"] for i in near["items"]} == flagged
    cluster = facets["clusters"][0]
    members = client.get("/images", params={"cluster": cluster, "limit": 500}).json()
    assert 0 < members["total"] <= client.get("/images").json()["total"]
    assert client.get("/images", params={"label": "no-such-label"}).json() == {"total": 0, "limit": 60, "offset": 0,
                                                                                 "items": []}


def test_one_image_in_full(client):
    item = all_images(client)[0]
    full = client.get(f"/images/{item['id']}").json()
    assert full["id"] == item["id"] and full["paths"] and full["findings"]
    assert all(path["path"].startswith("/") for path in full["paths"])
    # the server's backbone tags it, its newest model predicts it (pixelmine show prints the same)
    assert full["tags"]["backbone"] == "tiny_test" and len(full["tags"]["items"]) == 5
    assert full["prediction"]["model"] and full["prediction"]["label"] in COUNTS


def test_thumbnail_is_cached_small_and_upright(client, server):
    rotated = next(r for r in all_images(client)
                   if any(p["path"].endswith(ROTATED) for p in client.get(f"/images/{r['id']}").json()["paths"]))
    response = client.get(f"/images/{rotated['id']}/thumbnail", params={"size": 128})
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(response.content))
    assert thumb.size == (40, 80)  # stored 80x40 with EXIF orientation 6: shown upright
    cached = server.root / "thumbnails" / "128" / rotated["id"][:2] / f"{rotated['id']}.jpg"
    assert cached.read_bytes() == response.content
    assert client.get(f"/images/{rotated['id']}/thumbnail", params={"size": 100}).status_code == 422


def test_findings_duplicates_runs_models_map(client):
    findings = client.get("/findings", params={"kind": "label_issue", "limit": 5}).json()
    scores = [f["score"] for f in findings["items"]]
    assert scores == sorted(scores) and all(f["is_issue"] for f in findings["items"])
    groups = client.get("/duplicates").json()
    kinds = {g["kind"] for g in groups["items"]}
    assert "exact_duplicate" in kinds and all(len(g["images"]) > 1 for g in groups["items"])
    runs = client.get("/runs").json()
    assert {"ingest", "extract", "train", "discover"} <= {r["kind"] for r in runs}
    models = client.get("/models").json()
    assert models[0]["status"] == "ready" and set(models[0]["classes"]) == set(COUNTS)
    points = client.get("/map").json()
    assert points["total"] == len(points["points"]) > 0
    assert {"image_id", "x", "y", "cluster", "label"} <= set(points["points"][0])


def test_suggestions_rank_what_to_label_next_and_export_a_manifest(client):
    unlabelled = client.get("/suggestions", params={"n": 5}).json()
    # the exact copy filed under two classes has conflicting labels: the one unlabelled image
    assert len(unlabelled) == 1 and unlabelled[0]["label"] is None and unlabelled[0]["rank"] == 1
    both = client.get("/suggestions", params={"n": 5, "pool": "all"}).json()
    assert [s["rank"] for s in both] == list(range(1, len(both) + 1)) and len(both) >= 2
    assert all(s["margin"] is not None and s["predicted_label"] for s in both)
    manifest = client.get("/suggestions/manifest", params={"n": 5, "pool": "all"})
    assert manifest.status_code == 200 and manifest.headers["content-type"].startswith("text/csv")
    lines = manifest.text.splitlines()
    assert lines[0] == "path,label" and len(lines) == len(both) + 1
    assert client.get("/suggestions", params={"pool": "everything"}).status_code == 422
    assert client.get("/suggestions", params={"n": 0}).status_code == 422


def test_report_is_409_until_written_then_served(client, server):
    missing = client.get("/report")
    assert missing.status_code == 409 and "pixelmine report" in missing.json()["error"]
    (server.root / "reports").mkdir(exist_ok=True)
    (server.root / "reports" / "report.html").write_text("<html><body>the report</body></html>")
    served = client.get("/report")
    assert served.status_code == 200 and "the report" in served.text


def test_docs_work_offline(client):
    page = client.get("/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/similar", "/images", "/labels/{image_id}", "/metrics"} <= set(schema["paths"])


def test_web_ui_is_served_without_external_urls(client):
    for path in ("/", "/static/app.js", "/static/app.css"):
        response = client.get(path)
        assert response.status_code == 200
        assert "http://" not in response.text and "https://" not in response.text


# -- prediction and search -------------------------------------------------------------------------------
def test_predict_one_and_many(client):
    one = client.post("/predict", files={"file": ("x.jpg", jpeg(), "image/jpeg")})
    assert one.status_code == 200, one.text
    p = one.json()["predictions"][0]
    assert p["file"] == "x.jpg" and p["label"] in COUNTS and 0 <= p["probability"] <= 1
    assert [t["probability"] for t in p["top_k"]] == sorted((t["probability"] for t in p["top_k"]), reverse=True)
    assert p["top_k"][0]["label"] == p["label"] and isinstance(p["uncertain"], bool) and "path" not in p
    many = client.post("/predict", files=[("file", (f"{i}.jpg", jpeg(i), "image/jpeg")) for i in range(5)])
    assert [q["file"] for q in many.json()["predictions"]] == [f"{i}.jpg" for i in range(5)]


def test_concurrent_predictions_all_answer(server):
    def call(i):
        with httpx.Client(base_url=server.url, timeout=120) as c:
            return c.post("/predict", files={"file": (f"{i}.png", encoded(photo(i), "PNG"), "image/png")})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(call, range(16)))
    assert [r.status_code for r in responses] == [200] * 16
    assert [r.json()["predictions"][0]["file"] for r in responses] == [f"{i}.png" for i in range(16)]


def test_similar_finds_the_catalogued_copy(client, server):
    original = next((server.images / "c").glob("*.jpg"))
    response = client.post("/similar", params={"k": 3}, files={"file": ("q.jpg", original.read_bytes(), "image/jpeg")})
    assert response.status_code == 200, response.text
    neighbours = response.json()["neighbors"]
    assert len(neighbours) == 3 and neighbours[0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert neighbours[0]["label"] == "c"


# -- bad input -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("files, status, words", [
    ({"file": ("notes.txt", b"hello, this is text", "text/plain")}, 415, "declared as 'text/plain'"),
    ({"file": ("notes.jpg", b"hello, this is plain text, not an image at all", "image/jpeg")}, 415, "not_an_image"),
    ({"file": ("empty.jpg", b"", "image/jpeg")}, 422, "empty"),
    ({"file": ("cut.jpg", jpeg(5, (200, 150))[:600], "image/jpeg")}, 422, "truncated"),
    ({"file": ("bomb.png", png_bomb(30_000), "image/png")}, 413, "pixel"),
    ({"file": ("big.png", encoded(photo(1, (600, 600)), "BMP"), "image/bmp")}, 413, "limit"),
    ({"other": ("x.jpg", jpeg(), "image/jpeg")}, 422, "named 'file'"),
])
def test_bad_uploads_are_4xx_with_a_reason(client, files, status, words):
    response = client.post("/predict", files=files)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_body_over_the_limit_is_413_even_when_streamed(client):
    declared = client.post("/predict", files={"file": ("big.jpg", b"\xff" * 1_200_000, "image/jpeg")})
    assert declared.status_code == 413 and "limit" in declared.json()["error"]

    def chunks():  # a well-formed multipart part whose data never ends, without a Content-Length
        yield (b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n'
               b"Content-Type: image/jpeg\r\n\r\n")
        for _ in range(30):
            yield b"x" * 65536

    streamed = client.post("/predict", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert streamed.status_code == 413


def test_not_multipart_and_too_many_files(client):
    assert client.post("/predict", json={"file": "x"}).status_code == 422
    assert client.post("/predict", content=b"garbage", headers={"Content-Type": "multipart/form-data"}).status_code < 500
    tiny = encoded(photo(0, (8, 8)), "PNG")
    response = client.post("/predict", files=[("file", (f"{i}.png", tiny, "image/png")) for i in range(65)])
    assert response.status_code == 413 and "at most 64" in response.json()["error"]


@pytest.mark.parametrize("path", [
    "/images/../../etc/passwd", "/images/..%2F..%2Fetc%2Fpasswd/thumbnail", "/static/../catalog.sqlite",
    "/static/..%2F..%2F..%2Fcatalog.py", "/images/" + "0" * 64 + "/thumbnail", "/images/%00/thumbnail",
    "/docs-assets/../../../etc/passwd",
])
def test_no_path_is_taken_from_a_request(client, path):
    response = client.get(path)
    assert response.status_code in (404, 422), (path, response.status_code)
    assert response.headers["content-type"] == "application/json" and "root:x:0:0" not in response.text


def test_unknown_and_malformed_ids(client):
    assert client.get("/images/" + "f" * 64).status_code == 404
    assert client.get("/images/XYZ").status_code == 422
    assert client.get("/images", params={"limit": 0}).status_code == 422
    assert client.get("/images", params={"offset": -1}).status_code == 422
    assert client.get("/images", params={"limit": "many"}).status_code == 422


# -- writing: label corrections ----------------------------------------------------------------------------
def test_corrections_need_the_token(client):
    target = all_images(client)[1]["id"]
    assert client.post(f"/labels/{target}", json={"action": "relabel", "label": "b"}).status_code == 401
    wrong = client.post(f"/labels/{target}", json={"action": "relabel", "label": "b"},
                        headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and "token is wrong" in wrong.json()["error"]


def test_relabel_accept_ignore_are_recorded_and_files_untouched(client, server):
    before = files_digest(server.images)
    items = [i for i in all_images(client) if i["label"] == "c"][:3]
    relabelled, accepted, ignored = (i["id"] for i in items)
    r = client.post(f"/labels/{relabelled}", json={"action": "relabel", "label": "b"}, headers=AUTH)
    assert r.status_code == 200 and r.json()["old_label"] == "c" and r.json()["effective_label"] == "b"
    assert client.post(f"/labels/{accepted}", json={"action": "accept"},
                       headers={"X-Pixelmine-Token": TOKEN}).json()["new_label"] == "c"
    assert client.post(f"/labels/{ignored}", json={"action": "ignore"}, headers=AUTH).json()["ignored"]
    assert client.get(f"/images/{relabelled}").json()["label"] == "b"
    assert client.get(f"/images/{relabelled}").json()["corrections"][0]["action"] == "relabel"
    assert relabelled in {i["id"] for i in client.get("/images", params={"label": "b", "limit": 500}).json()["items"]}
    with pixelmine.open_workspace(server.root) as ws:
        labels = effective_labels(ws.catalog)
        original = ws.catalog.query("SELECT label FROM images WHERE id = ?", (relabelled,))[0]["label"]
    assert labels[relabelled] == "b" and labels[accepted] == "c" and ignored not in labels
    assert original == "c"  # the ingested label stays; the correction is a row on top of it
    assert files_digest(server.images) == before


@pytest.mark.parametrize("body, status, words", [
    ({"action": "relabel"}, 422, "needs the new label"),
    ({"action": "relabel", "label": "   "}, 422, "empty"),
    ({"action": "relabel", "label": "a\nb"}, 422, "control characters"),
    ({"action": "relabel", "label": "x" * 201}, 422, "200"),
    ({"action": "delete"}, 422, "action"),
    ({"action": "ignore", "label": "b"}, 422, "takes no label"),
    ("not json", 422, ""),
])
def test_bad_corrections_are_422(client, body, status, words):
    target = all_images(client)[2]["id"]
    if isinstance(body, str):
        response = client.post(f"/labels/{target}", content=body, headers={**AUTH, "Content-Type": "application/json"})
    else:
        response = client.post(f"/labels/{target}", json=body, headers=AUTH)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_correction_of_an_unknown_image_is_404(client):
    response = client.post("/labels/" + "e" * 64, json={"action": "accept"}, headers=AUTH)
    assert response.status_code == 404 and "no image" in response.json()["error"]


# -- a workspace where the later stages have not run ---------------------------------------------------------
def test_missing_stages_answer_409_naming_the_command(tmp_path):
    ws = pixelmine.open_workspace(tmp_path / "ws")
    ws.close()
    with LiveServer(tmp_path / "ws") as live, httpx.Client(base_url=live.url, timeout=60) as c:
        upload = {"file": ("x.jpg", jpeg(), "image/jpeg")}
        predict = c.post("/predict", files=upload)
        assert predict.status_code == 409 and "pixelmine train" in predict.json()["error"]
        similar = c.post("/similar", files=upload)
        assert similar.status_code == 409 and "pixelmine extract" in similar.json()["error"]
        assert c.get("/map").status_code == 409 and "pixelmine clusters" in c.get("/map").json()["error"]
        assert c.get("/findings").json()["items"] == [] and c.get("/models").json() == []
        assert c.get("/images").json()["total"] == 0


def test_served_probabilities_equal_the_library_s(client, server):
    files = sorted((server.images / "b").glob("*.jpg"))[:3]
    served = client.post("/predict", files=[("file", (f.name, f.read_bytes(), "image/jpeg")) for f in files]).json()
    with pixelmine.open_workspace(server.root) as ws:
        offline = ws.model().predict([str(f) for f in files], top_k=3)
    for s, o in zip(served["predictions"], offline):
        assert s["label"] == o.label and s["image_id"] == o.image_id
        assert s["probability"] == pytest.approx(o.probability, abs=1e-4)
        assert [t["label"] for t in s["top_k"]] == [t["label"] for t in o.top_k]


def test_explanation_of_a_catalogued_image_as_json_and_png(client):
    image_id = client.get("/images", params={"label": "a", "limit": 1}).json()["items"][0]["id"]
    explained = client.get(f"/images/{image_id}/explanation")
    assert explained.status_code == 200, explained.text
    body = explained.json()
    assert body["method"] == "cam" and body["label"] in COUNTS and body["runner_up"] in COUNTS
    grid = np.asarray(body["map"])
    assert grid.shape == tuple(body["grid"]) and 0 <= grid.min() and grid.max() <= 1
    png = client.get(f"/images/{image_id}/explanation", params={"format": "png", "contrastive": "true"})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).format == "PNG"
    wrong_class = client.get(f"/images/{image_id}/explanation", params={"label": "zebra"})
    assert wrong_class.status_code in (400, 422) and "zebra" in wrong_class.text
    assert client.get(f"/images/{'0' * 64}/explanation").status_code == 404


def test_fairness_over_http_measures_saves_and_explains_bad_columns(client, server):
    answer = client.get("/fairness", params={"by": "folder", "min_group": 2})
    assert answer.status_code == 200, answer.text
    data = answer.json()
    report = data["reports"][0]
    assert report["column"] == "folder" and report["label_column"]  # labels come from the folders here
    assert {g["group"] for g in report["groups"]} <= set(COUNTS)
    assert sum(g["n"] for g in report["groups"]) == data["n"]
    saved = next((server.root / "models").glob("*/fairness.json"))
    again = client.get("/fairness", params={"by": "folder", "min_group": 2}).json()
    assert again["run_id"] == data["run_id"] and saved.exists()  # the saved table, not a new run
    bad = client.get("/fairness", params={"by": "nope"})
    assert bad.status_code == 422 and "no metadata column 'nope'" in bad.text and "camera_make" in bad.text
