"""Export: one ONNX file from the decoded image to class probabilities, equal to Model.predict, runnable
without pixelmine; the resize graph equal to Pillow pixel for pixel; the int8 guard; bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagefactory import photo, save
from learnkit import tinted_workspace

from pixelmine.errors import InputError, NotFittedError

pytest.importorskip("onnxruntime")

FAST = {"search_budget_s": 2.0, "bootstrap": 50, "cv_folds": 3}
TINTS = {"red": (14, (200, 60, 50)), "green": (14, (60, 190, 70)), "blue": (14, (50, 70, 200))}
DOCS = Path(__file__).resolve().parents[1] / "docs" / "deploy.md"


def _session(proto):
    import onnxruntime as ort

    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def _resize_session(input_size, resize, interpolation):
    from onnx import TensorProto, helper

    from pixelmine.deploy.graph import OPSET, GraphBuilder
    from pixelmine.deploy.resize import resize_crop

    g = GraphBuilder()
    g.rename(resize_crop(g, "image", input_size=input_size, resize=resize, interpolation=interpolation), "crop")
    graph = helper.make_graph(g.nodes, "resize", [helper.make_tensor_value_info("image", TensorProto.UINT8,
                                                                                ["n", "h", "w", 3])],
                              [helper.make_tensor_value_info("crop", TensorProto.UINT8, ["n", input_size, input_size, 3])],
                              g.initializers)
    return _session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]))


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_the_resize_graph_equals_pillow_pixel_for_pixel(interpolation):
    from pixelmine.imaging.decode import prepare

    rng = np.random.default_rng(3)
    sizes = [(250, 250), (48, 48), (333, 517), (1999, 1333), (911, 37), (5, 3), (224, 224), (640, 480)]
    for input_size, resize in [(224, 256), (250, 250), (64, 72), (300, 340)]:
        session = _resize_session(input_size, resize, interpolation)
        for width, height in sizes:
            # a photo-like field plus sharp noise: textures are where resamplers disagree most
            pixels = np.asarray(photo(int(rng.integers(1 << 30)), (width, height)), dtype=np.int16)
            pixels = np.clip(pixels + rng.integers(-40, 40, pixels.shape), 0, 255).astype(np.uint8)
            expected = prepare(Image.fromarray(pixels), input_size=input_size, resize=resize,
                               interpolation=interpolation)
            got = session.run(None, {"image": pixels[None]})[0][0]
            assert np.array_equal(got, expected), (input_size, resize, width, height)


@pytest.fixture(scope="module")
def tiny_ws(tmp_path_factory):
    ws = tinted_workspace(tmp_path_factory.mktemp("export"), TINTS)
    ws.extract("tiny_test", progress=False)
    ws.train("logreg", backbone="tiny_test", name="tiny-logreg", progress=False, **FAST)
    ws.train("svm", backbone="tiny_test", name="tiny-svm", progress=False, **FAST)
    ws.train("knn", backbone="tiny_test", name="tiny-knn", progress=False, **FAST)
    yield ws
    ws.close()


def _files(ws, model):
    return [row["path"] for row in model.test_rows()]


def _exported_probabilities(result, paths):
    from pixelmine.deploy.export import ExportedSession, decode_for_export

    sidecar = json.loads(Path(result.sidecar).read_text())
    session = ExportedSession(result.path)
    min_side = sidecar["input"]["jpeg_draft_min_side"]
    return np.stack([session.probabilities(decode_for_export(p, min_side)) for p in paths]), sidecar


def _predicted(model, paths):
    rows = model.predict(paths, top_k=len(model.classes))
    return np.array([[dict((t["label"], t["probability"]) for t in row.top_k)[c] for c in model.classes] for row in rows])


@pytest.mark.parametrize("name", ["tiny-logreg", "tiny-svm"])
def test_an_exported_linear_probe_gives_model_predict_probabilities(tiny_ws, tmp_path, name):
    model = tiny_ws.model(name)
    result = model.export(tmp_path / "out")
    paths = _files(tiny_ws, model)
    got, sidecar = _exported_probabilities(result, paths)
    assert np.abs(got - _predicted(model, paths)).max() <= 1e-4
    assert sidecar["classes"] == model.classes and sidecar["precision"] == "fp32"
    assert sidecar["metrics"]["test"]["n"] == len(paths)
    assert result.parity["max_abs_diff"] <= 1e-4
    assert sidecar["fingerprint"] and sidecar["parts"][0]["backbone"] == "tiny_test"


def test_a_batch_of_same_size_images_runs_in_one_call(tiny_ws, tmp_path):
    from pixelmine.deploy.export import ExportedSession, decode_for_export

    model = tiny_ws.model("tiny-logreg")
    result = model.export(tmp_path / "out")
    paths = _files(tiny_ws, model)[:4]
    images = np.stack([decode_for_export(p, 72) for p in paths])  # the tinted images share one size
    batch = ExportedSession(result.path).run(images)
    assert batch.shape == (4, len(model.classes))
    assert np.abs(batch - _predicted(model, paths)).max() <= 1e-4


def test_the_real_default_backbone_exports_with_parity(tmp_path):
    ws = tinted_workspace(tmp_path, {"red": (8, (200, 60, 50)), "blue": (8, (50, 70, 200))})
    big = tmp_path / "big.jpg"  # a large JPEG: decoded at a reduced size (draft) by both sides
    save(photo(7, (1200, 900)), big)
    ws.extract("mobilenet_v2", progress=False)
    ws.train("logreg", backbone="mobilenet_v2", name="mnv2", progress=False, **FAST)
    model = ws.model("mnv2")
    result = model.export(tmp_path / "out")
    paths = _files(ws, model) + [str(big)]
    got, _ = _exported_probabilities(result, paths)
    assert np.abs(got - _predicted(model, paths)).max() <= 1e-4
    ws.close()


def test_the_documented_example_runs_without_pixelmine(tiny_ws, tmp_path):
    model = tiny_ws.model("tiny-logreg")
    model.export(tmp_path / "out")
    example = re.search(r"```python\n(.*?)```", DOCS.read_text(), re.S).group(1)
    assert len(example.strip().splitlines()) <= 20
    script = tmp_path / "run_export.py"
    script.write_text(example)
    image = _files(tiny_ws, model)[0]
    # pixelmine is installed in this interpreter: a finder placed first makes importing it fail
    guard = ("import sys\n"
             "class NoPixelmine:\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             "        if name.split('.')[0] == 'pixelmine': raise ImportError('pixelmine is blocked here')\n"
             "sys.meta_path.insert(0, NoPixelmine())\n"
             "try:\n    import pixelmine\nexcept ImportError:\n    pass\nelse:\n    raise SystemExit('pixelmine importable')\n"
             f"sys.argv = ['run_export.py', {str(tmp_path / 'out')!r}, {image!r}]\n"
             f"exec(compile(open({str(script)!r}).read(), 'run_export.py', 'exec'))\n")
    done = subprocess.run([sys.executable, "-c", guard], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    expected = model.predict([image])[0]
    label, probability = done.stdout.split()[:2]
    assert label == expected.label
    assert abs(float(probability) - expected.probability) <= 1e-4


def test_a_knn_head_is_not_exportable_and_says_why(tiny_ws, tmp_path):
    with pytest.raises(InputError, match="k-NN head.*vote.*--head logreg"):
        tiny_ws.model("tiny-knn").export(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_unwritable_output_folder_is_a_clear_error(tiny_ws, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match="cannot write the export.*--output"):
        tiny_ws.model("tiny-logreg").export(blocker / "out")


def test_bad_precision_and_drop_are_refused(tiny_ws, tmp_path):
    model = tiny_ws.model("tiny-logreg")
    with pytest.raises(InputError, match="precision"):
        model.export(tmp_path / "a", precision="int4")
    with pytest.raises(InputError, match="max_drop"):
        model.export(tmp_path / "b", max_drop=5)


def test_int8_that_loses_accuracy_is_refused_and_leaves_nothing(tiny_ws, tmp_path):
    """A constructed case: the int8 graph is calibrated on black images only, so every real activation
    saturates its ranges; the guard measures the loss on the test split and refuses the file."""
    from pixelmine import backbones
    from pixelmine.features.onnx_cache import graph_path
    from pixelmine.features.quantize import quantize_int8
    from pixelmine.features.store import FeatureStore

    model = tiny_ws.model("tiny-svm")
    spec = backbones.get("tiny_test")
    black = tmp_path / "black.png"
    Image.new("RGB", (64, 64)).save(black)
    int8 = spec.fingerprint(precision="int8")
    target = FeatureStore(tiny_ws.root, spec.name, int8).dir / "model-int8.onnx"
    quantize_int8(graph_path(spec.fingerprint()), target, spec, [("black", str(black))], fingerprint=int8)
    try:
        with pytest.raises(InputError, match=r"int8 loses .* more than the allowed 0\.000.*--max-drop"):
            model.export(tmp_path / "out", precision="int8", max_drop=0.0)
        assert not (tmp_path / "out" / "model.onnx").exists()
        assert not list((tmp_path / "out").glob(".tmp-*"))
    finally:
        target.unlink()


def test_an_export_folder_is_read_back_or_refused(tiny_ws, tmp_path):
    from pixelmine.deploy.export import read_sidecar

    result = tiny_ws.model("tiny-logreg").export(tmp_path / "out")
    graph, sidecar = read_sidecar(tmp_path / "out")
    assert str(graph) == result.path and sidecar["model"] == "tiny-logreg"
    with pytest.raises(NotFittedError, match="not a pixelmine export"):
        read_sidecar(tmp_path)
