"""Fault tests: a stage killed by SIGKILL leaves no process behind (decode workers, forkservers, pools),
and the same command then resumes to the result an uninterrupted run gives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from faultkit import survivors
from imagefactory import photo, save

pytestmark = pytest.mark.fault


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("orphans") / "images"
    for k in range(400):  # big enough that every stage is still running when it is killed
        save(photo(k, (1200, 900)), root / ("a" if k % 2 else "b") / f"p{k:04d}.jpg")
    return root


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "pixelmine", *map(str, args), "--quiet"]


def _kill_when_workers_run(cmd: list[str], *, min_children: int = 1, timeout_s: float = 120) -> list[int]:
    """Start ``cmd``, wait until it has ``min_children`` descendant processes (its pools are running),
    SIGKILL it, and return the pids of every descendant seen while it ran."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    seen: set[int] = set()
    deadline = time.monotonic() + timeout_s
    try:
        parent = psutil.Process(proc.pid)
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                children = parent.children(recursive=True)
            except psutil.NoSuchProcess:
                break
            seen.update(child.pid for child in children)
            if len(children) >= min_children:
                time.sleep(0.3)  # let the workers take their first tasks
                seen.update(child.pid for child in parent.children(recursive=True))
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the stage finished before it could be killed mid-run"
        assert len(seen) >= min_children, f"the stage started no worker process (saw {sorted(seen)})"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return sorted(seen)


def test_sigkilled_ingest_leaves_no_worker(tmp_path, collection):
    workspace = tmp_path / "ws"
    pids = _kill_when_workers_run(_cli("ingest", collection, "--labels-from-folders", "-w", workspace,
                                       "--workers", "2"), min_children=1)
    assert survivors(pids) == []


def test_sigkilled_extract_leaves_no_worker_and_resumes(tmp_path, collection):
    workspace = tmp_path / "ws"
    subprocess.run(_cli("ingest", collection, "--labels-from-folders", "-w", workspace), check=True)
    pids = _kill_when_workers_run(_cli("extract", "--backbone", "tiny_test", "--workers", "1", "-w", workspace),
                                  min_children=2)  # the forkserver and its decode worker
    assert survivors(pids) == []
    subprocess.run(_cli("extract", "--backbone", "tiny_test", "-w", workspace), check=True)
    reference = tmp_path / "reference"
    subprocess.run(_cli("ingest", collection, "--labels-from-folders", "-w", reference), check=True)
    subprocess.run(_cli("extract", "--backbone", "tiny_test", "-w", reference), check=True)
    import pixelmine

    a = pixelmine.open_workspace(workspace).features("tiny_test")
    b = pixelmine.open_workspace(reference).features("tiny_test")
    assert sorted(a.ids) == sorted(b.ids) and len(a) == 400
    np.testing.assert_allclose(np.asarray(a.vectors)[a.rows(b.ids)], b.vectors, rtol=1e-5, atol=1e-6)


def test_sigkilled_discover_leaves_no_worker(tmp_path, collection):
    workspace = tmp_path / "ws"
    subprocess.run(_cli("ingest", collection, "--labels-from-folders", "-w", workspace), check=True)
    subprocess.run(_cli("extract", "--backbone", "tiny_test", "-w", workspace), check=True)
    pids = _kill_when_workers_run(_cli("discover", "--backbone", "tiny_test", "--workers", "2", "-w", workspace),
                                  min_children=2)  # the pixel-statistics pool
    assert survivors(pids) == []
