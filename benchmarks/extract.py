"""Feature extraction speed: pixelmine end to end vs a naive PyTorch pipeline vs the model alone.

    .venv/bin/python benchmarks/extract.py            # demo set + 500 large JPEGs, ~10 minutes on 2 cores
    .venv/bin/python benchmarks/extract.py --quick    # demo set only, fewer repeats

Measured in one run, interleaved (a, b, c, ... per repeat) and reported as medians over repeats, so a
noisy shared machine shifts all columns together:

(a) pixelmine end to end: ``Workspace.extract()`` on a fresh copy of an ingested workspace whose ONNX
    model is already exported (the export is a one-time cost, reported separately). Timed: the whole call
    -- catalog query, decode pool start, JPEG decoding + resize + crop, inference, top-5 tags, atomic
    shard writes, run record. Not timed: ingest (see benchmarks/ingest.py).
(b) naive baseline: torchvision ``ImageFolder`` + ``Resize(256), CenterCrop(224), ToTensor, Normalize``
    + ``DataLoader(batch_size=32, num_workers=2)`` + the eager torchvision model under
    ``torch.inference_mode()`` (default torch threads), from the same files.
(c) compute bound: pixelmine's fastest backend (ONNX Runtime, same threads and batch size as (a)) on
    pre-decoded uint8 crops held in memory.
Also: pixelmine with ``--backend torch`` (end to end and alone), and the int8 (static QDQ, calibrated)
ONNX model: its speed and what it does to a logistic-regression probe's accuracy on the demo labels.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import pixelmine  # noqa: E402
from pixelmine import backbones  # noqa: E402
from pixelmine.demo import demo_data_path  # noqa: E402
from pixelmine.features.embedder import available_cores  # noqa: E402
from pixelmine.imaging.decode import load_pixels  # noqa: E402

BACKBONE = "mobilenet_v2"


def machine() -> str:
    model = "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        model = fields.get("Model name", model).strip()
        flags = fields.get("Flags", "")
        isa = ", ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile") if f" {f}" in flags)
    except OSError:
        isa = ""
    return f"{available_cores()} cores, {model} ({isa}), {platform.system()}, Python {platform.python_version()}"


def load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


# -- data -----------------------------------------------------------------------------------------
def make_large_jpegs(folder: Path, count: int, size=(1600, 1200)) -> Path:
    """``count`` distinct 1600x1200 JPEGs made from real photos (scikit-image's colour photos and demo
    textiles): random crops, flips and colour gains, upscaled, quality 90, in one class folder."""
    from PIL import Image, ImageOps
    from skimage import data

    target = folder / "photos"
    target.mkdir(parents=True, exist_ok=True)
    sources = [Image.fromarray(getattr(data, n)()).convert("RGB")
               for n in ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")]
    demo = sorted(demo_data_path().rglob("*.jpg"))[::97]
    sources += [Image.open(p).convert("RGB") for p in demo]
    rng = np.random.default_rng(0)
    for i in range(count):
        image = sources[i % len(sources)]
        w, h = image.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = image.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            crop = ImageOps.mirror(crop)
        gains = rng.uniform(0.85, 1.15, 3)
        array = np.clip(np.asarray(crop.resize(size, Image.Resampling.BICUBIC), np.float32) * gains, 0, 255)
        Image.fromarray(array.astype(np.uint8)).save(target / f"large_{i:04d}.jpg", quality=90)
    return folder


def template_workspace(root: Path, images: Path, precision_int8: bool) -> tuple[Path, dict]:
    """An ingested workspace with the ONNX model(s) exported; returns the one-time setup costs."""
    # a cold per-user graph cache of this run's own: the first workspace exports, the second reuses
    os.environ["PIXELMINE_CACHE"] = str(root.parent / "user-cache")
    ws = pixelmine.open_workspace(root)
    ws.ingest(str(images), labels_from_folders=True, progress=False)
    costs = {}
    started = time.perf_counter()
    first = ws.extract(BACKBONE, progress=False)
    costs["first extract incl. ONNX export"] = time.perf_counter() - started
    costs["setup_s, first workspace (weights + export)"] = first.setup_s
    second = pixelmine.open_workspace(root.parent / "second-workspace")
    second.ingest(str(images), labels_from_folders=True, progress=False)
    again = second.extract(BACKBONE, progress=False)
    assert not again.onnx_exported, "the second workspace exported the graph again"
    costs["setup_s, second workspace (graph from the user cache)"] = again.setup_s
    second.close()
    if precision_int8:
        started = time.perf_counter()
        ws.extract(BACKBONE, precision="int8", progress=False)
        costs["first int8 extract incl. calibration"] = time.perf_counter() - started
    # keep the exported models, drop the features so copies start empty
    for shard in root.glob("features/*/*"):
        if not shard.name.startswith("model-"):
            shard.unlink()
    ws.close()
    return root, costs


# -- the measured pipelines ---------------------------------------------------------------------------
def run_pixelmine(template: Path, scratch: Path, **options) -> tuple[float, int]:
    target = scratch / f"ws-{time.monotonic_ns()}"
    shutil.copytree(template, target)
    with pixelmine.open_workspace(target) as ws:
        started = time.perf_counter()
        result = ws.extract(BACKBONE, progress=False, **options)
        elapsed = time.perf_counter() - started
    shutil.rmtree(target)
    assert result.failed == 0 and result.computed > 0
    return result.computed / elapsed, result.computed


def run_naive(images: Path) -> tuple[float, int]:
    import torch
    from torchvision import datasets, transforms
    from torchvision.models import mobilenet_v2

    model = mobilenet_v2()
    model.load_state_dict(torch.load(backbones.get(BACKBONE).locate_weights().path, weights_only=True))
    model.eval()
    transform = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                    transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    started = time.perf_counter()
    loader = torch.utils.data.DataLoader(datasets.ImageFolder(str(images), transform=transform), batch_size=32,
                                         num_workers=2)
    count = 0
    with torch.inference_mode():
        for batch, _ in loader:
            model(batch)
            count += len(batch)
    return count / (time.perf_counter() - started), count


def predecode(images: Path) -> np.ndarray:
    files = sorted(images.rglob("*.jpg"))
    return np.stack([load_pixels(f, input_size=224, resize=256) for f in files])


def run_alone(runner, pixels: np.ndarray, batch_size: int) -> tuple[float, int]:
    runner.run(pixels[:batch_size])  # warm-up: first-call allocations
    started = time.perf_counter()
    for start in range(0, len(pixels), batch_size):
        runner.run(pixels[start:start + batch_size])
    return len(pixels) / (time.perf_counter() - started), len(pixels)


class _Alone:
    """The network alone on pre-decoded crops, through the embedder pixelmine itself runs."""

    def __init__(self, embedder):
        self.embedder = embedder

    def run(self, pixels: np.ndarray):
        out = self.embedder.embed_pixels(pixels)
        return out.features, out.logits

    def close(self) -> None:
        self.embedder.close()


def runners(template: Path, threads: int, with_int8: bool) -> dict:
    from pixelmine.features.embedder import Embedder

    spec = backbones.get(BACKBONE)
    found = {"onnx": _Alone(Embedder(spec, threads=threads)),
             "torch": _Alone(Embedder(spec, backend="torch", threads=threads, device="cpu"))}
    if with_int8:
        found["int8"] = _Alone(Embedder(spec, precision="int8", threads=threads, workspace_root=template))
    return found


# -- the probe ------------------------------------------------------------------------------------------
def probe_accuracy(vectors: np.ndarray, labels: np.ndarray, repeats: int = 5) -> list[float]:
    """Test accuracy of a standardised logistic regression on ``repeats`` stratified 70/30 splits (the
    same splits for every call, so two feature sets can be compared split by split)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedShuffleSplit
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scores = []
    for train, test in StratifiedShuffleSplit(repeats, test_size=0.3, random_state=0).split(vectors, labels):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.5))
        scores.append(model.fit(vectors[train], labels[train]).score(vectors[test], labels[test]))
    return scores


def features_with(runner, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
    return np.concatenate([runner.run(pixels[i:i + batch_size])[0] for i in range(0, len(pixels), batch_size)])


# -- driver -------------------------------------------------------------------------------------------
def bench_set(name: str, images: Path, scratch: Path, *, repeats: int, batch_size: int, with_int8: bool,
              extra: bool) -> list[dict]:
    print(f"\n[{name}] preparing (ingest, ONNX export{', int8 calibration' if with_int8 else ''}) ...", flush=True)
    template, costs = template_workspace(scratch / f"template-{name}", images, with_int8)
    for key, value in costs.items():
        print(f"  one-time: {key}: {value:.1f} s")
    threads = available_cores()
    pixels = predecode(images)
    found = runners(template, threads, with_int8)
    plan = {
        "a: pixelmine end to end (onnx fp32)": lambda: run_pixelmine(template, scratch, batch_size=batch_size),
        "b: naive ImageFolder+DataLoader+eager": lambda: run_naive(images),
        "c: ONNX Runtime alone, pre-decoded": lambda: run_alone(found["onnx"], pixels, batch_size),
    }
    if extra:
        plan["pixelmine end to end (--backend torch)"] = lambda: run_pixelmine(template, scratch, backend="torch",
                                                                               batch_size=batch_size)
        plan["eager torch alone, pre-decoded"] = lambda: run_alone(found["torch"], pixels, batch_size)
    if with_int8:
        plan["pixelmine end to end (onnx int8)"] = lambda: run_pixelmine(template, scratch, precision="int8",
                                                                         batch_size=batch_size)
        plan["ONNX Runtime int8 alone, pre-decoded"] = lambda: run_alone(found["int8"], pixels, batch_size)
    speeds: dict[str, list[float]] = {key: [] for key in plan}
    counts = {}
    for repeat in range(repeats):
        for key, job in plan.items():
            speed, count = job()
            speeds[key].append(speed)
            counts[key] = count
        print(f"  repeat {repeat + 1}/{repeats}: " + ", ".join(f"{v[-1]:.0f}" for v in speeds.values())
              + f" img/s (load {load()})", flush=True)
    rows = [{"set": name, "what": key, "images": counts[key], "median": statistics.median(v), "runs": v}
            for key, v in speeds.items()]
    a, b, c = (statistics.median(speeds[k]) for k in list(plan)[:3])
    per_repeat_ab = [x / y for x, y in zip(speeds[list(plan)[0]], speeds[list(plan)[1]])]
    per_repeat_ac = [x / y for x, y in zip(speeds[list(plan)[0]], speeds[list(plan)[2]])]
    rows.append({"set": name, "what": "ratio a/b", "value": a / b, "runs": per_repeat_ab})
    rows.append({"set": name, "what": "ratio a/c", "value": a / c, "runs": per_repeat_ac})
    if with_int8 and name == "demo":
        labels = np.array([p.parent.name for p in sorted(images.rglob("*.jpg"))])
        fp32 = probe_accuracy(features_with(found["onnx"], pixels), labels)
        int8 = probe_accuracy(features_with(found["int8"], pixels), labels)
        cosine = _cosines(features_with(found["onnx"], pixels), features_with(found["int8"], pixels))
        paired = [i - f for i, f in zip(int8, fp32)]
        rows.append({"set": name, "what": "probe accuracy fp32", "value": (np.mean(fp32), np.std(fp32))})
        rows.append({"set": name, "what": "probe accuracy int8", "value": (np.mean(int8), np.std(int8))})
        rows.append({"set": name, "what": "probe accuracy int8 - fp32 (same splits)",
                     "value": (np.mean(paired), np.std(paired))})
        rows.append({"set": name, "what": "int8 vs fp32 feature cosine (min / median)", "value": cosine})
    for runner in found.values():
        runner.close()
    return rows


def _cosines(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.min()), float(np.median(cos))


def render(rows: list[dict]) -> str:
    lines = [f"{'set':<6} {'measurement':<44} {'images':>6} {'img/s (median)':>15}  runs"]
    for row in rows:
        if "median" in row:
            runs = " ".join(f"{r:.0f}" for r in row["runs"])
            lines.append(f"{row['set']:<6} {row['what']:<44} {row['images']:>6} {row['median']:>15.1f}  {runs}")
        elif isinstance(row["value"], tuple) and row["what"].startswith("probe"):
            mean, std = row["value"]
            lines.append(f"{row['set']:<6} {row['what']:<44} {'':>6} {mean:>+15.3f}  +/- {std:.3f} (5 splits)"
                         if "-" in row["what"] else
                         f"{row['set']:<6} {row['what']:<44} {'':>6} {mean:>15.3f}  +/- {std:.3f} (5 splits)")
        elif isinstance(row["value"], tuple):
            lines.append(f"{row['set']:<6} {row['what']:<44} {'':>6} {row['value'][0]:>8.4f} / {row['value'][1]:.4f}")
        else:
            runs = " ".join(f"{r:.2f}" for r in row.get("runs", []))
            lines.append(f"{row['set']:<6} {row['what']:<44} {'':>6} {row['value']:>14.2f}x  {runs}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="demo set only, 2 repeats")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large", type=int, default=500, help="number of 1600x1200 JPEGs (0: skip)")
    parser.add_argument("--batch-size", type=int, default=pixelmine.features.ExtractConfig().batch_size)
    parser.add_argument("--no-int8", action="store_true")
    args = parser.parse_args()
    repeats = 2 if args.quick else args.repeats
    print(f"machine: {machine()}; load average at start {load()}")
    with tempfile.TemporaryDirectory(prefix="pixelmine-bench-") as tmp:
        scratch = Path(tmp)
        rows = bench_set("demo", demo_data_path(), scratch, repeats=repeats, batch_size=args.batch_size,
                         with_int8=not args.no_int8, extra=True)
        if args.large and not args.quick:
            print(f"\ngenerating {args.large} 1600x1200 JPEGs ...", flush=True)
            large = make_large_jpegs(scratch / "large", args.large)
            rows += bench_set("large", large, scratch, repeats=repeats, batch_size=args.batch_size,
                              with_int8=False, extra=False)
    print(f"\n{BACKBONE}, batch {args.batch_size}, {available_cores()} inference threads; load average at end {load()}")
    print(render(rows))


if __name__ == "__main__":
    main()
