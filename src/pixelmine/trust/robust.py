"""How a model holds up: adversarial attacks (FGSM, PGD) and everyday corruptions, on its held-out images.

- **Attacks** run on the model rebuilt as one PyTorch network (:mod:`.network`: normalisation inside, eval
  mode), L-infinity, eps in 1/255 units of the pixels, PGD with a random start (:mod:`.attacks`). Accuracy
  comes with a 95 % Wilson interval: on 100 images a difference of a few points is noise.
- **int8 check**: the PGD images made on the fp32 network, rounded to pixels, are classified by the fp32 and
  the int8 ONNX graphs. A much higher int8 accuracy would be gradient masking (the quantised graph hides
  the gradient it is attacked with elsewhere), not robustness; the same rounded images are given to both.
- **Corruptions** (:mod:`.corruptions`, ImageNet-C's, 5 severities) of the same crops, through the model's
  own ONNX path: accuracy per corruption and severity, the mean, and the relative corruption error: the
  mean error under corruption divided by the model's own clean error (1.0 = no worse than clean).

    report = measure(model, images=100)   # Robustness; report.to_dict() is models/<name>/robustness.json
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import InputError

EPSILONS = (0.5, 1.0, 2.0, 4.0)  # in 1/255
PGD_STEPS = 10
ONE_CLASS_SHARE = 0.95  # a model that gives one answer this often is not classifying (its "robustness" is moot)


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def _accuracy(correct) -> dict:
    correct = np.asarray(correct, dtype=bool)
    low, high = wilson(int(correct.sum()), len(correct))
    return {"accuracy": float(correct.mean()) if len(correct) else float("nan"), "low": low, "high": high,
            "n": int(len(correct))}


@dataclass
class Robustness:
    model: str
    images: int
    clean: dict  # accuracy, low, high, n (ONNX, the model's own path)
    attacks: list[dict] = field(default_factory=list)  # attack, eps (1/255), accuracy, low, high, n
    int8: dict | None = None  # eps, fp32 / int8 accuracy on the same rounded PGD images, or why not checked
    corruptions: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> {severity: accuracy}
    corruption_mean: float | None = None
    relative_corruption_error: float | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Robustness":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def attack_table(self) -> list[tuple]:
        return [(a["attack"], f"{a['eps']:g}/255", f"{a['accuracy']:.3f}", f"[{a['low']:.3f}, {a['high']:.3f}]")
                for a in self.attacks]

    def corruption_table(self) -> list[tuple]:
        return [(name, *(f"{acc:.3f}" for acc in per.values()), f"{np.mean(list(per.values())):.3f}")
                for name, per in self.corruptions.items()]


def measure(model, *, images: int = 100, epsilons=EPSILONS, steps: int = PGD_STEPS, attacks: bool = True,
            corruptions: bool = True, int8: bool = True, seed: int = 0, progress=False) -> Robustness:
    """The robustness report of ``model`` on up to ``images`` of its held-out (test) images."""
    from .held_out import held_out
    from .pixels import ModelOnPixels

    if any(e < 0 for e in epsilons):
        raise InputError(f"eps must be >= 0 (in 1/255); got {list(epsilons)}")
    started = time.perf_counter()
    data = held_out(model, limit=images, seed=seed)
    index = {label: k for k, label in enumerate(model.classes)}
    with ModelOnPixels(model) as on_pixels:
        pixels, rows, errors = on_pixels.crops(data.paths)
        if not rows:
            raise InputError(f"none of the {len(data.paths)} held-out images could be read; nothing to measure")
        labels = np.array([index[data.labels[r]] for r in rows])
        clean_probs = on_pixels.probabilities(pixels)
        report = Robustness(model.name, len(rows), _accuracy(clean_probs.argmax(1) == labels))
        predicted = np.bincount(clean_probs.argmax(1), minlength=len(model.classes))
        if len(model.classes) > 1 and predicted.max() >= ONE_CLASS_SHARE * len(rows):
            top = model.classes[int(predicted.argmax())]
            report.notes.append(f"the model answers {top!r} for {predicted.max()} of {len(rows)} images: its accuracy "
                                f"under attack is that class's share of the sample, not robustness")
        if errors:
            report.notes.append(f"{len(errors)} held-out images could not be read and were left out")
        if attacks:
            _attack(model, report, pixels, labels, epsilons, steps, seed, int8, on_pixels, progress)
        if corruptions:
            _corrupt(report, on_pixels, pixels, labels, seed, progress)
    report.seconds = time.perf_counter() - started
    return report


def _attack(model, report, pixels, labels, epsilons, steps, seed, int8, on_pixels, progress) -> None:
    import torch

    from ..progress import resolve_progress
    from .attacks import robust_accuracy
    from .network import classifier_network

    try:
        network = classifier_network(model)
    except InputError as exc:
        report.notes.append(f"attacks not run: {exc}")
        return
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    y = torch.from_numpy(labels).long()
    generator = torch.Generator().manual_seed(seed)
    tick, close = resolve_progress(progress, "attacks", unit="attack")
    pgd_images = {}
    try:
        for k, eps in enumerate(sorted(epsilons)):
            for attack in ("fgsm", "pgd"):
                correct, adversarial = robust_accuracy(network, x, y, eps / 255.0, attack=attack, steps=steps,
                                                       generator=generator)
                report.attacks.append({"attack": attack if attack == "fgsm" else f"pgd-{steps}", "eps": eps,
                                       **_accuracy(correct)})
                if attack == "pgd" and adversarial is not None:
                    pgd_images[eps] = adversarial
            tick(k + 1, len(epsilons))
    finally:
        close()
    if int8 and pgd_images:
        report.int8 = _int8_check(model, on_pixels, pgd_images, labels)


def _int8_check(model, on_pixels, pgd_images: dict, labels) -> dict:
    """fp32 vs int8 graphs on the same PGD images (made on fp32, rounded to pixels), at the largest eps that
    still changes pixels after rounding (>= 1/255)."""
    from .pixels import ModelOnPixels

    usable = [eps for eps in pgd_images if eps >= 1.0] or list(pgd_images)
    eps = min(usable)
    rounded = np.clip(np.rint(pgd_images[eps].permute(0, 2, 3, 1).numpy() * 255.0), 0, 255).astype(np.uint8)
    fp32 = on_pixels.probabilities(rounded).argmax(1) == labels
    if model.kind == "finetune":
        return {"eps": eps, "fp32": _accuracy(fp32), "int8": None,
                "note": "a fine-tuned network has no int8 graph here; export and quantise it to compare"}
    calibration = _calibration_tasks(model)
    try:
        with ModelOnPixels(model, precision="int8", calibration=calibration) as quantised:
            int8 = quantised.probabilities(rounded).argmax(1) == labels
    except Exception as exc:  # noqa: BLE001 - quantisation is best effort; the report says why it is missing
        return {"eps": eps, "fp32": _accuracy(fp32), "int8": None, "note": f"no int8 graph: {exc}"}
    gap = float(int8.mean() - fp32.mean())
    return {"eps": eps, "fp32": _accuracy(fp32), "int8": _accuracy(int8), "gap": gap,
            "note": ("int8 much more accurate on the fp32 attack: gradient masking, not robustness"
                     if gap > 0.15 else "int8 holds up no better than fp32: no sign of gradient masking")}


def _calibration_tasks(model, limit: int = 64) -> list[tuple[str, str]]:
    """Training images of the model to calibrate an int8 graph on (the test images are never used)."""
    with np.load(model.dir / "data.npz", allow_pickle=False) as data:
        train_ids = data["ids"][data["splits"] == "train"].tolist()[:limit * 2]
    rows = {row["id"]: row["path"] for row in model.catalog.images(status="ok")}
    return [(i, rows[i]) for i in train_ids if i in rows][:limit]


def _corrupt(report, on_pixels, pixels, labels, seed, progress) -> None:
    from ..progress import resolve_progress
    from .corruptions import CORRUPTIONS, SEVERITIES, corrupt

    tick, close = resolve_progress(progress, "corruptions", unit="corruption")
    try:
        for k, name in enumerate(CORRUPTIONS):
            per = {}
            for severity in SEVERITIES:
                corrupted = corrupt(pixels, name, severity, seed=seed)
                per[str(severity)] = float((on_pixels.probabilities(corrupted).argmax(1) == labels).mean())
            report.corruptions[name] = per
            tick(k + 1, len(CORRUPTIONS))
    finally:
        close()
    accuracies = [acc for per in report.corruptions.values() for acc in per.values()]
    report.corruption_mean = float(np.mean(accuracies))
    clean_error = 1.0 - report.clean["accuracy"]
    mean_error = 1.0 - report.corruption_mean
    report.relative_corruption_error = float(mean_error / clean_error) if clean_error > 0 else None
    if clean_error == 0:
        report.notes.append("no clean errors: the relative corruption error is undefined")
