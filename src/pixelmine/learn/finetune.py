"""Fine-tuning a pretrained backbone (PyTorch): the top replaced, trained frozen, then the top blocks unfrozen.

Phase 1, backbone frozen: the new linear top starts as a logistic regression fitted on the cached features
of the training images (``probe_init``; "LP-FT", Kumar et al. 2022: fine-tuning from a fitted top distorts
the pretrained features less than from a random one), then ``frozen_epochs`` of augmented images train only
the top, the backbone running without gradients and with fixed batch-norm statistics. Phase 2
(``epochs``): the top ``unfreeze_blocks`` backbone blocks learn too, at ``backbone_lr`` (lower than the top's
``lr``, so pretrained features are adjusted, not erased). Gradients are clipped to norm 5.
Both phases: AdamW, a linear warm-up and a cosine learning-rate schedule per phase, label smoothing,
augmentation of the
training images (``augment="augmix"`` adds AugMix, for corruptions). Early stopping on the validation loss
(phase 2) with ``patience``; the weights of the epoch with the lowest validation loss are kept.

``adversarial_eps > 0``: fast adversarial training (Wong, Rice & Kolter 2020). Every training batch is
replaced by its FGSM-with-random-start version at that L-inf radius, made in pixel space ([0, 1], before the
backbone's normalisation) with the network in its training mode. One-step training can overfit
catastrophically (robust accuracy falls to 0 within an epoch while the training loss looks fine), so after
every epoch PGD-10 accuracy (balanced over the classes) is measured on a fixed sample of at most 128 val
images, and that score, not the val loss, picks the kept epoch and drives early stopping (ties: the lower val
loss). It is ``val_pgd_accuracy`` in the history. The radius ramps up linearly over the first epoch.

A checkpoint is written after every epoch (``checkpoints/epoch-NNN.pt``, only the newest kept, plus
``checkpoints/best.pt``); ``resume=True`` continues from it. Every epoch reseeds from (seed, epoch), so a
resumed run is identical to an uninterrupted one. CPU by default; CUDA with fp16 autocast when present
(never autocast on CPU).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..progress import resolve_progress
from . import artifacts
from .config import TrainConfig
from .metrics import evaluate
from .outcome import TrainOutcome
from .network import (ImageDataset, PixelLogits, augmentation, build_network, set_trainable, to_network_pixels,
                      to_unit_pixels, train_mode, tta_moves, tta_views)
from .novelty import NoveltyScorer
from .search import stratified_subsample
from ..fileio import atomic_path, atomic_write_json

log = logging.getLogger(__name__)
MAX_GRAD_NORM = 5.0  # gradient clipping: one odd batch cannot throw the pretrained weights far
ROBUST_VAL_IMAGES = 128  # the val sample PGD scores every epoch: PGD-10 costs 11 forward and 10 backward passes
ROBUST_VAL_STEPS = 10
EPS_RAMP_EPOCHS = 1  # adversarial training reaches its full radius after this many epochs


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("finetune.device is 'cuda' but PyTorch sees no CUDA GPU here; use device='cpu' or 'auto'")
    return name


def input_spec(backbone: str, config: TrainConfig, root=None) -> dict:
    """How images become the network's input: size, resize, crop, interpolation (saved in model.json)."""
    from .. import backbones

    pre = backbones.get(backbone, root=root).preprocessing
    size = config.finetune.image_size or pre.input_size
    resize = int(round(size * pre.resize / pre.input_size))
    return {"input_size": size, "resize": resize, "crop": config.finetune.crop, "interpolation": pre.interpolation,
            "mean": list(pre.mean), "std": list(pre.std)}


def _dataset(paths, targets, spec: dict, augment=None) -> ImageDataset:
    return ImageDataset(list(paths), np.asarray(targets), input_size=spec["input_size"], resize=spec["resize"],
                        crop=spec["crop"], interpolation=spec["interpolation"], augment=augment)


def _loader(dataset, batch_size: int, *, num_workers: int = 0, shuffle: bool = False, generator=None):
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                                       num_workers=num_workers, drop_last=False)


@torch.no_grad()
def predict_loader(net, loader, *, device: str, moves=(), amp: bool = False):
    """(probs (N, K), features (N, D), ok (N,) bool) over a loader of (pixels, target, ok); ``moves``: the
    test-time augmentations whose probabilities are averaged with the plain image's."""
    net.eval()
    probs, feats, oks = [], [], []
    for pixels, _, ok in loader:
        pixels = pixels.to(device)
        views = tta_views(pixels, moves)
        total = None
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp):
            for k, view in enumerate(views):
                logits, features = net(view)
                p = torch.softmax(logits.float(), dim=1)
                total = p if total is None else total + p
                if k == 0:
                    feats.append(features.float().cpu())
        probs.append((total / len(views)).cpu())
        oks.append(ok)
    if not probs:
        return np.zeros((0, net.classifier.out_features)), np.zeros((0, net.classifier.in_features)), np.zeros(0, bool)
    return torch.cat(probs).numpy(), torch.cat(feats).numpy(), torch.cat(oks).numpy().astype(bool)


class _Trainer:
    """The epoch loop with checkpoints; one instance per training run."""

    def __init__(self, net, config: TrainConfig, train_ds, val_ds, checkpoints: Path, device: str, report):
        self.net = net
        self.config = config
        self.ft = config.finetune
        self.train_ds = train_ds
        self.val_ds = val_ds
        self.dir = checkpoints
        self.device = device
        self.amp = device == "cuda" and self.ft.mixed_precision
        self.report = report
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=self.ft.label_smoothing)
        self.steps_per_epoch = max(1, math.ceil(len(train_ds) / self.ft.batch_size))
        self.total_epochs = self.ft.frozen_epochs + self.ft.epochs
        self.state = {"epoch": 0, "best_val_loss": math.inf, "best_epoch": -1, "bad_epochs": 0, "history": [],
                      "stopped_early": False, "skipped_images": 0}
        self.eps = self.ft.adversarial_eps
        self.robust_val = self._robust_val_sample() if self.eps > 0 else None
        if self.robust_val is not None:
            self.state["best_val_pgd_accuracy"] = None

    def _phase(self, epoch: int) -> str:
        return "frozen" if epoch < self.ft.frozen_epochs else "unfrozen"

    def _optimizer(self, phase: str):
        unfreeze = 0 if phase == "frozen" else self.ft.unfreeze_blocks
        unfrozen = set_trainable(self.net, unfreeze)
        groups = [{"params": list(self.net.classifier.parameters()), "lr": self.ft.lr}]
        if unfrozen:
            groups.append({"params": unfrozen, "lr": self.ft.backbone_lr})
        optimizer = torch.optim.AdamW(groups, weight_decay=self.ft.weight_decay)
        epochs = self.ft.frozen_epochs if phase == "frozen" else self.ft.epochs
        total = max(1, epochs * self.steps_per_epoch)
        warmup = int(round(self.ft.warmup_epochs * self.steps_per_epoch))

        def factor(step: int) -> float:  # linear warm-up, then cosine from 1 to 0.01
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return optimizer, scheduler

    def _checkpoint_path(self, epoch: int) -> Path:
        return self.dir / f"epoch-{epoch:03d}.pt"

    def latest_checkpoint(self) -> Path | None:
        found = sorted(self.dir.glob("epoch-*.pt"))
        return found[-1] if found else None

    def run(self, *, resume: bool, on_epoch=None) -> dict:
        self.dir.mkdir(parents=True, exist_ok=True)
        optimizer = scheduler = None
        phase = None
        pending = None
        latest = self.latest_checkpoint() if resume else None
        if latest is not None:
            pending = torch.load(latest, map_location=self.device, weights_only=False)
            self.net.load_state_dict(pending["model"])
            self.state = pending["state"]
            log.info("resuming fine-tuning after epoch %d from %s", self.state["epoch"], latest)
        elif not resume:
            for stale in self.dir.glob("*.pt"):
                stale.unlink()
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        for epoch in range(self.state["epoch"], self.total_epochs):
            if self.state["stopped_early"]:
                break
            if self._phase(epoch) != phase:
                phase = self._phase(epoch)
                optimizer, scheduler = self._optimizer(phase)
                if pending is not None and pending["phase"] == phase:
                    optimizer.load_state_dict(pending["optimizer"])
                    scheduler.load_state_dict(pending["scheduler"])
                    scaler.load_state_dict(pending["scaler"])
                pending = None
            started = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            train_loss, train_acc = self._train_epoch(epoch, optimizer, scheduler, scaler)
            val_loss, val_acc = self._validate()
            monitored = val_loss if val_loss is not None else train_loss
            record = {"epoch": epoch + 1, "phase": phase, "train_loss": train_loss, "train_accuracy": train_acc,
                      "val_loss": val_loss, "val_accuracy": val_acc, "lr": lr}
            robust = None
            if self.robust_val is not None:
                robust = record["val_pgd_accuracy"] = self._robust_validate()
            record["seconds"] = round(time.perf_counter() - started, 2)
            self.state["history"].append(record)
            if self._improved(monitored, robust):
                self.state.update(best_val_loss=monitored, best_epoch=epoch + 1, bad_epochs=0)
                if robust is not None:
                    self.state["best_val_pgd_accuracy"] = robust
                _atomic_torch_save(self.net.state_dict(), self.dir / "best.pt")
            else:
                self.state["bad_epochs"] += 1
            if phase == "unfrozen" and self.state["bad_epochs"] >= self.ft.patience > 0:
                self.state["stopped_early"] = True
            self.state["epoch"] = epoch + 1
            _atomic_torch_save({"model": self.net.state_dict(), "optimizer": optimizer.state_dict(),
                                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                                "phase": phase, "state": self.state}, self._checkpoint_path(epoch + 1))
            for old in self.dir.glob("epoch-*.pt"):
                if old != self._checkpoint_path(epoch + 1):
                    old.unlink()
            log.info("epoch %d/%d (%s): train loss %.4f acc %.3f, val loss %s acc %s%s, %.1f s", epoch + 1,
                     self.total_epochs, phase, train_loss, train_acc, _fmt(val_loss), _fmt(val_acc),
                     "" if robust is None else f", val PGD-{ROBUST_VAL_STEPS} acc {robust:.3f} at eps "
                                               f"{self.eps * 255:g}/255", record["seconds"])
            if on_epoch is not None:
                on_epoch(record)
        best = self.dir / "best.pt"
        if best.exists():
            self.net.load_state_dict(torch.load(best, map_location=self.device, weights_only=True))
        return self.state

    def _improved(self, monitored: float, robust: float | None) -> bool:
        """Whether this epoch's weights replace the kept ones: a lower val loss, or with adversarial training a
        higher PGD val accuracy (``best_val_loss`` is then the val loss of the kept epoch, the tie-breaker)."""
        lower_loss = monitored < self.state["best_val_loss"] - 1e-4
        if robust is None:
            return lower_loss
        best = self.state.get("best_val_pgd_accuracy")
        return best is None or robust > best + 1e-9 or (robust >= best - 1e-9 and lower_loss)

    def _train_epoch(self, epoch: int, optimizer, scheduler, scaler) -> tuple[float, float]:
        seed = self.config.seed * 100_003 + epoch  # per epoch: a resumed run draws the same numbers
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        attack_generator = torch.Generator().manual_seed(seed + 1)  # the random starts: not the shuffle's draws
        loader = _loader(self.train_ds, self.ft.batch_size, num_workers=self.ft.num_workers, shuffle=True,
                         generator=generator)
        train_mode(self.net, freeze_batchnorm=self.ft.freeze_batchnorm)
        if self._phase(epoch) == "frozen":
            self.net.backbone.eval()
        total_loss, correct, seen = 0.0, 0, 0
        for step, (pixels, targets, ok) in enumerate(loader):
            if not ok.all():
                self.state["skipped_images"] += int((~ok).sum())
                pixels, targets = pixels[ok], targets[ok]
                if len(targets) == 0:
                    continue
            pixels, targets = pixels.to(self.device), targets.to(self.device)
            if self.eps > 0:
                pixels = self._adversarial(pixels, targets, attack_generator,
                                           self._ramped_eps(epoch, step))
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=self.amp):
                logits, _ = self.net(pixels)
                loss = self.loss_fn(logits.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], MAX_GRAD_NORM)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total_loss += float(loss.detach()) * len(targets)
            correct += int((logits.argmax(1) == targets).sum())
            seen += len(targets)
            self.report(epoch * self.steps_per_epoch + step + 1, self.total_epochs * self.steps_per_epoch)
        return total_loss / max(seen, 1), correct / max(seen, 1)

    def _ramped_eps(self, epoch: int, step: int) -> float:
        """The training radius, ramped up linearly over the first epoch: the probe-initialised top has never
        seen perturbed images, and the full radius at once made its first updates throw it to one class."""
        progress = (epoch * self.steps_per_epoch + step + 1) / max(1, self.steps_per_epoch * EPS_RAMP_EPOCHS)
        return self.eps * min(1.0, progress)

    def _adversarial(self, pixels: torch.Tensor, targets: torch.Tensor, generator, eps: float) -> torch.Tensor:
        """The FGSM-with-random-start version of a uint8 NHWC batch, as float NHWC pixels in 0..255. Made in
        fp32 (no autocast): fp16 gradients underflow to 0 for the small ones, and the sign of 0 is no step."""
        from ..trust.attacks import fgsm_random_start

        adversarial = fgsm_random_start(PixelLogits(self.net), to_unit_pixels(pixels), targets, eps,
                                        generator=generator)
        return to_network_pixels(adversarial)

    def _robust_val_sample(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(pixels (n, 3, S, S) in [0, 1], targets) of a fixed stratified sample of the val split (decodable
        images only), or None when there is no val split: then the lowest training loss picks the epoch."""
        if len(self.val_ds) == 0:
            return None
        rows = stratified_subsample(np.asarray(self.val_ds.targets), ROBUST_VAL_IMAGES, self.config.seed)
        items = [self.val_ds[int(row)] for row in rows]
        items = [(pixels, target) for pixels, target, ok in items if ok]
        if not items:
            return None
        pixels = to_unit_pixels(torch.stack([pixels for pixels, _ in items]))
        return pixels, torch.as_tensor([target for _, target in items], dtype=torch.int64)

    def _robust_validate(self) -> float:
        """PGD-10 accuracy at the training eps on the fixed val sample; the same random starts every epoch, so
        epochs differ by their weights only."""
        from ..trust.attacks import robust_accuracy

        pixels, targets = self.robust_val
        correct, _ = robust_accuracy(PixelLogits(self.net), pixels, targets, self.eps, attack="pgd",
                                     steps=ROBUST_VAL_STEPS, batch_size=self.ft.batch_size,
                                     generator=torch.Generator().manual_seed(self.config.seed))
        # balanced over the classes: a network that answers the majority class for everything is "robust"
        # at that class's share of plain accuracy, and must not win the epoch for it (it scores 1 / K here)
        labels = targets.numpy()
        return float(np.mean([correct[labels == c].mean() for c in np.unique(labels)]))

    @torch.no_grad()
    def _validate(self) -> tuple[float | None, float | None]:
        if len(self.val_ds) == 0:
            return None, None
        loader = _loader(self.val_ds, self.ft.batch_size, num_workers=self.ft.num_workers)
        probs, _, ok = predict_loader(self.net, loader, device=self.device, amp=self.amp)
        targets = np.asarray(self.val_ds.targets)[ok]
        probs = probs[ok]
        if len(targets) == 0:
            return None, None
        loss = float(-np.log(np.clip(probs[np.arange(len(targets)), targets], 1e-12, 1)).mean())
        return loss, float((probs.argmax(1) == targets).mean())


def probe_initialise(net, X: np.ndarray, labels: np.ndarray, train: np.ndarray, val: np.ndarray,
                     config: TrainConfig) -> dict:
    """Set ``net.classifier`` to a logistic regression fitted on cached features (C chosen on val).

    The probe is fitted on the raw features, not standardised ones: folding a standardisation into the
    linear layer divides by per-feature spreads, and features that barely vary get weights in the hundreds,
    which turn the small feature shifts of augmentation and training into huge logits (measured on the demo:
    largest weight 272 standardised, 0.34 raw, same accuracy).
    """
    from .heads import SEARCH_SPACES, LogisticProbe
    from .search import search

    estimator = LogisticProbe(class_weight=config.class_weight, standardize=False, random_state=config.seed)
    # Half the search budget (30 s by default): a starting point needs less care than a final head, and
    # --search-budget still governs it, so raising it makes this search complete too.
    found = search(estimator, SEARCH_SPACES["logreg"], X[train], labels[train], X[val], labels[val],
                   budget_s=config.search_budget_s / 2, max_samples=config.search_max_samples,
                   seed=config.seed)
    probe = estimator.set_params(**found.best_params).fit(X[train], labels[train])
    logistic = probe.model_[-1]
    weight, bias = logistic.coef_.astype(np.float64), logistic.intercept_.astype(np.float64)
    if weight.shape[0] == 1:  # binary: sklearn keeps one row (the positive class)
        weight, bias = np.vstack([-weight / 2, weight / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    with torch.no_grad():
        net.classifier.weight.copy_(torch.as_tensor(weight, dtype=net.classifier.weight.dtype))
        net.classifier.bias.copy_(torch.as_tensor(bias, dtype=net.classifier.bias.dtype))
    return {"params": found.best_params, "trials": found.trials,
            "note": found.cut_short_note("the probe initialisation's search for C")}


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _atomic_torch_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def train_finetune(root, directory: Path, data, split, X: np.ndarray, config: TrainConfig, *, resume: bool = False,
                   progress="auto", on_epoch=None):
    """Fine-tune ``config.backbone`` on the split; returns a TrainOutcome (see train.py)."""
    from .probe import base_head, fit_oof

    ft = config.finetune
    device = resolve_device(ft.device)
    classes = sorted(set(split.labels.tolist()))
    targets = np.searchsorted(classes, split.labels)
    paths = np.asarray(data.paths, dtype=object)
    train, val, test = (split.rows(s) for s in ("train", "val", "test"))
    notes = []
    started = time.perf_counter()
    all_train = train
    if ft.max_train_images is not None and len(train) > ft.max_train_images:
        keep = stratified_subsample(split.labels[train], ft.max_train_images, config.seed)
        notes.append(f"fine-tuned on a stratified sample of {len(keep)} of the {len(train)} training images "
                     "(finetune.max_train_images)")
        train = train[keep]
    spec = input_spec(config.backbone, config, root)
    torch.manual_seed(config.seed)
    net = build_network(config.backbone, len(classes), ft.dropout, device=device, root=root)
    initialised = None
    if ft.probe_init and not (resume and any((directory / "checkpoints").glob("epoch-*.pt"))):
        initialised = probe_initialise(net, X, split.labels, all_train, val, config)  # features: all of train
        if initialised["note"]:
            notes.append(initialised["note"])
    augment = augmentation(ft, spec["input_size"], spec["interpolation"])
    train_ds = _dataset(paths[train], targets[train], spec, augment)
    val_ds = _dataset(paths[val], targets[val], spec)
    report, close = resolve_progress(progress, f"fine-tune {config.backbone}", unit="batch")
    try:
        trainer = _Trainer(net, config, train_ds, val_ds, directory / "checkpoints", device, report)
        state = trainer.run(resume=resume, on_epoch=on_epoch)
    finally:
        close()
    train_s = time.perf_counter() - started
    if state["skipped_images"]:
        notes.append(f"{state['skipped_images']} training images could not be decoded and were skipped")
    robustness = {}
    if ft.adversarial_eps > 0:
        val_images = 0 if trainer.robust_val is None else len(trainer.robust_val[1])
        robustness["adversarial_training"] = {
            "eps": ft.adversarial_eps, "eps_255": round(ft.adversarial_eps * 255, 4),
            "train_attack": "fgsm_random_start", "val_attack": f"pgd-{ROBUST_VAL_STEPS}", "val_images": val_images,
            "best_val_pgd_accuracy": state.get("best_val_pgd_accuracy")}
        if not val_images:
            notes.append("adversarial training had no decodable val images to measure PGD accuracy on; the epoch "
                         "with the lowest training loss (on adversarial images) was kept")
    amp = device == "cuda" and ft.mixed_precision
    t0 = time.perf_counter()
    test_loader = _loader(_dataset(paths[test], targets[test], spec), ft.batch_size, num_workers=ft.num_workers)
    probs, _, ok = predict_loader(net, test_loader, device=device, moves=tta_moves(ft), amp=amp)
    if not ok.all():
        notes.append(f"{int((~ok).sum())} test images could not be decoded and are left out of the test metrics")
    test_eval = evaluate(split.labels[test][ok], probs[ok], classes, ids=[split.ids[i] for i in test[ok]],
                         n_bootstrap=config.bootstrap, seed=config.seed)
    test_s = time.perf_counter() - t0
    # Novelty on the fine-tuned network's own features of (a sample of) the training images.
    reference = train[stratified_subsample(split.labels[train], 2000, config.seed)]
    ref_loader = _loader(_dataset(paths[reference], targets[reference], spec), ft.batch_size,
                         num_workers=ft.num_workers)
    _, ref_features, ref_ok = predict_loader(net, ref_loader, device=device, amp=amp)
    novelty = NoveltyScorer(quantile=config.novelty_quantile, random_state=config.seed).fit(ref_features[ref_ok])
    # Out-of-fold probabilities: k fine-tunings would cost k times the training; a logistic probe on the
    # pretrained backbone's cached features gives every labelled image an honest held-out probability.
    oof_probs, folds, oof_eval, oof_notes = fit_oof(base_head(config, "logreg"), X, split.labels, split, config)
    net_cpu = net.to("cpu")
    _atomic_torch_save(net_cpu.state_dict(), directory / "weights.pt")
    artifacts.atomic_joblib(directory / "novelty.joblib", novelty)
    atomic_write_json(directory / "history.json", state)
    network_info = {**spec, "dropout": ft.dropout, "tta_moves": tta_moves(ft)}
    return TrainOutcome(
        kind="finetune", head_params={"frozen_epochs": ft.frozen_epochs, "epochs": ft.epochs,
                                      "unfreeze_blocks": ft.unfreeze_blocks, "lr": ft.lr,
                                      "backbone_lr": ft.backbone_lr},
        test=test_eval, oof_probs=oof_probs, oof_folds=folds, oof=oof_eval,
        oof_model=f"logreg on pretrained {config.backbone} features", search=None,
        timings={"train_s": round(train_s, 2), "test_s": round(test_s, 2), "epochs_run": state["epoch"],
                 "best_epoch": state["best_epoch"], "device": device,
                 "probe_init": None if initialised is None else initialised["params"]},
        notes=notes + oof_notes, extra_info={"network": network_info, "history": state["history"], **robustness})
