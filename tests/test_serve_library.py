"""The library functions behind the routes: browsing, corrections, thumbnails, upload checks (no server)."""

from __future__ import annotations

import io
import shutil

import pytest
from imagefactory import animated, encoded, jpeg_with_orientation, photo, png_16bit_rgb, save, write
from PIL import Image

import pixelmine
from pixelmine import browse
from pixelmine.corrections import (ImageNotFoundError, corrections, effective_labels, ignored_ids,
                                   record_correction)
from pixelmine.errors import InputError, NotFittedError
from pixelmine.thumbnails import make_thumbnail, thumbnail_path
from pixelmine.uploads import UploadError, UploadLimits, accept_upload


@pytest.fixture()
def ws(tmp_path):
    for label, seeds in {"a": range(0, 4), "b": range(10, 13)}.items():
        for seed in seeds:
            save(photo(seed), tmp_path / "src" / label / f"{seed}.jpg")
    shutil.copy(tmp_path / "src" / "a" / "0.jpg", tmp_path / "src" / "b" / "copy.jpg")
    workspace = pixelmine.open_workspace(tmp_path / "ws")
    workspace.ingest(tmp_path / "src", labels_from_folders=True, progress=False, workers=1)
    workspace.src = tmp_path / "src"
    yield workspace
    workspace.close()


def ids_with_label(ws, label):
    return [r["id"] for r in ws.images() if r["label"] == label]


def test_effective_labels_apply_the_newest_correction(ws):
    a1, a2, a3 = ids_with_label(ws, "a")[:3]
    record_correction(ws.catalog, a1, "relabel", "b")
    record_correction(ws.catalog, a1, "relabel", "  c  ")
    record_correction(ws.catalog, a2, "ignore")
    record_correction(ws.catalog, a3, "ignore")
    record_correction(ws.catalog, a3, "accept")  # un-ignore: the newest row wins
    labels = effective_labels(ws.catalog)
    assert labels[a1] == "c" and a2 not in labels and labels[a3] == "a"
    assert effective_labels(ws.catalog, include_ignored=True)[a2] is None
    assert ignored_ids(ws.catalog) == {a2}
    assert [c["new_label"] for c in corrections(ws.catalog, a1)] == ["c", "b"]
    assert ws.catalog.query("SELECT label FROM images WHERE id = ?", (a1,))[0]["label"] == "a"


def test_correction_errors_name_the_problem(ws):
    target = ids_with_label(ws, "b")[0]
    with pytest.raises(ImageNotFoundError, match="no image with id"):
        record_correction(ws.catalog, "0" * 64, "accept")
    with pytest.raises(InputError, match="unknown action 'erase'"):
        record_correction(ws.catalog, target, "erase")
    with pytest.raises(InputError, match="needs the new label"):
        record_correction(ws.catalog, target, "relabel")
    with pytest.raises(InputError, match="takes no label"):
        record_correction(ws.catalog, target, "accept", "x")
    with pytest.raises(InputError, match="control characters"):
        record_correction(ws.catalog, target, "relabel", "a\tb")


def test_listing_filters_by_corrected_label_and_hides_images_gone_from_disk(ws):
    total = browse.list_images(ws)["total"]
    a_ids = ids_with_label(ws, "a")
    record_correction(ws.catalog, a_ids[1], "relabel", "b")
    assert a_ids[1] in {i["id"] for i in browse.list_images(ws, label="b")["items"]}
    assert a_ids[1] not in {i["id"] for i in browse.list_images(ws, label="a")["items"]}
    assert "b" in browse.facets(ws)["labels"]
    (ws.src / "a" / "3.jpg").unlink()  # only copy: the image is gone
    (ws.src / "a" / "0.jpg").unlink()  # one of two copies: the image stays
    ws.ingest(ws.src, labels_from_folders=True, progress=False, workers=1)
    listed = browse.list_images(ws)
    assert listed["total"] == total - 1
    assert all(browse.get_image(ws, i["id"])["paths"][0]["present"] for i in listed["items"])


def test_paging_is_checked(ws):
    with pytest.raises(InputError, match="limit must be between 1 and 500"):
        browse.list_images(ws, limit=501)
    with pytest.raises(InputError, match="offset must be >= 0"):
        browse.list_images(ws, offset=-1)


def test_stages_not_run_yet_name_their_command(ws):
    with pytest.raises(NotFittedError, match="pixelmine report"):
        browse.latest_report(ws)
    with pytest.raises(NotFittedError, match="pixelmine clusters"):
        browse.cluster_map(ws)
    assert browse.list_findings(ws)["items"] == [] and browse.duplicate_groups(ws)["total"] == 1  # the copy


def test_thumbnails_are_cached_upright_and_bounded(ws, tmp_path):
    write(ws.src / "a" / "rotated.jpg", jpeg_with_orientation(photo(5, (120, 60)), 6))
    write(ws.src / "a" / "deep.png", png_16bit_rgb(40, 30))
    write(ws.src / "a" / "anim.gif", animated("GIF"))
    ws.ingest(ws.src, labels_from_folders=True, progress=False, workers=1)
    by_path = {r["path"].rsplit("/", 1)[-1]: r["id"] for r in ws.images()}
    path = thumbnail_path(ws, by_path["rotated.jpg"], 128)
    assert Image.open(path).size == (60, 120) and path.is_relative_to(ws.root / "thumbnails")  # upright, never enlarged
    mtime = path.stat().st_mtime_ns
    assert thumbnail_path(ws, by_path["rotated.jpg"], 128).stat().st_mtime_ns == mtime  # served from the cache
    for name in ("deep.png", "anim.gif"):
        assert Image.open(thumbnail_path(ws, by_path[name], 256)).mode == "RGB"
    with pytest.raises(InputError, match="one of 128, 256, 512"):
        thumbnail_path(ws, by_path["deep.png"], 300)
    with pytest.raises(ImageNotFoundError, match="not an image id"):
        thumbnail_path(ws, "../../etc/passwd", 128)
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    assert Image.open(io.BytesIO(make_thumbnail(encoded(rgba, "PNG"), 128))).getpixel((5, 5)) == (255, 255, 255)


@pytest.mark.parametrize("data, content_type, status", [
    (b"", "image/jpeg", "empty_file"),
    (b"%PDF-1.4 not an image", None, "not_an_image"),
    (encoded(photo(1, (64, 48)), "JPEG"), "text/html", "not_an_image"),
    (encoded(photo(1, (4, 4)), "PNG"), "image/png", "too_small"),
])
def test_uploads_are_validated_like_ingest(tmp_path, data, content_type, status):
    with pytest.raises(UploadError) as caught:
        accept_upload(data, name="../../evil.jpg", content_type=content_type, directory=str(tmp_path))
    assert caught.value.status == status and "evil.jpg" in str(caught.value) and "../" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # refused uploads leave no file behind


def test_accepted_upload_lives_until_discarded(tmp_path):
    upload = accept_upload(encoded(photo(2, (64, 48)), "PNG"), name="x.png", directory=str(tmp_path),
                           limits=UploadLimits(max_bytes=100_000))
    assert upload.format == "PNG" and (upload.width, upload.height) == (64, 48) and len(upload.sha256) == 64
    upload.discard()
    assert list(tmp_path.iterdir()) == []
