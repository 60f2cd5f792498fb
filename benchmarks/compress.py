"""Deploy small and fast: export parity, then pruning + distillation of the demo's default model over sparsity.

    .venv/bin/python benchmarks/compress.py                          # export parity, sparsity 0.3 0.5 0.6
    .venv/bin/python benchmarks/compress.py --sparsity 0.5 --budget 600

export    ``Model.export`` of the model the default ``pixelmine train`` picks on the demo set, fp32 and int8: the
          exported file's test accuracy, and its largest probability difference from ``Model.predict`` on the
          test images (the parity target is 1e-4).
compress  ``pixelmine compress`` at each sparsity with the default distillation budget: the table of the
          original fp32 / int8 and pruned fp32 / int8 files (size, parameters, MACs, latency at batch 1 and
          throughput at batch 8 measured here as medians of interleaved runs, test accuracy, agreement, feature
          cosine), and the targets: pruned fp32 >= 1.6x the original's fp32 throughput and pruned int8 >= 2.5x,
          each within 1 point of its test accuracy, distillation <= 15 minutes.

The workspace is benchmarks/auto.py's demo workspace in --workdir (its ``auto`` model), made when missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from auto import machine, print_table  # noqa: E402  (benchmarks/auto.py)
from trust import default_model  # noqa: E402  (benchmarks/trust.py)


def load() -> str:
    return "load %.2f" % os.getloadavg()[0]


def bench_export(model, out: Path) -> list[dict]:
    from pixelmine.errors import InputError

    rows = []
    for precision in ("fp32", "int8"):
        print(f"export {precision}; {load()}", flush=True)
        try:
            result = model.export(out / precision, precision=precision, max_drop=1.0)
        except InputError as exc:
            rows.append({"precision": precision, "error": str(exc)})
            continue
        rows.append({"precision": precision, "size_mb": result.size_bytes / 1e6, **result.test,
                     "parity_images": result.parity["images"], "max_abs_diff": result.parity["max_abs_diff"],
                     "original_accuracy": result.reference_accuracy, "seconds": result.seconds})
    print_table(f"export of {model.name} ({model.head} on {model.backbone})",
                ("precision", "size MB", "test accuracy [95 % CI]", "max |p - Model.predict| (images)", "seconds"),
                [(r["precision"], f"{r['size_mb']:.1f}", f"{r['accuracy']:.3f} [{r['interval'][0]:.3f}, "
                  f"{r['interval'][1]:.3f}]", f"{r['max_abs_diff']:.2e} ({r['parity_images']})", f"{r['seconds']:.0f}")
                 for r in rows if "error" not in r])
    return rows


def bench_compress(model, sparsities, budget_s: float) -> list[dict]:
    results = []
    for sparsity in sparsities:
        print(f"\ncompress at sparsity {sparsity}, budget {budget_s:.0f} s; {load()}", flush=True)
        started = time.perf_counter()
        result = model.compress(sparsity=sparsity, budget_s=budget_s, progress=True)
        print(result.format_table())
        distill_s = sum(d["seconds"] for d in result.distillation)
        by = {row["variant"]: row for row in result.rows}
        for variant, target in (("pruned fp32", 1.6), ("pruned int8", 2.5)):
            row = by[variant]
            met = row["speedup_b8"] >= target and row["accuracy_change"] >= -0.01
            print(f"{variant}: {row['speedup_b8']:.2f}x batch-8 throughput, {row['speedup_b1']:.2f}x batch-1 latency, "
                  f"accuracy {row['accuracy_change']:+.3f} (target >= {target}x within 1 point: "
                  f"{'met' if met else 'not met'})")
        print(f"distillation {distill_s:.0f} s (target <= 900 s), head {result.head}, whole compress "
              f"{time.perf_counter() - started:.0f} s; {load()}")
        results.append(result.to_dict())
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".cache" / "bench-auto")
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.3, 0.5, 0.6])
    parser.add_argument("--budget", type=float, default=None, help="distillation seconds (default: compress's)")
    parser.add_argument("--skip-export", action="store_true")
    args = parser.parse_args()
    from pixelmine.deploy.compress import DEFAULT_BUDGET_S

    print(machine(), load())
    ws, model = default_model("demo", args.workdir)
    report = {"machine": machine(), "model": model.name, "head": model.head, "backbone": model.backbone}
    if not args.skip_export:
        report["export"] = bench_export(model, args.workdir / "demo" / "exports")
    report["compress"] = bench_compress(model, args.sparsity, args.budget or DEFAULT_BUDGET_S)
    out = args.workdir / "compress.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwritten: {out}; {load()}")
    ws.close()


if __name__ == "__main__":
    main()
