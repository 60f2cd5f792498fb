"""Serving throughput: 32 concurrent clients POST demo images to /predict for 30 s on loopback, against the
offline batch throughput of the same model on the same images, measured in the same run.

    .venv/bin/python benchmarks/serve.py [--clients 32] [--seconds 30] [--train-per-class 150]

Set-up (cached in .cache/bench-serve, reused by later runs): a workspace with the first
``--train-per-class`` images of each demo class, MobileNetV2 features, a logistic-regression probe. The
requests use the *other* demo images, which the workspace has never seen, so every request runs the
backbone (no feature-cache hits); each request carries one image, as a production line would send them.

Reported: requests/s, p50/p99 latency, errors, served images/s, offline batch images/s
(``Model.predict`` over the held-out images in one call, in a separate process, before and after the load
test; their mean is the reference, since other work on a shared machine drifts), and their ratio. Clients are threads sending pre-built multipart bodies over
keep-alive connections (http.client), so that they take as little CPU as possible from the server: on a
2-core machine the clients and the server share the CPU, which the ratio includes.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import pixelmine  # noqa: E402
from pixelmine.demo import demo_data_path  # noqa: E402

CACHE = ROOT / ".cache" / "bench-serve"
TOKEN = "bench-token"


def split_demo(train_per_class: int) -> tuple[list[tuple[str, str]], list[str]]:
    """(training (path, label) pairs, held-out paths): the first n files of each class folder, and the rest."""
    train, held_out = [], []
    for folder in sorted(p for p in demo_data_path().iterdir() if p.is_dir()):
        files = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        train += [(f, folder.name) for f in files[:train_per_class]]
        held_out += files[train_per_class:]
    return train, held_out


def prepare_workspace(train: list[tuple[str, str]]) -> Path:
    ws_dir = CACHE / f"ws-{len(train)}"
    done = ws_dir / ".bench-ready"
    if done.exists():
        return ws_dir
    CACHE.mkdir(parents=True, exist_ok=True)
    manifest = CACHE / f"train-{len(train)}.csv"
    with open(manifest, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["path", "label"])
        writer.writerows(train)
    ws = pixelmine.open_workspace(ws_dir)
    print(f"set-up: ingest, extract and train on {len(train)} demo images (cached for later runs)", flush=True)
    ws.ingest(manifest=str(manifest), progress=False)
    ws.extract("mobilenet_v2", progress=False)
    ws.train("logreg", backbone="mobilenet_v2", progress=False, search_budget_s=10.0)
    ws.close()
    done.touch()
    return ws_dir


OFFLINE = """
import json, sys, time
import pixelmine
ws = pixelmine.open_workspace(sys.argv[1])
model = ws.model()
paths = json.loads(sys.argv[2])
model.predict(paths[:8])  # warm-up: backbone weights, ONNX session
start = time.perf_counter()
rows = model.predict(paths, top_k=3)
elapsed = time.perf_counter() - start
print(json.dumps({"images": len(rows), "errors": rows.errors, "seconds": elapsed}))
"""


def offline_batch(ws_dir: Path, paths: list[str]) -> dict:
    result = subprocess.run([sys.executable, "-c", OFFLINE, str(ws_dir), json.dumps(paths)], capture_output=True,
                            text=True, check=True, cwd=ROOT)
    data = json.loads(result.stdout.strip().splitlines()[-1])
    data["images_per_s"] = data["images"] / data["seconds"]
    return data


def multipart(path: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    data = Path(path).read_bytes()
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{Path(path).name}\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def start_server(ws_dir: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "pixelmine.cli", "serve", "--workspace", str(ws_dir), "--port",
                                str(port), "--token", TOKEN, "--quiet"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {process.stderr.read()}")
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("server did not start in 120 s")


def load(port: int, bodies: list[tuple[bytes, str]], clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(k: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        i = k
        mine, failed = [], []
        while time.perf_counter() < stop_at:
            body, content_type = bodies[i % len(bodies)]
            i += clients
            started = time.perf_counter()
            try:
                connection.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
                response = connection.getresponse()
                payload = response.read()
                if response.status != 200:
                    failed.append(f"{response.status}: {payload[:200]!r}")
                else:
                    mine.append(time.perf_counter() - started)
            except (OSError, http.client.HTTPException) as exc:
                failed.append(repr(exc))
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        with lock:
            latencies.extend(mine)
            errors.extend(failed)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {"requests": len(latencies), "errors": len(errors), "error_samples": errors[:3], "seconds": elapsed,
            "rps": len(latencies) / elapsed,
            "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else float("nan")}


def server_metrics(port: int) -> dict:
    """Sums from /metrics: model calls, images, and seconds spent in model calls."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/metrics")
    values = {}
    for line in connection.getresponse().read().decode().splitlines():
        for key in ("pixelmine_predict_batch_size_count", "pixelmine_predict_batch_size_sum",
                    "pixelmine_predict_batch_seconds_sum"):
            if line.startswith(key + " "):
                values[key] = float(line.split()[-1])
    return {"calls": values.get("pixelmine_predict_batch_size_count", 0.0),
            "images": values.get("pixelmine_predict_batch_size_sum", 0.0),
            "model_seconds": values.get("pixelmine_predict_batch_seconds_sum", 0.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--train-per-class", type=int, default=150)
    parser.add_argument("--offline-images", type=int, default=512, help="held-out images in the offline batch")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()

    train, held_out = split_demo(args.train_per_class)
    ws_dir = prepare_workspace(train)
    offline = offline_batch(ws_dir, held_out[:args.offline_images])  # again after the load test: the mean is used
    bodies = [multipart(p) for p in held_out]
    server = start_server(ws_dir, args.port)
    try:
        warm = load(args.port, bodies[:64], 4, 3.0)  # model load and ONNX session before timing
        if warm["errors"]:
            raise SystemExit(f"warm-up failed: {warm['error_samples']}")
        before = server_metrics(args.port)
        served = load(args.port, bodies, args.clients, args.seconds)
        after = server_metrics(args.port)
    finally:
        server.terminate()
        server.wait(timeout=30)
    offline_after = offline_batch(ws_dir, held_out[:args.offline_images])
    offline_rate = (offline["images_per_s"] + offline_after["images_per_s"]) / 2
    ratio = served["rps"] / offline_rate
    calls, images, busy = (after[k] - before[k] for k in ("calls", "images", "model_seconds"))
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; model: logreg probe on mobilenet_v2, {len(train)} training images; "
          f"{len(held_out)} held-out demo images (250x250 JPEG), one per request")
    print(f"{'measure':<38} {'value':>12}")
    print(f"{'-' * 38} {'-' * 12}")
    rows = [("clients x seconds", f"{args.clients} x {args.seconds:g}"),
            ("requests/s (= images/s served)", f"{served['rps']:.1f}"),
            ("latency p50 (ms)", f"{served['p50_ms']:.0f}"),
            ("latency p99 (ms)", f"{served['p99_ms']:.0f}"),
            ("errors", f"{served['errors']}"),
            ("offline batch images/s, before", f"{offline['images_per_s']:.1f}"),
            ("offline batch images/s, after", f"{offline_after['images_per_s']:.1f}"),
            ("ratio served / offline", f"{ratio:.2f}")]
    for name, value in rows:
        print(f"{name:<38} {value:>12}")
    if calls:
        print(f"micro-batching: {images / calls:.1f} images per model call over {int(calls)} calls; model busy "
              f"{100 * busy / served['seconds']:.0f} % of the time at {images / busy:.1f} images/s inside the server")
    if served["errors"]:
        print(f"error samples: {served['error_samples']}")
    print(f"target: 0 errors and ratio >= 0.7: {'met' if served['errors'] == 0 and ratio >= 0.7 else 'NOT met'}")


if __name__ == "__main__":
    main()
