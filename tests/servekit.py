"""A served workspace for the API and browser tests: real images through the real pipeline (ingest, tiny_test
features, a logistic-regression model, every finder, clusters and the 2-D map), and a real uvicorn server on
127.0.0.1 in a background thread."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import socket
import threading
import time
from pathlib import Path

from imagefactory import jpeg_with_orientation, photo, save, write

import pixelmine

BACKBONE = "tiny_test"
TOKEN = "test-token-123"
COUNTS = {"a": 16, "b": 16, "c": 10}
ROTATED = "rotated.jpg"  # 80x40 stored, EXIF orientation 6: upright it is 40 wide, 80 high


def build_images(root: Path) -> Path:
    seed = 0
    for label, n in COUNTS.items():
        for k in range(n):
            save(photo(seed, (64, 48)), root / label / f"{label}_{k:03d}.jpg")
            seed += 1
    # An exact copy under a second path, and a near copy (re-encoded at another quality).
    shutil.copy(root / "a" / "a_000.jpg", root / "b" / "copy_of_a_000.jpg")
    save(photo(1, (64, 48)), root / "a" / "near_a_001.jpg", quality=60)
    write(root / "a" / ROTATED, jpeg_with_orientation(photo(99, (80, 40)), 6))
    return root


def shared_base(tmp_path_factory) -> Path:
    """Where the session's one built workspace lives (``ws``) with its source images (``images``)."""
    return tmp_path_factory.getbasetemp() / "serve-shared"


def private_workspace(tmp_path_factory, name: str) -> Path:
    """A copy of the session's built workspace that a test module may change freely."""
    root = tmp_path_factory.mktemp(name) / "ws"
    shutil.copytree(build_workspace(shared_base(tmp_path_factory)), root)
    return root


def build_workspace(base: Path) -> Path:
    """The pipeline's outputs in ``base/ws`` (built once per test session; later calls reuse it)."""
    ws_dir = base / "ws"
    done = base / ".built"
    if done.exists():
        return ws_dir
    images = build_images(base / "images")
    ws = pixelmine.open_workspace(ws_dir)
    ws.ingest(images, labels_from_folders=True, progress=False, workers=1)
    ws.extract(BACKBONE, progress=False)
    ws.train("logreg", backbone=BACKBONE, progress=False, search_budget_s=2.0, bootstrap=50, cv_folds=3)
    ws.discover(backbone=BACKBONE, progress=False)
    ws.discover_clusters(backbone=BACKBONE, map_method="pca")
    ws.close()
    done.touch()
    return ws_dir


def files_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving ``create_app(root, ...)`` on 127.0.0.1:<free port> in a thread."""

    def __init__(self, root: Path, **options):
        import uvicorn

        from pixelmine.serve import create_app

        options.setdefault("backbone", BACKBONE)
        self.app = create_app(root, token=TOKEN, **options)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.app.state.event_streams.stop()  # as pixelmine serve does: open event streams end first
        self.server.should_exit = True
        self.thread.join(timeout=15)


def request(port: int, method: str, path: str, body=None, headers=None, timeout: float = 60):
    """(status, body bytes) of one plain HTTP request to the loopback server on ``port``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


CHROMIUM = os.environ.get("PIXELMINE_CHROMIUM", "/usr/bin/chromium")


@contextlib.contextmanager
def browser_page(url: str, timeout_ms: int = 30_000):
    """A page of Debian's headless chromium (Playwright) opened at ``url``; closed when the block ends."""
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        try:
            page = browser.new_page()
            page.set_default_timeout(timeout_ms)
            page.goto(url)
            yield page
        finally:
            browser.close()
