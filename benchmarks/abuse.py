"""The server under abuse: 64 concurrent clients for 60 s mixing ``/predict``, ``/similar``, gallery paging
and thumbnails, while hostile clients send a 1 GiB upload, trickle a body, omit the length, send malformed
multipart and 200 files at once, and 16 clients relabel one image at the same moment. Loopback only; every
loop is bounded in count and time and stops by itself.

    .venv/bin/python benchmarks/abuse.py [--clients 64] [--seconds 60]

Prints the requests answered per endpoint, every status seen, the 5xx count (the target is 0), p50/p99
latency, the server's peak memory (RSS, with its child processes) and whether every relabel was recorded
exactly once. The workspace is benchmarks/serve.py's (built on first use, about a minute).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import platform
import random
import socket
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from serve import TOKEN, multipart, prepare_workspace, split_demo, start_server  # noqa: E402
from servekit import request  # noqa: E402


def hostile_upload(port: int) -> str:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    boundary = uuid.uuid4().hex
    sock.sendall((f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
                  f"Content-Length: {1 << 30}\r\n\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                  f"filename=\"huge.jpg\"\r\n\r\n").encode())
    sent = 0
    try:
        while sent < 64 << 20:
            sock.sendall(b"\0" * 65536)
            sent += 65536
    except OSError:
        pass
    try:
        reply = sock.recv(200).decode("latin-1").split("\r\n")[0]
    except OSError:
        reply = "connection closed"
    sock.close()
    return f"1 GiB upload: {reply or 'connection closed'} after {sent >> 20} MiB"


def trickle(port: int, body: bytes, content_type: str, seconds: float) -> str:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode())
    deadline, sent = time.monotonic() + seconds, 0
    try:
        while time.monotonic() < deadline and sent < len(body):
            sock.sendall(body[sent:sent + 16])
            sent += 16
            time.sleep(0.25)
        reply = sock.recv(200).decode("latin-1").split("\r\n")[0] if sent >= len(body) else "gave up (still open)"
    except OSError as exc:
        reply = f"closed by the server ({type(exc).__name__})"
    sock.close()
    return f"trickle {sent} bytes in {seconds:.0f} s: {reply}"


def odd_bodies(port: int, body: bytes, content_type: str, image_bytes: bytes) -> list[str]:
    boundary = uuid.uuid4().hex
    many = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{k}.jpg\"\r\n\r\n"
                    .encode() + image_bytes + b"\r\n" for k in range(200)) + f"--{boundary}--\r\n".encode()
    cases = {
        "no length (chunked)": dict(body=iter([body[:64], body[64:]]),
                                    headers={"Content-Type": content_type, "Transfer-Encoding": "chunked"}),
        "malformed multipart": dict(body=body, headers={"Content-Type": "multipart/form-data; boundary=nope"}),
        "truncated multipart": dict(body=body[: len(body) // 2], headers={"Content-Type": content_type}),
        "200 files in one request": dict(body=many, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}),
    }
    return [f"{name}: {request(port, 'POST', '/predict', **case)[0]}" for name, case in cases.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()

    train, held_out = split_demo(150)
    ws_dir = prepare_workspace(train)
    bodies = [multipart(p) for p in held_out[:400]]
    server = start_server(ws_dir, args.port)
    process = psutil.Process(server.pid)
    peak = {"rss": 0}
    stop = time.monotonic() + args.seconds
    lock = threading.Lock()
    latencies: dict[str, list[float]] = collections.defaultdict(list)
    statuses: collections.Counter = collections.Counter()
    failures: list[str] = []

    def watch_memory() -> None:
        while time.monotonic() < stop + 5:
            try:
                rss = process.memory_info().rss + sum(c.memory_info().rss for c in process.children(recursive=True))
                peak["rss"] = max(peak["rss"], rss)
            except psutil.Error:
                pass
            time.sleep(0.5)

    try:
        status, data = request(args.port, "GET", "/images?limit=500")
        ids = [item["id"] for item in json.loads(data)["items"]]
        total = json.loads(data)["total"]

        def client(k: int) -> None:
            rng = random.Random(k)
            connection = http.client.HTTPConnection("127.0.0.1", args.port, timeout=60)
            while time.monotonic() < stop:
                kind = rng.choices(["predict", "similar", "gallery", "thumbnail"], weights=[4, 1, 2, 3])[0]
                if kind in ("predict", "similar"):
                    body, content_type = bodies[rng.randrange(len(bodies))]
                    method, path, payload, headers = "POST", f"/{kind}" + ("?k=8" if kind == "similar" else ""), \
                        body, {"Content-Type": content_type}
                elif kind == "gallery":
                    method, path, payload, headers = "GET", f"/images?limit=48&offset={rng.randrange(max(1, total))}", \
                        None, {}
                else:
                    method, path, payload, headers = "GET", f"/images/{rng.choice(ids)}/thumbnail?size=256", None, {}
                started = time.perf_counter()
                try:
                    connection.request(method, path, body=payload, headers=headers)
                    response = connection.getresponse()
                    response.read()
                    with lock:
                        statuses[response.status] += 1
                        latencies[kind].append(time.perf_counter() - started)
                except (OSError, http.client.HTTPException) as exc:
                    with lock:
                        failures.append(f"{kind}: {type(exc).__name__}: {exc}")
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", args.port, timeout=60)
            connection.close()

        threading.Thread(target=watch_memory, daemon=True).start()
        workers = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(args.clients)]
        for worker in workers:
            worker.start()
        time.sleep(min(5.0, args.seconds / 4))
        hostile_notes: list[str] = []
        side = [threading.Thread(target=lambda: hostile_notes.append(hostile_upload(args.port))),
                threading.Thread(target=lambda: hostile_notes.append(trickle(args.port, *bodies[0], 8.0)))]
        for thread in side:
            thread.start()
        image = Path(held_out[0]).read_bytes()
        hostile_notes += odd_bodies(args.port, *bodies[1], image)
        auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        relabel_to = [f"abuse-{uuid.uuid4().hex[:6]}-{k}" for k in range(16)]
        relabel_status: list[int] = []
        relabels = [threading.Thread(target=lambda label=label: relabel_status.append(request(
            args.port, "POST", f"/labels/{ids[0]}", body=json.dumps({"action": "relabel", "label": label}),
            headers=auth)[0])) for label in relabel_to]
        for thread in relabels:
            thread.start()
        for thread in [*relabels, *side, *workers]:
            thread.join(timeout=args.seconds + 120)
        history = json.loads(request(args.port, "GET", f"/labels?image_id={ids[0]}&limit=500")[1])
        recorded = sorted(row["new_label"] for row in history if row["new_label"] in relabel_to)
    finally:
        server.terminate()
        server.wait(timeout=30)
    every = sorted(v for values in latencies.values() for v in values)
    quantile = lambda values, q: 1000 * values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; load average after: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'measure':<44} {'value':>14}")
    print(f"{'-' * 44} {'-' * 14}")
    rows = [("clients x seconds", f"{args.clients} x {args.seconds:g}"),
            *[(f"{kind} answered (p50 / p99 ms)", f"{len(v)} ({statistics.median(v) * 1000:.0f} / "
                                                  f"{quantile(sorted(v), 0.99):.0f})") for kind, v in sorted(latencies.items())],
            ("all requests: p50 / p99 (ms)", f"{quantile(every, 0.5):.0f} / {quantile(every, 0.99):.0f}"),
            ("statuses", " ".join(f"{s}:{n}" for s, n in sorted(statuses.items()))),
            ("5xx", str(sum(n for s, n in statuses.items() if s >= 500))),
            ("connection errors", str(len(failures))),
            ("server peak RSS (with children)", f"{peak['rss'] / 2**20:.0f} MiB"),
            ("relabels answered 200 / recorded once", f"{relabel_status.count(200)}/16, "
                                                       f"{'yes' if recorded == sorted(relabel_to) else 'NO'}")]
    for name, value in rows:
        print(f"{name:<44} {value:>14}")
    for note in hostile_notes:
        print(f"  {note}")
    for failure in failures[:5]:
        print(f"  error: {failure}")
    ok = not failures and all(s < 500 for s in statuses) and recorded == sorted(relabel_to)
    print(f"target: 0 5xx, 0 connection errors, every relabel recorded once: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
