"""The decode pool: order, bounded read-ahead, and a crash or hang costing one file, not the run."""

from __future__ import annotations

import os

import numpy as np
import pytest

from extractkit import CrashingPath, write_synthetic
from pixelmine.features.decoding import CropSpec, Decoder, decode_chunk

CROP = CropSpec(input_size=32, resize=40, interpolation="bilinear")


@pytest.fixture
def tasks(tmp_path):
    return [(f"id{i}", str(p)) for i, p in enumerate(write_synthetic(tmp_path / "images", 9))]


def _drain(decoder):
    ids, errors, pixels = [], [], []
    for chunk in decoder:
        ids += chunk.ids
        errors += chunk.errors
        pixels.append(chunk.pixels)
    return ids, errors, np.concatenate(pixels)


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_chunks_come_back_in_order_with_the_same_pixels(tasks, workers):
    ids, errors, pixels = _drain(Decoder(tasks, CROP, workers=workers, chunk_size=2))
    assert ids == [t[0] for t in tasks] and errors == []
    assert pixels.shape == (9, 32, 32, 3) and pixels.dtype == np.uint8
    assert np.array_equal(pixels, decode_chunk(tasks, CROP).pixels)


def test_a_crashing_decoder_costs_only_its_file(tasks):
    crasher = ("boom", CrashingPath(tasks[0][1]))
    mixed = tasks[:5] + [crasher] + tasks[5:]
    ids, errors, _ = _drain(Decoder(mixed, CROP, workers=1, chunk_size=2))
    assert ids == [t[0] for t in tasks]
    assert [(e[0], e[2].split(";")[0]) for e in errors] == [("boom", "the image decoder crashed on this file")]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_hanging_decoder_costs_only_its_file(tasks, tmp_path):
    fifo = tmp_path / "never_written.jpg"
    os.mkfifo(fifo)  # opening it for reading blocks forever: a decoder that hangs
    mixed = tasks[:3] + [("hang", str(fifo))] + tasks[3:]
    ids, errors, _ = _drain(Decoder(mixed, CROP, workers=1, chunk_size=2, timeout_s=0.5, grace_s=1.0))
    assert ids == [t[0] for t in tasks]
    assert [e[0] for e in errors] == ["hang"] and "took longer than" in errors[0][2]


def test_unreadable_files_are_errors_not_exceptions(tasks, tmp_path):
    missing = ("gone", str(tmp_path / "nope.jpg"))
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"definitely not an image")
    chunk = decode_chunk([tasks[0], missing, ("bad", str(garbage))], CROP)
    assert chunk.ids == [tasks[0][0]] and chunk.pixels.shape == (1, 32, 32, 3)
    reasons = {e[0]: e[2] for e in chunk.errors}
    assert "gone since it was ingested" in reasons["gone"]
    assert "could not decode the image (UnidentifiedImageError" in reasons["bad"]


def test_workers_that_cannot_start_fall_back_to_a_thread(tasks, monkeypatch):
    from concurrent.futures.process import BrokenProcessPool

    class DeadPool:
        def submit(self, *args, **kwargs):
            from concurrent.futures import Future

            future = Future()
            future.set_exception(BrokenProcessPool("workers died at start-up"))
            return future

        def shutdown(self, **kwargs):
            pass

    decoder = Decoder(tasks, CROP, workers=2, chunk_size=4)
    real = decoder._new_pool
    monkeypatch.setattr(decoder, "_new_pool", lambda: DeadPool() if decoder.workers else real())
    ids, errors, _ = _drain(decoder)
    assert ids == [t[0] for t in tasks] and errors == [] and decoder.workers == 0
