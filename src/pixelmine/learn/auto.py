"""Automatic model selection, the default of ``pixelmine train`` (``--head auto``).

Candidates are feature sets (each backbone that can run here x the standard crop / the whole frame, see
:mod:`.candidates`) x heads (logreg, svm, knn), the concatenation of the two best feature sets, and
fine-tuning when the budget allows it. Every score is a cross-validation on train + val, folds grouped by
near-duplicate group (a copy in the training fold cannot vouch for its twin); the test split is never read.

Cheap first, by successive halving over feature sets (extracting features is what costs):

    screen   every feature set on a stratified sample of train + val (a quarter of it, 500-3,000 images),
             with the cheap heads (logreg, knn; ``screen_heads``) at their default settings
    final    the two best other feature sets, plus the reference one (cached anyway, so the choice can
             never fall below the plain probe), on all of train + val (at most ``max_cv_images``): the cheap
             heads, then the two best sets of this rung concatenated, then the costly heads (the SVM)
    finetune when the budget left covers its estimated time: fine-tuning the best single feature set's
             network on train, compared with the best probe on the val split (a cross-validation of
             fine-tuning would cost k trainings)

The winner is the best mean CV balanced accuracy at the largest rung (ties: the lower log loss). One
wall-clock budget bounds the search: before each step its cost is estimated (extraction from this run's
measured speed, else a prior per backbone; a fit from the screen's measured time) and a step that would
not fit is skipped and said so. The first candidate (the reference probe) always runs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import balanced_accuracy_score, log_loss

from .joined import join
from .oof import out_of_fold_probabilities
from .search import stratified_subsample

log = logging.getLogger(__name__)

# Seconds per image to extract features at 224 px on one 2-core laptop-class CPU (measured here: 2,000
# demo images, MobileNetV2 20 s, EfficientNet-Lite0 39 s); scaled by (side / 224)^2. Only a prior: after a
# backbone's first extraction its measured speed is used.
PRIOR_S_PER_IMAGE = {"mobilenet_v2": 0.010, "efficientnet_lite0": 0.020}
UNKNOWN_S_PER_IMAGE = 0.04
# Fine-tuning costs about this many extraction-times per image and epoch on a CPU (forward + backward in
# eager PyTorch vs an ONNX Runtime forward): 892 s for 6 epochs of 1,400 demo images at 0.0115 s/image.
FINETUNE_COST_RATIO = 9.5
# Seconds of a 5-fold CV per (image x feature) by head, measured here on 2,120 x 1,280 Fashion-MNIST
# features: logreg 2.5 s, the calibrated linear SVM 31 s, kNN 1.2 s. Only a prior: a head's measured time
# replaces it, and an unmeasured head is scaled from a measured one by these ratios.
PRIOR_CV_S_PER_VALUE = {"logreg": 1e-6, "svm": 1.2e-5, "knn": 5e-7}


@dataclass
class Trial:
    """One candidate scored at one rung."""

    features: str  # feature set name ("A", or "A+B" for a concatenation)
    head: str  # logreg | svm | knn | finetune
    rung: str  # screen | final | finetune
    n_images: int
    score: float | None = None  # mean CV balanced accuracy (finetune: val accuracy)
    spread: float | None = None  # standard deviation over the folds
    log_loss: float | None = None
    seconds: float = 0.0
    status: str = "scored"  # scored | skipped | failed
    reason: str | None = None
    params: dict = field(default_factory=dict)

    @property
    def candidate(self) -> str:
        return f"{self.head} on {self.features}"

    def to_dict(self) -> dict:
        return {"candidate": self.candidate, "features": self.features, "head": self.head, "rung": self.rung,
                "n_images": self.n_images, "score": self.score, "spread": self.spread, "log_loss": self.log_loss,
                "seconds": round(self.seconds, 2), "status": self.status, "reason": self.reason,
                "params": self.params}


@dataclass
class Selection:
    features: str  # chosen feature set
    head: str
    params: dict
    trials: list[Trial]
    budget_s: float
    elapsed_s: float = 0.0
    metric: str = "balanced_accuracy"
    notes: list[str] = field(default_factory=list)  # what the budget cut, candidates left out
    finetune: dict | None = None  # {"affordable": bool, "estimate_s": ..., "backbone": ...}

    def leaderboard(self) -> list[dict]:
        """Scored trials, best first within the largest rung first, then the skipped ones."""
        rank = {"finetune": 0, "final": 1, "screen": 2}
        scored = sorted((t for t in self.trials if t.status == "scored"),
                        key=lambda t: (rank[t.rung], -(t.score or 0.0)))
        return [t.to_dict() for t in scored] + [t.to_dict() for t in self.trials if t.status != "scored"]

    def to_dict(self) -> dict:
        return {"chosen": {"features": self.features, "head": self.head, "params": self.params},
                "metric": self.metric, "budget_s": self.budget_s, "elapsed_s": round(self.elapsed_s, 2),
                "notes": self.notes, "finetune": self.finetune, "leaderboard": self.leaderboard()}


class Clock:
    def __init__(self, budget_s: float):
        self.budget_s = float(budget_s)
        self.started = time.perf_counter()

    def spent(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        return self.budget_s - self.spent()


def grouped_cv(estimator, X: np.ndarray, y: np.ndarray, groups: np.ndarray, *, folds: int,
               seed: int) -> tuple[float, float, float]:
    """(mean balanced accuracy over the folds, its standard deviation, log loss of the pooled held-out
    probabilities) of ``estimator`` in stratified k-fold cross-validation grouped by ``groups``."""
    probs, fold_of, _ = out_of_fold_probabilities(estimator, X, y, groups, n_splits=folds, seed=seed)
    classes = np.unique(y)
    predicted = classes[np.argmax(probs, axis=1)]
    per_fold = [balanced_accuracy_score(y[fold_of == f], predicted[fold_of == f])
                for f in np.unique(fold_of) if (fold_of == f).any()]
    clipped = np.clip(probs, 1e-7, 1.0)
    loss = float(log_loss(y, clipped / clipped.sum(axis=1, keepdims=True), labels=classes))
    return float(np.mean(per_fold)), float(np.std(per_fold)), loss


class FeatureCosts:
    """Extraction speed per feature set: measured in this run, else the prior."""

    def __init__(self, root):
        self.root = root
        self.measured: dict[str, float] = {}

    def per_image(self, name: str) -> float:
        if name in self.measured:
            return self.measured[name]
        from .. import backbones

        try:
            spec = backbones.get(name, root=self.root)
        except Exception:  # noqa: BLE001 - an unknown name costs the unknown prior
            return UNKNOWN_S_PER_IMAGE
        base = name.split(":", 1)[1].rsplit("@", 1)[0] if name.startswith("full:") else name
        side = spec.preprocessing.input_size
        return PRIOR_S_PER_IMAGE.get(base, UNKNOWN_S_PER_IMAGE) * (side / 224) ** 2

    def record(self, name: str, computed: int, seconds: float) -> None:
        if computed >= 50:  # fewer images measure mostly the start-up
            self.measured[name] = seconds / computed


class FeatureSource:
    """Vectors of the candidate feature sets for image ids, extracting what is missing (only those ids)."""

    def __init__(self, root, extract, progress):
        self.root = root
        self.extract = extract
        self.progress = progress
        self.costs = FeatureCosts(root)
        self._have: dict[str, set] = {}

    def have(self, name: str) -> set:
        if name not in self._have:
            from ..errors import NotFittedError
            from ..features.store import load_features

            try:
                self._have[name] = set(load_features(self.root, name).ids)
            except NotFittedError:
                self._have[name] = set()
        return self._have[name]

    def missing(self, name: str, ids) -> list[str]:
        have = self.have(name)
        return [i for i in ids if i not in have]

    def estimate(self, name: str, ids) -> float:
        return len(self.missing(name, ids)) * self.costs.per_image(name)

    def vectors(self, name: str, ids: list[str]) -> np.ndarray:
        from ..features.store import load_features

        todo = self.missing(name, ids)
        if todo:
            if self.extract is None:
                from ..errors import NotFittedError

                raise NotFittedError(f"{len(todo)} images have no {name} features; run: pixelmine extract "
                                     f"--backbone {name}")
            t0 = time.perf_counter()
            result = self.extract(name, ids=todo, progress=self.progress)
            self.costs.record(name, result.computed, time.perf_counter() - t0)
            self._have.pop(name, None)
        features = load_features(self.root, name)
        return np.asarray(features.vectors[features.rows(ids)], dtype=np.float32)


def select(root, split, config, *, feature_sets: list[str], extract=None, progress="auto",
           notes: list[str] | None = None) -> Selection:
    """Choose a feature set and head for ``split`` (a :class:`~.data.SplitResult`) within ``config.auto``."""
    from .probe import base_head

    auto = config.auto
    clock = Clock(auto.budget_s)
    source = FeatureSource(root, extract, progress)
    notes = list(notes or [])
    trials: list[Trial] = []
    tv = np.concatenate([split.rows("train"), split.rows("val")])
    y_all, ids_all = split.labels, np.asarray(split.ids)
    reference = feature_sets[0]
    fit_s_per_value: dict[str, float] = {}  # head -> CV seconds per (image x feature), from measured trials

    def cv_estimate(head: str, n: int, dim: int) -> float:
        if head in fit_s_per_value:
            return fit_s_per_value[head] * n * dim
        prior = PRIOR_CV_S_PER_VALUE.get(head, max(PRIOR_CV_S_PER_VALUE.values()))
        for known, per_value in fit_s_per_value.items():  # scale from a head measured on this machine
            if known in PRIOR_CV_S_PER_VALUE:
                prior = per_value * prior / PRIOR_CV_S_PER_VALUE[known]
                break
        return prior * n * dim

    def score(features: str, head: str, rung: str, rows: np.ndarray, X: np.ndarray, *, always=False) -> Trial:
        trial = Trial(features, head, rung, len(rows))
        estimate = cv_estimate(head, len(rows), X.shape[1])
        if not always and estimate > clock.left():
            trial.status, trial.reason = "skipped", f"budget: ~{estimate:.0f} s needed, {max(clock.left(), 0):.0f} s left"
        else:
            t0 = time.perf_counter()
            try:
                trial.score, trial.spread, trial.log_loss = grouped_cv(
                    base_head(config, head), X, y_all[rows], split.groups[rows], folds=config.cv_folds,
                    seed=config.seed)
            except ValueError as exc:  # e.g. an SVM's calibration on a class too small for the folds
                trial.status, trial.reason = "failed", str(exc)
            trial.seconds = time.perf_counter() - t0
            if trial.status == "scored":
                fit_s_per_value[head] = trial.seconds / max(1, len(rows) * X.shape[1])
        trials.append(trial)
        return trial

    def features_for_rows(name: str, rows: np.ndarray, rung: str, *, always=False) -> np.ndarray | None:
        ids = ids_all[rows].tolist()
        estimate = source.estimate(name, ids)
        if not always and estimate > clock.left():
            trials.append(Trial(name, "*", rung, len(rows), status="skipped",
                                reason=f"budget: extracting ~{estimate:.0f} s needed, {max(clock.left(), 0):.0f} s left"))
            return None
        return source.vectors(name, ids)

    # -- screen: every feature set on a sample of train + val ------------------------------------------
    n_tv = len(tv)
    n_screen = int(min(n_tv, np.clip(n_tv // 4, auto.min_screen_images, auto.max_screen_images)))
    screen_rows = tv[stratified_subsample(y_all[tv], n_screen, config.seed)]
    final_rows = tv[stratified_subsample(y_all[tv], auto.max_cv_images, config.seed)]
    one_rung = len(final_rows) <= len(screen_rows)
    if one_rung:
        screen_rows = final_rows  # the sample would be all of train + val: one rung, scored once
    screen_rung = "final" if one_rung else "screen"
    # cheapest first (cached ones cost nothing), the reference first of all
    order = [reference] + sorted(feature_sets[1:], key=lambda n: source.estimate(n, ids_all[screen_rows].tolist()))
    by_set: dict[str, float] = {}
    cached_X: dict[str, np.ndarray] = {}
    for name in order:
        first = name == reference
        X = features_for_rows(name, screen_rows, screen_rung, always=first)
        if X is None:
            continue
        cached_X[name] = X
        heads = auto.heads if one_rung else [h for h in auto.heads if h in auto.screen_heads] or auto.heads[:1]
        for head in heads:
            trial = score(name, head, screen_rung, screen_rows, X, always=first and head == heads[0])
            if trial.status == "scored":
                by_set[name] = max(by_set.get(name, -1.0), trial.score)
    # The reference goes on to the final rung anyway (its features are cached): the finalist slots go to the
    # best of the others, so that the screen buys new feature sets.
    ranked = sorted((n for n in by_set if n != reference), key=lambda n: -by_set[n])
    finalists = ranked[:auto.finalists]

    # -- final: the best feature sets (and the reference) on all of train + val, plus their concatenation --
    # Order within the rung: every finalist's features and cheap heads first, the costly heads (the SVM)
    # last, so that a tight budget cuts a costly head rather than a finalist.
    cheap = [h for h in auto.heads if h in auto.screen_heads] or auto.heads[:1]
    costly = [h for h in auto.heads if h not in cheap]
    final_best: dict[str, float] = {}
    if not one_rung:
        cached_X = {}
        for name in finalists + [reference]:
            X = features_for_rows(name, final_rows, "final", always=False)
            if X is not None:
                cached_X[name] = X
        for name, X in cached_X.items():
            for head in cheap:
                trial = score(name, head, "final", final_rows, X)
                if trial.status == "scored":
                    final_best[name] = max(final_best.get(name, -1.0), trial.score)
    else:
        final_best = dict(by_set)
    # the two best feature sets of this rung, side by side
    pair = sorted((n for n in final_best if n in cached_X), key=lambda n: -final_best[n])[:2]
    joined_name = join(pair) if len(pair) == 2 else None
    if joined_name:
        cached_X[joined_name] = np.hstack([cached_X[n] for n in pair])
    # cosine kNN on two scales of features mostly follows the larger one: the concatenation gets linear heads
    passes = [(joined_name, [h for h in cheap if h != "knn"])] if joined_name else []
    if not one_rung:
        passes += [(name, costly) for name in sorted(final_best, key=lambda n: -final_best[n])]
    if joined_name:
        passes.append((joined_name, [h for h in costly if h != "knn"]))
    for name, heads in passes:
        for head in heads:
            score(name, head, "final", final_rows, cached_X[name])

    finalists_scored = all(any(t.features == f and t.rung == "final" and t.status == "scored" for t in trials)
                           for f in finalists)
    # Arms are compared on the same images only: at the final rung when every finalist reached it, else (the
    # budget stopped a finalist's extraction) at the screen, where all were scored on one sample.
    rung = "final" if finalists_scored or one_rung else "screen"
    decided = [t for t in trials if t.status == "scored" and t.rung == rung] or \
              [t for t in trials if t.status == "scored"]
    best = max(decided, key=lambda t: (round(t.score, 4), -(t.log_loss or 0.0)))
    selection = Selection(features=best.features, head=best.head, params={}, trials=trials,
                          budget_s=auto.budget_s, notes=notes)
    if rung == "screen":
        left = source.estimate(best.features, ids_all.tolist())
        selection.notes.append(f"the budget stopped the final rung before every finalist was scored on all of "
                               f"train + val: chosen on the {len(screen_rows)}-image screen"
                               + (f"; extracting {best.features} for the rest takes about {left / 60:.0f} min more"
                                  if left > 60 else ""))
    skipped = [t for t in trials if t.status == "skipped"]
    if skipped:
        selection.notes.append(
            f"the {auto.budget_s:.0f} s budget cut {len(skipped)} step(s) of the search: "
            + "; ".join(f"{t.candidate if t.head != '*' else t.features} at the {t.rung} rung" for t in skipped[:6])
            + ("; ..." if len(skipped) > 6 else "") + " (raise --budget to try them)")
    selection.finetune = _finetune_plan(config, split, best, source, clock)
    if selection.finetune and not selection.finetune["affordable"]:
        selection.notes.append(selection.finetune["reason"])
    selection.elapsed_s = clock.spent()
    return selection


def _finetune_plan(config, split, best: Trial, source: FeatureSource, clock: Clock) -> dict | None:
    """Whether fine-tuning the chosen feature set's network fits in the budget left, and its estimate."""
    from .joined import is_joined, parts

    if not config.auto.finetune:
        return None
    from .. import backbones
    from ..errors import PixelmineError

    backbone = parts(best.features)[0] if is_joined(best.features) else best.features
    try:
        if backbone.startswith("model:") or not backbones.get(backbone, root=source.root).num_classes:
            return None  # only a pretrained classifier network is fine-tuned (not a fine-tuned one again)
    except PixelmineError:
        return None  # features without a registered network (written by other means)
    ft = config.finetune
    n_train = len(split.rows("train"))
    if ft.max_train_images is not None:
        n_train = min(n_train, ft.max_train_images)
    epochs = ft.frozen_epochs + ft.epochs
    estimate = FINETUNE_COST_RATIO * source.costs.per_image(backbone) * n_train * epochs \
        + source.costs.per_image(backbone) * len(split.ids)
    affordable = estimate <= clock.left()
    plan = {"backbone": backbone, "estimate_s": round(estimate, 1), "affordable": bool(affordable),
            "left_s": round(max(clock.left(), 0.0), 1)}
    if not affordable:
        needed = clock.spent() + estimate
        plan["reason"] = (f"fine-tuning {backbone} (~{estimate / 60:.0f} min for {epochs} epochs of {n_train} images "
                          f"here) does not fit in the {max(clock.left(), 0):.0f} s left of the budget; "
                          f"--budget {int(np.ceil(needed / 60.0)) * 60} would try it")
    return plan
