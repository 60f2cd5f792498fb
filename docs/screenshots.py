"""Make the README's screenshots, docs/report.png and docs/web-ui.png, by driving a real browser.

Refresh them after a change to the report or the web UI:

    .venv/bin/python docs/screenshots.py                       # builds .cache/screenshots-ws on first use
    .venv/bin/python docs/screenshots.py --workspace /tmp/ws   # reuse (or build) another workspace
    git add docs/report.png docs/web-ui.png

What it does:
1. Uses the workspace given (default ``.cache/screenshots-ws``, gitignored). When it has no
   ``reports/report.html`` it runs ``pixelmine demo --workspace DIR`` first (the embedded demo set, which
   needs the ``demo`` extra; a few minutes on a 2-core CPU, nothing on a re-run).
2. Opens ``reports/report.html`` in headless chromium (Playwright, ``executable_path`` = Debian's
   ``/usr/bin/chromium``; install it with ``make browser``; Playwright's own browser download is not used)
   at 1280 x 900 and screenshots the top of the report.
3. Starts ``pixelmine serve`` on a free loopback port as a subprocess, with a random token, waits for
   ``/health``, opens the web UI's review page (outliers and label errors, worst first), screenshots it,
   and stops the server by its PID (always, in a ``finally``).
4. Writes both PNGs palette-quantised (256 colours) so each stays well under 300 KB.

The subprocesses run this checkout's code: ``src/`` is put first on their ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
DEFAULT_WORKSPACE = ROOT / ".cache" / "screenshots-ws"
CHROMIUM = os.environ.get("PIXELMINE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 900}
MAX_BYTES = 300_000  # keep each PNG under this (the repository carries them)


def child_env() -> dict[str, str]:
    """The environment for pixelmine subprocesses: this checkout's src/ first on PYTHONPATH."""
    env = dict(os.environ)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def pixelmine_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pixelmine.cli", *args]


def ensure_workspace(workspace: Path) -> Path:
    """The workspace's report, running the demo into it first when there is none."""
    report = workspace / "reports" / "report.html"
    if not report.exists():
        print(f"no report in {workspace}; running the demo there (a few minutes)...", flush=True)
        subprocess.run(pixelmine_command("demo", "--workspace", str(workspace), "--quiet"), check=True,
                       env=child_env())
    if not report.exists():
        sys.exit(f"the demo ran but {report} is missing; run `pixelmine report --workspace {workspace}`")
    return report


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_server(url: str, process: subprocess.Popen, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"pixelmine serve exited with code {process.returncode} before answering {url}/health")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    sys.exit(f"pixelmine serve did not answer {url}/health within {timeout_s:.0f} s")


def stop(process: subprocess.Popen) -> None:
    """Stop the server by its PID: SIGTERM (uvicorn shuts down cleanly), SIGKILL if it does not exit."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


def save_png(png: bytes, target: Path) -> None:
    """Write a screenshot palette-quantised (far smaller than the browser's truecolour PNG)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    for colours in (256, 128, 64):
        buffer = io.BytesIO()
        image.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            buffer, "PNG", optimize=True)
        if buffer.tell() <= MAX_BYTES:
            break
    target.write_bytes(buffer.getvalue())
    print(f"wrote {target.relative_to(ROOT)} ({buffer.tell() / 1000:.0f} KB, {colours} colours)", flush=True)


def shoot_report(browser, report: Path, target: Path) -> None:
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.goto(report.resolve().as_uri(), wait_until="load")
        # images below the fold are loading="lazy" and never load here: wait for the visible ones only
        page.wait_for_function("[...document.images].filter(i => i.getBoundingClientRect().top < innerHeight)"
                               ".every(i => i.complete)")
        save_png(page.screenshot(full_page=False), target)
    finally:
        context.close()


def shoot_web_ui(browser, workspace: Path, target: Path) -> None:
    port, token = free_port(), secrets.token_urlsafe(16)
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(pixelmine_command("serve", "--workspace", str(workspace), "--host", "127.0.0.1",
                                                "--port", str(port), "--token", token, "--quiet"),
                              env=child_env(), stdout=subprocess.DEVNULL)
    print(f"pixelmine serve started (pid {server.pid}) on {url}", flush=True)
    try:
        wait_for_server(url, server)
        context = browser.new_context(viewport=VIEWPORT)
        try:
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.goto(f"{url}/#token={token}")
            page.goto(f"{url}/#/review?kind=label_issue")
            page.wait_for_selector(".review-item")
            page.wait_for_function("[...document.querySelectorAll('main img')]"
                                   ".filter(i => i.getBoundingClientRect().top < innerHeight)"
                                   ".every(i => i.complete && i.naturalWidth > 0)")
            save_png(page.screenshot(full_page=False), target)
        finally:
            context.close()
    finally:
        stop(server)
        print(f"pixelmine serve (pid {server.pid}) stopped", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, default=DEFAULT_WORKSPACE,
                        help=f"workspace to screenshot; the demo runs into it when it has no report "
                             f"(default: {DEFAULT_WORKSPACE.relative_to(ROOT)})")
    parser.add_argument("--chromium", default=CHROMIUM, help="the chromium executable (default: %(default)s)")
    args = parser.parse_args(argv)
    if not Path(args.chromium).exists():
        sys.exit(f"no chromium at {args.chromium}; install it with: make browser")
    from playwright.sync_api import sync_playwright

    report = ensure_workspace(args.workspace)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, headless=True, args=ARGS)
        try:
            shoot_report(browser, report, DOCS / "report.png")
            shoot_web_ui(browser, args.workspace, DOCS / "web-ui.png")
        finally:
            browser.close()


if __name__ == "__main__":
    main()
