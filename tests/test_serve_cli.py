"""``pixelmine serve`` as a user runs it: a subprocess that binds 127.0.0.1, prints the token, answers."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest
from servekit import free_port

import pixelmine

pytest.importorskip("fastapi")


def test_serve_binds_localhost_prints_a_token_and_answers(tmp_path):
    pixelmine.open_workspace(tmp_path / "ws").close()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PIXELMINE_TOKEN"}
    process = subprocess.Popen([sys.executable, "-m", "pixelmine.cli", "serve", "--workspace", str(tmp_path / "ws"),
                                "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert health.json()["status"] == "ok"
        connections = [c for c in __import__("psutil").Process(process.pid).net_connections() if c.status == "LISTEN"]
        assert [c.laddr.ip for c in connections] == ["127.0.0.1"]
        unauthorised = httpx.post(f"http://127.0.0.1:{port}/labels/{'a' * 64}", json={"action": "accept"})
        assert unauthorised.status_code == 401
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    token_line = next(line for line in output.splitlines() if "web UI:" in line)
    token = token_line.split("#token=")[1].strip()
    assert len(token) >= 24 and "token (for writing" in output


def test_serve_help_has_an_example():
    result = subprocess.run([sys.executable, "-m", "pixelmine.cli", "serve", "-h"], capture_output=True, text=True)
    assert result.returncode == 0 and "pixelmine serve --port 9000" in result.stdout
