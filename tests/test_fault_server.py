"""Fault test: one hostile upload must not take /predict down for everyone.

The real ``pixelmine serve`` process on loopback; one client declares a 1 GiB body and streams zeros into it
(the server refuses it with 413 after its limit) while 8 clients keep posting ordinary JPEGs. Every ordinary
request before, during and after the refused one must succeed: no 5xx, no reset. (It used to leave a
prediction thread half-initialised: from then on most requests failed with a 500.)"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
from imagefactory import encoded, photo
from servekit import TOKEN, free_port, private_workspace, request

pytestmark = pytest.mark.fault

CLIENTS = 8
DURATION_S = 12.0  # bounded: the loops stop by themselves
STALL_S = 3.0  # the served app's body timeout: a body that stops arriving this long gets 408


def _multipart(data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@contextlib.contextmanager
def pixelmine_serve(root):
    """``pixelmine serve`` on ``root`` as its own process on a free loopback port; yields the port and stops
    the process (SIGINT, then SIGKILL) however the block ends."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pixelmine", "serve", "-w", str(root), "--port", str(port),
                             "--backbone", "tiny_test", "--body-timeout", str(STALL_S), "--quiet"],
                            env={**os.environ, "PIXELMINE_TOKEN": TOKEN}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"pixelmine serve exited: {proc.stderr.read()}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError("pixelmine serve did not start in 60 s") from None
                time.sleep(0.2)
        yield port
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = private_workspace(tmp_path_factory, "abuse")
    with pixelmine_serve(root) as port:
        yield port


def _hostile_upload(port: int) -> int | None:
    """Declare 1 GiB, stream zeros until the server answers or closes; the status it answered, if any."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    boundary = uuid.uuid4().hex
    head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={boundary}"
            f"\r\nContent-Length: {1 << 30}\r\n\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"huge.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode()
    sock.sendall(head)
    chunk = b"\0" * 65536
    sent = 0
    try:
        while sent < 64 << 20:  # at most 64 MiB: far past any limit, and bounded
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:  # the server closed the connection after answering: expected
        pass
    try:
        reply = sock.recv(4096).decode("latin-1")
    except OSError:
        reply = ""
    finally:
        sock.close()
    return int(reply.split()[1]) if reply.startswith("HTTP/1.1") else None


def test_one_oversized_upload_does_not_break_predict_for_anyone(served):
    port = served
    statuses: list[tuple[float, int]] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + DURATION_S

    def ordinary(seed: int) -> None:
        body, content_type = _multipart(encoded(photo(seed, (250, 250)), "JPEG"))
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < stop:
            try:
                connection.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
                response = connection.getresponse()
                response.read()
                with lock:
                    statuses.append((time.monotonic(), response.status))
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.close()

    threads = [threading.Thread(target=ordinary, args=(k,), daemon=True) for k in range(CLIENTS)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    refused_at = time.monotonic()
    hostile = _hostile_upload(port)
    for thread in threads:
        thread.join(timeout=DURATION_S + 30)
    after = [status for when, status in statuses if when > refused_at]
    assert hostile in (413, None), hostile  # refused (or the connection closed on it), never served
    assert errors == [], errors[:5]
    assert [s for _, s in statuses if s != 200] == []
    assert len(after) >= 20, f"only {len(after)} ordinary requests answered after the refused upload"


def test_hostile_bodies_are_4xx_never_5xx(served):
    port = served
    body, content_type = _multipart(encoded(photo(1, (64, 48)), "JPEG"))
    # a body without a length (chunked transfer encoding)
    chunked = request(port, "POST", "/predict", body=iter([body[:100], body[100:]]),
                       headers={"Content-Type": content_type, "Transfer-Encoding": "chunked"})
    # malformed multipart: the boundary in the header is not the one in the body
    malformed = request(port, "POST", "/predict", body=body,
                         headers={"Content-Type": "multipart/form-data; boundary=not-the-one"})
    # truncated multipart: the closing boundary never comes
    truncated = request(port, "POST", "/predict", body=body[: len(body) // 2],
                         headers={"Content-Type": content_type})
    # 200 uploads in one request
    boundary = uuid.uuid4().hex
    part = encoded(photo(2, (32, 24)), "JPEG")
    many = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{k}.jpg\"\r\n"
                    f"Content-Type: image/jpeg\r\n\r\n".encode() + part + b"\r\n" for k in range(200))
    many += f"--{boundary}--\r\n".encode()
    lots = request(port, "POST", "/predict", body=many,
                    headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    statuses = {"chunked": chunked[0], "malformed": malformed[0], "truncated": truncated[0], "200 files": lots[0]}
    assert all(status < 500 for status in statuses.values()), statuses
    assert statuses["malformed"] >= 400 and statuses["truncated"] >= 400 and statuses["200 files"] >= 400
    assert request(port, "POST", "/predict", body=body, headers={"Content-Type": content_type})[0] == 200


def test_a_trickling_client_does_not_hold_up_the_others(served):
    """One client sends its body a few bytes at a time for 6 s; ordinary requests meanwhile are answered."""
    port = served
    body, content_type = _multipart(encoded(photo(3, (64, 48)), "JPEG"))
    done = threading.Event()

    def trickle() -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            sock.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode())
            deadline = time.monotonic() + 6
            sent = 0
            while time.monotonic() < deadline and sent < len(body) - 10:
                sock.sendall(body[sent:sent + 10])
                sent += 10
                time.sleep(0.2)
        except OSError:
            pass
        finally:
            sock.close()
            done.set()

    slow = threading.Thread(target=trickle, daemon=True)
    slow.start()
    answered = []
    while not done.is_set():
        answered.append(request(port, "POST", "/predict", body=body, headers={"Content-Type": content_type})[0])
    slow.join(timeout=20)
    assert len(answered) >= 5 and set(answered) == {200}, answered


def test_a_stalled_body_gets_408_after_the_body_timeout(served):
    port = served
    body, content_type = _multipart(encoded(photo(4, (64, 48)), "JPEG"))
    sock = socket.create_connection(("127.0.0.1", port), timeout=STALL_S + 10)
    try:
        sock.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:50])
        started = time.monotonic()
        reply = sock.recv(4096).decode("latin-1")  # then nothing more is sent: the body stalls
        waited = time.monotonic() - started
        while "body_stalled" not in reply:
            more = sock.recv(4096).decode("latin-1")
            if not more:
                break
            reply += more
    finally:
        sock.close()
    assert reply.startswith("HTTP/1.1 408") and "body_stalled" in reply, reply[:200]
    assert STALL_S - 0.5 <= waited <= STALL_S + 5


def test_concurrent_relabels_of_one_image_are_each_recorded_once(served):
    import json

    port = served
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    status, data = request(port, "GET", "/images?limit=1")
    image_id = json.loads(data)["items"][0]["id"]
    labels = [f"label-{k}" for k in range(16)]
    results: list[int] = []

    def relabel(label: str) -> None:
        results.append(request(port, "POST", f"/labels/{image_id}",
                                body=json.dumps({"action": "relabel", "label": label}), headers=auth)[0])

    threads = [threading.Thread(target=relabel, args=(label,)) for label in labels]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [200] * 16
    history = json.loads(request(port, "GET", f"/labels?image_id={image_id}&limit=100")[1])
    recorded = [row["new_label"] for row in (history if isinstance(history, list) else history["items"])
                if row["new_label"] in labels]
    assert sorted(recorded) == sorted(labels)  # every relabel exactly once, none lost or doubled


def test_serving_while_ingest_and_extract_write_the_same_workspace(tmp_path_factory):
    """The server keeps answering while ingest and extract write its workspace, and then shows the new
    images (gallery) and finds them (similarity search over the grown features)."""
    import json

    from imagefactory import save

    root = private_workspace(tmp_path_factory, "live-writes")
    new_images = root.parent / "new-images"
    for k in range(60):
        save(photo(500 + k, (64, 48)), new_images / "d" / f"new_{k:03d}.jpg")
    with pixelmine_serve(root) as port:
        status, data = request(port, "GET", "/images?limit=1")
        before = json.loads(data)["total"]
        statuses: list[int] = []
        writing = threading.Event()
        body, content_type = _multipart(encoded(photo(7, (64, 48)), "JPEG"))

        def read_while_writing() -> None:
            while not writing.is_set():
                for method, path, payload, headers in (
                        ("GET", "/images?limit=48", None, {}),
                        ("POST", "/predict", body, {"Content-Type": content_type})):
                    statuses.append(request(port, method, path, body=payload, headers=headers)[0])

        assert request(port, "POST", "/predict", body=body, headers={"Content-Type": content_type})[0] == 200  # warm
        reader = threading.Thread(target=read_while_writing, daemon=True)
        reader.start()
        for args in (["ingest", new_images, "--labels-from-folders"], ["extract", "--backbone", "tiny_test"]):
            done = subprocess.run([sys.executable, "-m", "pixelmine", *map(str, args), "-w", str(root), "--quiet"],
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr
        writing.set()
        reader.join(timeout=60)
        assert len(statuses) >= 4 and set(statuses) == {200}, statuses
        after = json.loads(request(port, "GET", "/images?limit=1")[1])["total"]
        assert after == before + 60
        query, query_type = _multipart((new_images / "d" / "new_007.jpg").read_bytes())
        status, found = request(port, "POST", "/similar?k=1", body=query, headers={"Content-Type": query_type})
        assert status == 200 and json.loads(found)["neighbors"][0]["similarity"] > 0.999  # the new image itself
