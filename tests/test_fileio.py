"""Atomic writes: a file appears complete or not at all, world-readable, with no temporary left behind."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import numpy as np
import pytest

from pixelmine.fileio import (atomic_path, atomic_save_npy, atomic_write_json, atomic_write_text, atomic_writer,
                              json_default, sha256_file)


def test_written_files_are_complete_and_0644(tmp_path):
    target = atomic_write_json(tmp_path / "deep" / "a.json", {"n": np.int64(3), "x": np.float32(0.5),
                                                            "v": np.arange(2), "s": {2, 1}})
    assert json.loads(target.read_text()) == {"n": 3, "x": 0.5, "v": [0, 1], "s": [1, 2]}
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644
    atomic_save_npy(tmp_path / "m.npy", np.eye(2))
    np.testing.assert_array_equal(np.load(tmp_path / "m.npy"), np.eye(2))


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = atomic_write_text(tmp_path / "t.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_writer(target, mode="w") as out:
            out.write("half of the new")
            raise RuntimeError("disk full")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("also half")
            raise KeyboardInterrupt
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]


def test_sha256_file_is_the_sha256_of_the_bytes(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)  # more than one read block
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_json_default_writes_what_results_hold():
    assert json.dumps({"p": np.bool_(True), "t": (1, 2)}, default=json_default) == '{"p": true, "t": [1, 2]}'
