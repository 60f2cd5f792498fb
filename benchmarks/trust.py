"""Trust: how faithful the explanations are, and how the demo model holds up under attacks and corruptions.

    .venv/bin/python benchmarks/trust.py                        # every part
    .venv/bin/python benchmarks/trust.py --part explain --data fashion
    .venv/bin/python benchmarks/trust.py --part robust
    .venv/bin/python benchmarks/trust.py --part train

explain  100 held-out images of the demo set and of a 10,000-image Fashion-MNIST sample, explained by the model
         the default ``pixelmine train`` picks there: the time to make the 100 maps (``Model.explain``, from a
         cold start), and the faithfulness card (deletion / insertion areas of the map, a random map and a
         centred blob; randomised-head rank correlation).
robust   the demo's default model on 100 held-out images: clean, FGSM and PGD-10 accuracy at eps 0.5, 1, 2 and
         4 / 255 with 95 % intervals, the int8 check, and the mean accuracy over 12 corruptions x 5 severities.
train    on the demo set: ``--head finetune`` (standard), ``--head finetune --adversarial 1`` and
         ``--head finetune --augment augmix``, each for 4 epochs (``--epochs 4``) and timed, then the robustness report of each (PGD-10 at 1/255,
         clean accuracy, corruption mean) beside the default model's.

Workspaces: the ``auto`` models of benchmarks/auto.py in --workdir (default .cache/bench-auto) are reused when
they exist (the same default model), else made with a fresh ingest + extract + default train.
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

import pixelmine  # noqa: E402
from auto import fresh_workspace, machine, print_table  # noqa: E402  (benchmarks/auto.py)

IMAGES = 100
EPOCHS = 4  # fine-tuning epochs of the train part (the default is 8)


def load() -> str:
    return "load %.2f" % os.getloadavg()[0]


def default_model(data: str, workdir: Path):
    """(workspace, the model the default `pixelmine train` picks) for ``data``."""
    root = workdir / data / "ws"
    if (root / "models" / "auto" / "model.json").exists():
        ws = pixelmine.open_workspace(root)
        return ws, ws.model("auto")
    ws = fresh_workspace(data, workdir)
    return ws, ws.train(name="auto", progress=False)


def bench_explain(data: str, workdir: Path) -> dict:
    from pixelmine.trust.faithfulness import measure
    from pixelmine.trust.held_out import held_out

    ws, model = default_model(data, workdir)
    held = held_out(model, limit=IMAGES)
    print(f"\n[{data}] {model.name}: {model.head} on {model.backbone}; {len(held.paths)} held-out images; {load()}")
    started = time.perf_counter()
    explanations = model.explain(held.paths)
    maps_s = time.perf_counter() - started
    assert all(e.ok for e in explanations)
    card = measure(model, held.paths)
    rows = [(name, f"{card.deletion[key]:.3f}", f"{card.insertion[key]:.3f}")
            for key, name in (("map", f"{card.method} map"), ("random", "random map"), ("centre", "centred blob"))]
    print_table(f"{data}: faithfulness on {card.images} held-out images ({card.grid[0]}x{card.grid[1]} grid, "
                f"{card.steps} steps)", ("map", "deletion area (lower better)", "insertion area (higher better)"), rows)
    print(f"deletion {card.deletion_gain:.0%} below random; insertion {card.insertion_gain:+.0%} vs random; "
          f"randomised-head rank correlation {card.random_head_correlation:.2f}; {len(explanations)} maps in "
          f"{maps_s:.1f} s; card {card.seconds:.0f} s")
    ws.close()
    return {"data": data, "model": model.backbone, "head": model.head, "maps_s": maps_s, **card.to_dict()}


def robustness_rows(report) -> dict:
    by = {(a["attack"], a["eps"]): a for a in report.attacks}
    return {"clean": report.clean["accuracy"], "pgd_1": by.get(("pgd-10", 1.0), {}).get("accuracy"),
            "corruption_mean": report.corruption_mean, "seconds": report.seconds}


def bench_robust(workdir: Path) -> dict:
    from pixelmine.trust.robust import measure

    ws, model = default_model("demo", workdir)
    print(f"\n[demo] robustness of {model.name} ({model.head} on {model.backbone}); {load()}")
    report = measure(model, images=IMAGES)
    rows = [("clean", "0", f"{report.clean['accuracy']:.3f}",
             f"[{report.clean['low']:.3f}, {report.clean['high']:.3f}]")] + report.attack_table()
    print_table(f"demo: accuracy under attack ({report.images} held-out images, L-inf)",
                ("attack", "eps", "accuracy", "95% interval"), rows)
    if report.int8:
        print("int8 check:", json.dumps({k: v for k, v in report.int8.items() if k != "note"}), report.int8["note"])
    print_table("demo: accuracy under corruption", ("corruption", "1", "2", "3", "4", "5", "mean"),
                report.corruption_table())
    print(f"mean corruption accuracy {report.corruption_mean:.3f}; relative corruption error "
          f"{report.relative_corruption_error}; {report.seconds:.0f} s")
    ws.close()
    return report.to_dict()


def bench_train(workdir: Path, only: list[str] | None = None) -> dict:
    from pixelmine.trust.robust import measure

    ws, default = default_model("demo", workdir)
    # the same schedule for all three, short enough that adversarial training fits this CPU's 15 minutes
    schedule = {"epochs": EPOCHS}
    variants = {"finetune": schedule, "finetune-adversarial-1": {**schedule, "adversarial_eps": 1 / 255},
                "finetune-augmix": {**schedule, "augment": "augmix"}}
    results = {"default": robustness_rows(measure(default, images=IMAGES, epsilons=(1.0,)))}
    for name, options in variants.items():
        if only and name not in only:
            continue
        print(f"\n[demo] training {name}; {load()}")
        started = time.perf_counter()
        model = ws.train("finetune", name=name, progress=False, finetune=options)
        train_s = time.perf_counter() - started
        results[name] = {"train_s": train_s, "test_accuracy": model.info["test_metrics"]["accuracy"],
                         **robustness_rows(measure(model, images=IMAGES, epsilons=(1.0,)))}
    rows = [(name, f"{r.get('train_s', 0):.0f}", f"{r['clean']:.3f}", f"{r['pgd_1']:.3f}", f"{r['corruption_mean']:.3f}")
            for name, r in results.items()]
    print_table(f"demo: training that holds up ({IMAGES} held-out images)",
                ("model", "train s", "clean", "PGD-10 1/255", "corruption mean"), rows)
    ws.close()
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["explain", "robust", "train", "all"], default="all")
    parser.add_argument("--data", choices=["demo", "fashion", "both"], default="both", help="for --part explain")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".cache" / "bench-auto")
    parser.add_argument("--only", nargs="+", help="for --part train: only these variants (finetune, "
                        "finetune-adversarial-1, finetune-augmix)")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(), "started": load()}
    print(results)
    if args.part in ("explain", "all"):
        for data in (["demo", "fashion"] if args.data == "both" else [args.data]):
            results[f"explain-{data}"] = bench_explain(data, args.workdir)
    if args.part in ("robust", "all"):
        results["robust"] = bench_robust(args.workdir)
    if args.part in ("train", "all"):
        results["train"] = bench_train(args.workdir, args.only)
    with (args.workdir / "trust-results.json").open("a") as out:
        out.write(json.dumps(results, default=str) + "\n")


if __name__ == "__main__":
    main()
