"""pixelmine watch: latency from a writer's close to the event, burst drain against offline batch, hostile writers.

    .venv/bin/python benchmarks/watch.py                       # latency, burst, hostile (and drift if present)
    .venv/bin/python benchmarks/watch.py --part latency
    .venv/bin/python benchmarks/watch.py --quick               # a few files, tiny_test backbone: a smoke run

Set-up (cached in --workdir): the demo set (2,000 textile JPEGs, 250x250) ingested with labels, MobileNetV2
features, and ``train("logreg")``. Arriving files are demo images re-encoded (JPEG quality 92, so their
bytes, ids and vectors are new to the workspace: every one is validated *and* embedded), written by real
writers into a watched folder on the same disk; the watch runs in inotify mode in this process.

latency   a writer at --rate files/s (default 10) for --seconds (default 30): each file written to
          ``NAME.part`` and renamed into place, or (every other file) written directly; the clock starts at
          the writer's close or rename and stops when ``ws.watch`` yields the file's event. p50, p95, max.
          Targets: p50 <= 50 ms, p95 <= 150 ms.
burst     500 files renamed into the folder at once: drain time (first rename to last event) and img/s,
          against the offline batch on the same files in a fresh copy of the workspace (``ws.ingest`` +
          ``ws.extract`` + ``model.predict``; also extract + predict alone). Target: watch >= 0.9x offline.
hostile   one run of every hostile writer, with the watcher stopped and started again in the middle: direct
          writes with a pause mid-file, ``.part`` renames, a 50 MB copy in 1 MB pieces, a file deleted right
          after its close, a duplicate by content, a truncated JPEG. Counts partial reads (an event whose
          image id is not the sha256 of the file's final bytes), crashes (exceptions out of the watch) and
          lost files (a written file with no catalogue row at the end, or a deleted one not marked missing).
drift     benchmarks/drift_bench.py's measurements, when that file is present.

The load average is printed at the start and end of each part: numbers from a loaded machine say so.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import pixelmine  # noqa: E402
from pixelmine.demo import demo_data_path  # noqa: E402


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# -- set-up ---------------------------------------------------------------------------------------------
def demo_files(limit: int | None = None) -> list[Path]:
    files = sorted(p for p in demo_data_path().rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if limit is not None:  # an even spread over the classes
        step = max(1, len(files) // limit)
        files = files[::step][:limit]
    return files


def trained_workspace(workdir: Path, backbone: str, limit: int | None) -> tuple[Path, str]:
    """(workspace folder, model name): the demo set ingested, extracted and a logreg trained (cached)."""
    ws_dir = workdir / f"ws-{backbone}-{limit or 'all'}"
    done = ws_dir / ".bench-ready"
    if done.exists():
        return ws_dir, done.read_text().strip()
    shutil.rmtree(ws_dir, ignore_errors=True)
    source = workdir / f"train-{limit or 'all'}"
    if not source.exists():
        for path in demo_files(limit):
            target = source / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    ws = pixelmine.open_workspace(ws_dir)
    ws.ingest(source, labels_from_folders=True, progress=False)
    ws.extract(backbone, progress=False)
    model = ws.train("logreg", backbone=backbone, progress=False, search_budget_s=10.0, bootstrap=100)
    ws.close()
    done.write_text(model.name)
    return ws_dir, model.name


def arrivals(n: int, *, seed: int = 0) -> list[tuple[str, bytes]]:
    """n (name, JPEG bytes) pairs: demo images re-encoded, so that every one is new content."""
    from PIL import Image

    files = demo_files()
    out = []
    for k in range(n):
        path = files[(seed * 7919 + k * 13) % len(files)]
        with Image.open(path) as img:
            buffer = io.BytesIO()
            img.convert("RGB").save(buffer, "JPEG", quality=92, comment=f"bench {seed} {k}".encode())
        out.append((f"{path.parent.name}_{seed}_{k:05d}.jpg", buffer.getvalue()))
    return out


def fresh_copy(ws_dir: Path, workdir: Path, name: str) -> Path:
    target = workdir / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(ws_dir, target)
    return target


def watch_events(ws, inbox: Path, model: str, *, until, timeout_s: float, started: threading.Event | None = None,
                 on_event=None):
    events = []
    stream = ws.watch([inbox], model=model, mode="inotify", timeout_s=timeout_s)
    try:
        for event in stream:
            if on_event is not None:
                on_event(event)
            events.append(event)
            if event["type"] == "watch_started" and started is not None:
                started.set()
            if until(events):
                break
    finally:
        stream.close()
    return events


# -- parts ----------------------------------------------------------------------------------------------
def bench_latency(ws_dir: Path, model: str, workdir: Path, *, rate: float, seconds: float) -> dict:
    ws_path = fresh_copy(ws_dir, workdir, "ws-latency")
    inbox = workdir / "inbox-latency"
    shutil.rmtree(inbox, ignore_errors=True)
    inbox.mkdir()
    files = arrivals(max(1, int(rate * seconds)), seed=1)
    closed_at: dict[str, float] = {}
    yielded_at: dict[str, float] = {}
    started = threading.Event()

    def writer():
        started.wait(120)
        period = 1.0 / rate
        next_at = time.perf_counter()
        for k, (name, data) in enumerate(files):
            target = inbox / name
            if k % 2:
                part = inbox / (name + ".part")
                part.write_bytes(data)
                os.rename(part, target)
            else:
                with open(target, "wb") as handle:
                    handle.write(data)
            closed_at[str(target)] = time.perf_counter()
            next_at += period
            time.sleep(max(0.0, next_at - time.perf_counter()))

    def stamp(event):
        if event["type"] == "image":
            yielded_at.setdefault(event["path"], time.perf_counter())

    received_at: dict[str, float] = {}
    with EventServer(ws_path) as server:  # a real pixelmine server, and a client reading GET /events
        listening = threading.Event()
        reader = threading.Thread(target=read_events, args=(server.url, received_at, listening, len(files)),
                                  daemon=True)
        reader.start()
        listening.wait(30)
        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        with pixelmine.open_workspace(ws_path) as ws:
            watch_events(ws, inbox, model, started=started, on_event=stamp, timeout_s=seconds + 120,
                         until=lambda ev: len(yielded_at) >= len(files))
        thread.join(timeout=10)
        reader.join(timeout=30)
    latencies = [1000 * (yielded_at[p] - closed_at[p]) for p in closed_at if p in yielded_at]
    sse = [1000 * (received_at[p] - closed_at[p]) for p in closed_at if p in received_at]
    return {"files": len(files), "events": len(latencies), "rate": rate,
            "p50_ms": percentile(latencies, 0.5), "p95_ms": percentile(latencies, 0.95), "max_ms": max(latencies),
            "mean_ms": statistics.fmean(latencies),
            "sse_events": len(sse), "sse_p50_ms": percentile(sse, 0.5) if sse else None,
            "sse_p95_ms": percentile(sse, 0.95) if sse else None, "sse_max_ms": max(sse) if sse else None}


class EventServer:
    """``pixelmine serve`` over a workspace, in a thread of this process, on a free loopback port."""

    def __init__(self, root: Path):
        import socket

        import uvicorn

        from pixelmine.serve import create_app

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(root, token="bench")
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.app.state.event_streams.stop()
        self.server.should_exit = True
        self.thread.join(timeout=15)


def read_events(url: str, received_at: dict, listening: threading.Event, expected: int) -> None:
    """Record when each image event arrives through Server-Sent Events (GET /events), by path."""
    import httpx

    with httpx.Client(timeout=httpx.Timeout(10, read=120)) as client:
        with client.stream("GET", url + "/events", params={"type": "image"}) as response:
            listening.set()
            for line in response.iter_lines():
                if line.startswith("data:"):
                    event = json.loads(line[5:])
                    received_at.setdefault(event.get("path"), time.perf_counter())
                    if len(received_at) >= expected:
                        return


def bench_burst(ws_dir: Path, model: str, workdir: Path, *, n: int) -> dict:
    files = arrivals(n, seed=2)
    staging = workdir / "burst-staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for name, data in files:
        (staging / name).write_bytes(data)

    # offline: the same files through the batch commands, in a fresh copy
    offline_ws = fresh_copy(ws_dir, workdir, "ws-burst-offline")
    with pixelmine.open_workspace(offline_ws) as ws:
        backbone = ws.model(model).backbone
        began = time.perf_counter()
        ws.ingest(staging, progress=False)
        ingested = time.perf_counter()
        ws.extract(backbone, progress=False)
        ws.model(model).predict([str(staging)], progress=False)
        offline_s = time.perf_counter() - began
        extract_predict_s = time.perf_counter() - ingested

    # watch: everything renamed in at once
    ws_path = fresh_copy(ws_dir, workdir, "ws-burst-watch")
    inbox = workdir / "inbox-burst"
    shutil.rmtree(inbox, ignore_errors=True)
    inbox.mkdir()
    started = threading.Event()
    first_rename: list[float] = []
    last_event: list[float] = []

    def mover():
        started.wait(120)
        first_rename.append(time.perf_counter())
        for name, _ in files:
            os.rename(staging / name, inbox / name)

    thread = threading.Thread(target=mover, daemon=True)
    thread.start()
    with pixelmine.open_workspace(ws_path) as ws:
        events = watch_events(ws, inbox, model, started=started, timeout_s=600,
                              on_event=lambda e: last_event.append(time.perf_counter()) if e["type"] == "image" else None,
                              until=lambda ev: sum(e["type"] == "image" for e in ev) >= n)
    thread.join(timeout=10)
    drain_s = last_event[-1] - first_rename[0]
    images = [e for e in events if e["type"] == "image"]
    return {"files": n, "events": len(images), "drain_s": drain_s, "watch_img_s": n / drain_s,
            "offline_s": offline_s, "offline_img_s": n / offline_s, "ratio": offline_s / drain_s,
            "extract_predict_img_s": n / extract_predict_s, "ratio_extract_predict": extract_predict_s / drain_s}


def bench_hostile(ws_dir: Path, model: str, workdir: Path, *, big_mb: int, rounds: int) -> dict:
    """Every hostile writer, the watcher restarted halfway; counts partial reads, crashes, lost files."""
    import numpy as np
    from PIL import Image

    ws_path = fresh_copy(ws_dir, workdir, "ws-hostile")
    inbox = workdir / "inbox-hostile"
    shutil.rmtree(inbox, ignore_errors=True)
    inbox.mkdir()
    side = int((big_mb * 1e6 / 3) ** 0.5)
    big = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(
        big, "PNG", compress_level=0)
    big_bytes = big.getvalue()
    final: dict[str, bytes] = {}  # path -> final bytes of every file that should be catalogued
    deleted: list[str] = []
    files = iter(arrivals(8 * rounds, seed=3))
    done = threading.Event()

    def writer():
        for r in range(rounds):
            name, data = next(files)  # direct write, paused mid-file
            path = inbox / name
            with open(path, "wb") as handle:
                handle.write(data[: len(data) // 2])
                handle.flush()
                time.sleep(0.3)
                handle.write(data[len(data) // 2:])
            final[str(path)] = data
            name, data = next(files)  # .part renamed into place
            (inbox / (name + ".part")).write_bytes(data)
            os.rename(inbox / (name + ".part"), inbox / name)
            final[str(inbox / name)] = data
            name, data = next(files)  # deleted right after its close
            (inbox / name).write_bytes(data)
            os.remove(inbox / name)
            deleted.append(str(inbox / name))
            name, data = next(files)  # a duplicate by content
            (inbox / name).write_bytes(data)
            (inbox / ("copy_" + name)).write_bytes(data)
            final[str(inbox / name)] = final[str(inbox / ("copy_" + name))] = data
            name, data = next(files)  # a truncated JPEG
            (inbox / name).write_bytes(data[: len(data) // 3])
            final[str(inbox / name)] = data[: len(data) // 3]
            time.sleep(0.2)
        path = inbox / "big.png"  # a large copy in 1 MB pieces
        with open(path, "wb") as handle:
            for start in range(0, len(big_bytes), 1 << 20):
                handle.write(big_bytes[start:start + (1 << 20)])
                handle.flush()
                time.sleep(0.005)
        final[str(path)] = big_bytes
        done.set()

    crashes = 0
    events: list[dict] = []
    started = threading.Event()
    thread = threading.Thread(target=writer, daemon=True)
    with pixelmine.open_workspace(ws_path) as ws:
        try:  # first watcher: stops halfway through the writer's work
            events += watch_events(ws, inbox, model, started=started, timeout_s=120,
                                   on_event=lambda e: thread.start() if e["type"] == "watch_started" else None,
                                   until=lambda ev: sum(e["type"] == "image" for e in ev) >= 3 * rounds)
        except Exception as exc:  # noqa: BLE001 - counted
            crashes += 1
            print("crash:", type(exc).__name__, exc)
        restarted_while_writing = not done.is_set()
        try:  # second watcher: until the writer is done and everything is accounted for
            def settled(ev):
                seen = {e["path"] for e in events + ev if e["type"] in ("image", "missing")}
                return done.is_set() and set(final) <= seen
            events += watch_events(ws, inbox, model, timeout_s=120, until=settled)
        except Exception as exc:  # noqa: BLE001
            crashes += 1
            print("crash:", type(exc).__name__, exc)
        thread.join(timeout=30)
        rows = ws.catalog.lookup_paths(list(final) + deleted)
    partial = sum(1 for e in events if e["type"] == "image" and e["path"] in final
                  and e["image_id"] != sha(final[e["path"]]))
    lost = sum(1 for p in final if p not in rows or rows[p]["image_id"] != sha(final[p]))
    lost += sum(1 for p in deleted if p in rows and rows[p]["present"])  # a deleted file still shown present
    unrecorded_deletes = sum(1 for p in deleted if p not in rows)
    return {"files": len(final) + len(deleted), "partial_reads": partial, "crashes": crashes, "lost": lost,
            "deleted_unrecorded": unrecorded_deletes, "restarted_while_writing": restarted_while_writing,
            "events": len(events)}


def bench_drift(workdir: Path, quick: bool) -> None:
    try:
        import drift_bench
    except ImportError:
        print("drift: benchmarks/drift_bench.py is not here; skipped")
        return
    result = drift_bench.bench_drift(workdir / "drift", windows=5 if quick else 50, repeats=1 if quick else 5)
    drift_bench.print_result(result)


def table(title: str, result: dict) -> None:
    print(f"\n{title}")
    for key, value in result.items():
        print(f"  {key:<24} {value:.3f}" if isinstance(value, float) else f"  {key:<24} {value}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["latency", "burst", "hostile", "drift", "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="a few files on the tiny_test backbone (a smoke run)")
    parser.add_argument("--rate", type=float, default=10.0, help="latency: files per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="latency: how long the writer writes")
    parser.add_argument("--burst", type=int, default=500, help="burst: files dropped at once")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args(argv)
    backbone, limit = ("tiny_test", 120) if args.quick else ("mobilenet_v2", None)
    seconds, burst, big_mb, rounds = (3.0, 40, 5, 2) if args.quick else (args.seconds, args.burst, 50, 4)
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="pixelmine-bench-watch-"))).resolve()  # events carry absolute paths
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"pixelmine watch benchmark ({'quick' if args.quick else 'full'}); {load()}; workdir {workdir}")
    ws_dir, model = trained_workspace(workdir, backbone, limit)
    print(f"model {model} on {backbone}")
    # drift extracts MobileNetV2 features of the whole demo set: not part of a quick run unless asked for
    everything = ["latency", "burst", "hostile"] + ([] if args.quick else ["drift"])
    parts = everything if args.part == "all" else [args.part]
    if "latency" in parts:
        print(f"\n[latency] {load()}")
        table("latency: writer's close/rename -> event", bench_latency(ws_dir, model, workdir, rate=args.rate,
                                                                         seconds=seconds))
        print(f"  {load()}")
    if "burst" in parts:
        print(f"\n[burst] {load()}")
        table(f"burst of {burst} files", bench_burst(ws_dir, model, workdir, n=burst))
        print(f"  {load()}")
    if "hostile" in parts:
        print(f"\n[hostile] {load()}")
        table("hostile writers, one restart", bench_hostile(ws_dir, model, workdir, big_mb=big_mb, rounds=rounds))
        print(f"  {load()}")
    if "drift" in parts:
        bench_drift(workdir, args.quick)
    print(f"\n{load()}")


if __name__ == "__main__":
    main()
