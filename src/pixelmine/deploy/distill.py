"""Feature distillation: teach a pruned student to give the original backbone's pooled features, no labels.

The teacher is run once over the crops under each view (:func:`teacher_targets`); :func:`distill` then
trains the student on those stored targets, so the teacher costs one pass however long the student trains.
The loss is the mean squared error of the features, each dimension scaled by the teacher's spread on it
(so that a few high-variance dimensions do not dominate), plus one minus their cosine similarity (the
direction is what search and the heads use).

Resumable: a checkpoint is written every :data:`CHECKPOINT_EVERY_S` seconds, at the end, and on Ctrl-C.
The caller rebuilds the same student (``prune_channels`` is deterministic) and calls :func:`distill` with
the same checkpoint; the batch order is a pure function of the seed and the epoch, so a resumed run draws
the very batches the uninterrupted one would have. Finished work is never redone.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fileio import atomic_path
from ..progress import resolve_progress

_log = logging.getLogger(__name__)

VIEWS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda crops: crops,
    "hflip": lambda crops: np.ascontiguousarray(crops[:, :, ::-1, :]),  # NHWC: mirror the width axis
}
DEFAULT_LR = 1e-3
WEIGHT_DECAY = 1e-4  # light: the student starts from pretrained weights, decay would only pull it away
MAX_EPOCHS = 60  # a plan sized by the budget alone never loops over a small crop set more than this
CHECKPOINT_EVERY_S = 30.0
REPLAN_AFTER_STEPS = 10
CHECKPOINT_FORMAT = 1
RECENT_LOSSES = 10  # loss_last is the mean of this many final steps: one batch alone is noisy
STOPPED_BY = ("budget", "epochs", "finished earlier")

FeatureRunner = Callable[[np.ndarray], object]


@dataclass
class DistillResult:
    """What :func:`distill` did. ``steps`` and ``seconds`` count every run on the same checkpoint;
    ``resumed_from`` is the step this run started at (0 for a fresh one)."""

    steps: int
    epochs: float
    seconds: float
    stopped_by: str
    loss_first: float
    loss_last: float
    planned_steps: int = 0
    resumed_from: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return (f"distilled {self.steps} of {self.planned_steps} planned steps ({self.epochs:.2f} epochs) in "
                f"{self.seconds:.1f} s, stopped by {self.stopped_by}; loss {self.loss_first:.4f} -> "
                f"{self.loss_last:.4f}")


# -- teacher ----------------------------------------------------------------------------------------
def teacher_targets(run_teacher: FeatureRunner, crops: np.ndarray, views=("identity", "hflip"),
                    batch_size: int = 32) -> dict[str, np.ndarray]:
    """The teacher's pooled features (N, D) float32 for every crop, under each view, keyed by view name.

    ``run_teacher`` takes a uint8 (B, S, S, 3) batch and returns the features (B, D), or a tuple whose
    first element they are (an :class:`~pixelmine.features.onnx_backend.OnnxRunner`'s ``run`` fits).
    """
    crops = check_crops(crops)
    batch_size = _positive_int(batch_size, "batch_size")
    return {view: run_features(run_teacher, _view(view)(crops), batch_size) for view in _check_views(views)}


def run_features(run: FeatureRunner, crops: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """``run``'s features for ``crops``, batch by batch, as one float32 (N, D) array."""
    parts = [_as_features(run(crops[start:start + batch_size])) for start in range(0, len(crops), batch_size)]
    return np.concatenate(parts).astype(np.float32, copy=False)


def feature_cosine(run_a: FeatureRunner, run_b: FeatureRunner, crops: np.ndarray, batch_size: int = 32) -> float:
    """Mean cosine similarity between two runners' features on the same crops (1.0: same directions)."""
    crops = check_crops(crops)
    return mean_cosine(run_features(run_a, crops, batch_size), run_features(run_b, crops, batch_size))


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(np.sum(a * b, axis=1) / np.maximum(norms, 1e-12)))


def _as_features(output) -> np.ndarray:
    if isinstance(output, (tuple, list)):
        output = output[0]
    if hasattr(output, "detach"):  # a torch tensor
        output = output.detach().cpu().numpy()
    return np.asarray(output, dtype=np.float32)


def _view(name: str) -> Callable[[np.ndarray], np.ndarray]:
    return VIEWS[name]


def _check_views(views) -> list[str]:
    views = [views] if isinstance(views, str) else list(views)
    unknown = [view for view in views if view not in VIEWS]
    if not views or unknown:
        raise InputError(f"views must name one or more of {sorted(VIEWS)}; got {views!r}")
    return views


def check_crops(crops) -> np.ndarray:
    crops = np.asarray(crops)
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3 or len(crops) == 0:
        raise InputError(f"crops must be a non-empty uint8 array (N, S, S, 3) of RGB crops; got "
                         f"{crops.dtype} {crops.shape}. Decode them with the backbone's preprocessing")
    return crops


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a whole number of at least 1; got {value!r}")
    return int(value)


# -- distillation -----------------------------------------------------------------------------------
def distill(student, crops: np.ndarray, targets: dict[str, np.ndarray], *, budget_s: float,
            checkpoint: Path | str | None = None, epochs: float | None = None, batch_size: int = 32,
            lr: float = DEFAULT_LR, progress=False, seed: int = 0) -> DistillResult:
    """Train ``student`` (a FeatureModel, changed in place and returned in eval mode) so that its pooled
    features match ``targets`` (from :func:`teacher_targets` on the same ``crops``).

    Each step takes a batch of crops and one view. Runs ``epochs`` passes over the crops when given, else
    as many steps as fit in ``budget_s`` (at most :data:`MAX_EPOCHS`); either way it stops once
    ``budget_s`` seconds of work (all runs on the same checkpoint together) are spent. With
    ``checkpoint``, a run resumes from the file when it exists and keeps it up to date.
    """
    import torch

    crops = check_crops(crops)
    plan = _TrainingPlan.make(crops, targets, budget_s=budget_s, epochs=epochs, batch_size=batch_size,
                              lr=lr, seed=seed)
    state = _load_checkpoint(checkpoint, plan) if checkpoint is not None else None
    if state is not None and state.get("finished") and not plan.extends(state):
        return _finished_earlier(student, state)
    trainer = _Trainer(student, crops, targets, plan)
    if state is not None:
        trainer.restore(state)
    else:
        trainer.plan_steps()
    if trainer.step >= trainer.planned_steps or trainer.elapsed >= plan.budget_s:
        student.eval()  # an interrupted run whose time or steps were all spent: nothing is left to do
        return trainer.result("finished earlier", resumed_from=trainer.step)
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(trainer.torch_rng)
        result = trainer.run(checkpoint, progress)
    _log.info("%s", result.describe())
    return result


@dataclass
class _TrainingPlan:
    """The arguments of one :func:`distill` call, checked."""

    views: list[str]
    budget_s: float
    epochs: float | None
    batch_size: int
    steps_per_epoch: int
    lr: float
    seed: int
    crop_count: int

    @classmethod
    def make(cls, crops, targets, *, budget_s, epochs, batch_size, lr, seed) -> _TrainingPlan:
        views = _check_targets(targets, len(crops))
        if isinstance(budget_s, bool) or not isinstance(budget_s, (int, float)) or not budget_s > 0:
            raise InputError(f"budget_s must be a positive number of seconds (e.g. 600); got {budget_s!r}")
        if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, (int, float))
                                   or not epochs > 0):
            raise InputError(f"epochs must be a positive number (e.g. 10), or None to fill the budget; "
                             f"got {epochs!r}")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise InputError(f"lr must be a positive learning rate (e.g. {DEFAULT_LR}); got {lr!r}")
        batch_size = min(_positive_int(batch_size, "batch_size"), len(crops))
        if len(crops) < 2:
            raise InputError("distillation needs at least 2 crops (BatchNorm trains on batches); got 1")
        # Whole batches only: a last batch of one crop would break BatchNorm's batch statistics.
        return cls(views=views, budget_s=float(budget_s), epochs=epochs, batch_size=max(batch_size, 2),
                   steps_per_epoch=len(crops) // max(batch_size, 2), lr=float(lr), seed=int(seed),
                   crop_count=len(crops))

    def steps_for_epochs(self) -> int | None:
        return None if self.epochs is None else max(1, round(self.epochs * self.steps_per_epoch))

    def steps_for_budget(self, seconds_per_step: float) -> int:
        fitting = int(self.budget_s / max(seconds_per_step, 1e-6))
        return max(1, min(fitting, MAX_EPOCHS * self.steps_per_epoch))

    def extends(self, state: dict) -> bool:
        """True when this call asks for more than the finished checkpoint did: more epochs or more time."""
        more_epochs = self.epochs is not None and self.steps_for_epochs() > state["step"]
        more_time = state.get("stopped_by") == "budget" and self.budget_s > state["elapsed_s"]
        return more_epochs or more_time


def _check_targets(targets, crop_count: int) -> list[str]:
    if not isinstance(targets, dict) or not targets:
        raise InputError("targets must be the dict teacher_targets() returns (view name -> (N, D) features)")
    views = _check_views(list(targets))
    shapes = {view: np.shape(targets[view]) for view in views}
    if any(len(shape) != 2 or shape[0] != crop_count for shape in shapes.values()) or \
            len({shape[1] for shape in shapes.values()}) != 1:
        raise InputError(f"targets must hold one (N, D) array per view for the {crop_count} crops; got "
                         f"{shapes}. Compute them with teacher_targets() on the same crops")
    return views


class _Trainer:
    """The student, its optimiser and schedule, and the step loop."""

    def __init__(self, student, crops: np.ndarray, targets: dict[str, np.ndarray], plan: _TrainingPlan):
        import torch

        self.student = student
        self.crops = crops
        self.plan = plan
        self.targets = {view: torch.as_tensor(np.asarray(targets[view], np.float32)) for view in plan.views}
        self.inverse_spread = _inverse_spread(np.concatenate([np.asarray(targets[v]) for v in plan.views]))
        self.step = 0
        self.planned_steps = 1
        self.elapsed = 0.0
        student.requires_grad_(True)
        self.optimizer = torch.optim.AdamW(student.parameters(), lr=plan.lr, weight_decay=WEIGHT_DECAY)
        # Cosine decay computed from the step and the current plan (not saved in the scheduler's state), so
        # a plan extended on resume (more epochs) continues from where the schedule stands.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: self.lr_factor(step))
        self.loss_first = math.nan
        self.recent_losses: list[float] = []
        self.torch_rng = _seeded_torch_rng(plan.seed)

    def plan_steps(self) -> None:
        """A fresh run: BatchNorm statistics re-estimated for the pruned network, then the planned steps
        (the epochs asked for, or what the budget holds); both count against the budget."""
        started = time.monotonic()
        _recalibrate_batchnorm(self.student, self.crops, self.plan.batch_size)
        fixed = self.plan.steps_for_epochs()
        self.planned_steps = fixed if fixed is not None else self.plan.steps_for_budget(self.seconds_per_step())
        self.elapsed += time.monotonic() - started

    def lr_factor(self, step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(step, self.planned_steps) / self.planned_steps))

    # -- the loop --
    def run(self, checkpoint: Path | None, progress) -> DistillResult:
        report, close = resolve_progress(progress, "distilling", unit="step")
        resumed_from, started = self.step, time.monotonic() - self.elapsed
        last_saved = time.monotonic()
        _train_batchnorm_only(self.student)
        consistent = True  # False while the weights are between two steps: such a state is never saved
        # A plan sized by the budget is sized again from real steps once a few have run: the first timing
        # is taken before the kernels warm up and left half the budget unused on the demo's networks.
        replan_at = None if self.plan.epochs is not None else self.step + REPLAN_AFTER_STEPS
        steps_started = time.monotonic()
        try:
            while True:
                self.elapsed = time.monotonic() - started
                stopped_by = self._stop_reason()
                if stopped_by is not None:
                    break
                consistent = False
                self._train_step()
                consistent = True
                if self.step == replan_at:
                    per_step = (time.monotonic() - steps_started) / REPLAN_AFTER_STEPS
                    remaining = self.plan.budget_s - (time.monotonic() - started)
                    self.planned_steps = max(self.step, min(self.step + int(remaining / per_step),
                                                            MAX_EPOCHS * self.plan.steps_per_epoch))
                report(self.step, self.planned_steps)
                if checkpoint is not None and time.monotonic() - last_saved >= CHECKPOINT_EVERY_S:
                    self.elapsed = time.monotonic() - started
                    self._save(checkpoint, finished=False, stopped_by=None)
                    last_saved = time.monotonic()
        except KeyboardInterrupt:
            if checkpoint is not None and consistent:
                self.elapsed = time.monotonic() - started
                self._save(checkpoint, finished=False, stopped_by=None)
            raise
        finally:
            close()
            self.student.eval()
        if checkpoint is not None:
            self._save(checkpoint, finished=True, stopped_by=stopped_by)
        return self.result(stopped_by, resumed_from=resumed_from)

    def _stop_reason(self) -> str | None:
        if self.step >= self.planned_steps:
            return "epochs"
        if self.elapsed >= self.plan.budget_s:
            return "budget"
        return None

    def _train_step(self) -> None:
        pixels, wanted = self._batch(self.step)
        loss = self._loss(_student_features(self.student(pixels)), wanted)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        value = float(loss.detach())
        self.loss_first = value if math.isnan(self.loss_first) else self.loss_first
        self.recent_losses = (self.recent_losses + [value])[-RECENT_LOSSES:]

    def _batch(self, step: int):
        """Crops and targets for ``step``: a pure function of (seed, epoch, step), so resuming needs no
        sampler state."""
        import torch

        plan = self.plan
        epoch, position = divmod(step, plan.steps_per_epoch)
        rng = np.random.default_rng([plan.seed, epoch])
        order = rng.permutation(plan.crop_count)
        view_of_step = rng.integers(len(plan.views), size=plan.steps_per_epoch)
        chosen = np.sort(order[position * plan.batch_size:(position + 1) * plan.batch_size])
        view = plan.views[int(view_of_step[position])]
        pixels = torch.from_numpy(_view(view)(self.crops[chosen]))
        return pixels, self.targets[view][torch.from_numpy(chosen)]

    def _loss(self, features, wanted):
        import torch

        if features.shape != wanted.shape:
            raise InputError(f"the student gives {tuple(features.shape[1:])}-d features, the targets are "
                             f"{tuple(wanted.shape[1:])}-d: distill a student pruned from the teacher's backbone")
        scaled_error = (features - wanted) * self.inverse_spread
        cosine = torch.nn.functional.cosine_similarity(features, wanted, dim=1, eps=1e-8)
        return scaled_error.pow(2).mean() + (1.0 - cosine).mean()

    def seconds_per_step(self) -> float:
        """One forward and backward pass, timed in eval mode so that BatchNorm statistics stay as they are;
        the optimiser's share is small next to it."""
        self.student.eval()
        pixels, wanted = self._batch(0)
        timings = []
        for _ in range(2):  # the first pass pays one-time allocation costs
            started = time.monotonic()
            self._loss(_student_features(self.student(pixels)), wanted).backward()
            timings.append(time.monotonic() - started)
        self.optimizer.zero_grad(set_to_none=True)
        return min(timings) * 1.1

    # -- results and checkpoints --
    def result(self, stopped_by: str, *, resumed_from: int = 0) -> DistillResult:
        return DistillResult(
            steps=self.step, epochs=self.step / self.plan.steps_per_epoch, seconds=round(self.elapsed, 3),
            stopped_by=stopped_by, loss_first=self.loss_first,
            loss_last=float(np.mean(self.recent_losses)) if self.recent_losses else math.nan,
            planned_steps=self.planned_steps, resumed_from=resumed_from)

    def checkpoint_state(self, *, finished: bool, stopped_by: str | None) -> dict:
        import torch

        plan = self.plan
        return {
            "format": CHECKPOINT_FORMAT, "student": self.student.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "step": self.step, "planned_steps": self.planned_steps, "elapsed_s": float(self.elapsed),
            "steps_per_epoch": plan.steps_per_epoch, "loss_first": self.loss_first,
            "recent_losses": list(self.recent_losses), "finished": finished, "stopped_by": stopped_by,
            "seed": plan.seed, "torch_rng": torch.get_rng_state(), "views": list(plan.views),
            "crop_count": plan.crop_count, "batch_size": plan.batch_size,
        }

    def _save(self, path: Path, *, finished: bool, stopped_by: str | None) -> None:
        import torch

        state = self.checkpoint_state(finished=finished, stopped_by=stopped_by)
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    def restore(self, state: dict) -> None:
        _load_student(self.student, state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.elapsed = int(state["step"]), float(state["elapsed_s"])
        self.loss_first, self.recent_losses = float(state["loss_first"]), list(state["recent_losses"])
        self.torch_rng = state["torch_rng"]
        # Epochs asked for now set the plan (more than before: it grows); without epochs, the saved plan,
        # sized by the budget when the run began, stands.
        fixed = self.plan.steps_for_epochs()
        self.planned_steps = fixed if fixed is not None else int(state["planned_steps"])
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base * self.lr_factor(self.step)


def _inverse_spread(features: np.ndarray):
    """1 / the teacher's per-dimension standard deviation; a dimension that barely varies (a dead ReLU
    channel) is floored at a tenth of the typical spread, so that matching its noise cannot dominate the
    loss (measured: a floor of a thousandth made the first losses of MobileNetV2 ~5e4, nearly all from such
    dimensions)."""
    import torch

    spread = features.astype(np.float64).std(axis=0)
    floor = max(float(np.mean(spread)) * 0.1, 1e-8)
    return torch.as_tensor(1.0 / np.maximum(spread, floor), dtype=torch.float32)


RECALIBRATION_CROPS = 512


def _recalibrate_batchnorm(model, crops: np.ndarray, batch_size: int) -> None:
    """Re-estimate every BatchNorm's running statistics on up to RECALIBRATION_CROPS crops (forward passes
    only): the statistics of the unpruned network no longer describe the pruned one's activations, and
    re-estimating them is the cheapest recovery there is (measured on the demo's MobileNetV2 pruned at 0.5:
    feature cosine to the original 0.30 -> 0.54 in 11 s)."""
    import torch
    from torch import nn

    norms = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [norm.momentum for norm in norms]
    _train_batchnorm_only(model)
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over every batch seen
    picks = np.linspace(0, len(crops) - 1, num=min(RECALIBRATION_CROPS, len(crops))).round().astype(int)
    with torch.no_grad():
        for start in range(0, len(picks), batch_size):
            model(torch.from_numpy(crops[picks[start:start + batch_size]]))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.eval()


def _seeded_torch_rng(seed: int):
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.get_rng_state()


def _train_batchnorm_only(model) -> None:
    """BatchNorm learns the pruned network's new statistics; dropout stays off, since it would scramble
    the very features the student is asked to match."""
    from torch import nn

    model.eval()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.train()


def _student_features(output):
    # A FeatureModel with a classifier returns (features, logits[, map]); only the features are distilled.
    return output[0] if isinstance(output, tuple) else output


def _load_checkpoint(path, plan: _TrainingPlan) -> dict | None:
    import torch

    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"the distillation checkpoint {str(path)!r} cannot be read ({type(exc).__name__}: "
                         f"{exc}); delete it to start the distillation afresh") from exc
    _check_checkpoint_matches(path, state, plan)
    return state


def _check_checkpoint_matches(path: Path, state: dict, plan: _TrainingPlan) -> None:
    """A checkpoint resumes only the run it was written by: the same crops, views and batch size."""
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{str(path)!r} is not a pixelmine distillation checkpoint (format "
                         f"{CHECKPOINT_FORMAT}); delete it or pass another checkpoint path")
    saved = {key: state.get(key) for key in ("crop_count", "views", "batch_size", "seed")}
    wanted = {"crop_count": plan.crop_count, "views": plan.views, "batch_size": plan.batch_size,
              "seed": plan.seed}
    if saved != wanted:
        raise InputError(f"the distillation checkpoint {str(path)!r} was written for {saved}, this run has "
                         f"{wanted}; run with the same crops and settings, or delete the checkpoint to start "
                         "afresh")


def _load_student(student, state: dict) -> None:
    try:
        student.load_state_dict(state["student"])
    except RuntimeError as exc:
        raise InputError("the distillation checkpoint was written for a student of another structure; "
                         "prune the backbone with the same sparsity as the run that wrote it, or delete the "
                         f"checkpoint to start afresh ({str(exc).splitlines()[0]})") from exc


def _finished_earlier(student, state: dict) -> DistillResult:
    """The student with the finished checkpoint's weights, and what that run did, with no training."""
    _load_student(student, state)
    student.eval()
    losses = state["recent_losses"]
    return DistillResult(
        steps=int(state["step"]), epochs=state["step"] / state["steps_per_epoch"],
        seconds=round(float(state["elapsed_s"]), 3), stopped_by="finished earlier",
        loss_first=float(state["loss_first"]), loss_last=float(np.mean(losses)) if losses else math.nan,
        planned_steps=int(state["planned_steps"]), resumed_from=int(state["step"]))
