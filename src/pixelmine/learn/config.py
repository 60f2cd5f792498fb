"""Configuration of the learn stage: frozen dataclasses with commented fields and units.

``TrainConfig.from_mapping`` builds one from a file's dict (unknown keys are errors); keyword arguments
and CLI flags override the file. The resolved config is saved with every run and every model.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..errors import InputError
from ..defaults import DEFAULT_BACKBONE
from ..config import check_keys

HEAD_NAMES = ("auto", "logreg", "svm", "knn", "finetune")
FEATURE_HEADS = ("logreg", "svm", "knn")
SPLIT_NAMES = ("train", "val", "test")
AUGMENT_NAMES = ("standard", "augmix")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class SplitConfig:
    """How labelled images are divided into train / val / test."""

    train: float = 0.70  # fractions of the labelled images (per class); must sum to 1
    val: float = 0.15
    test: float = 0.15
    seed: int = 0  # same seed + same data -> same split
    column: str | None = None  # use this manifest/metadata column (train/val/test) instead of a random split
    near_duplicate_cosine: float | None = 0.98  # features at least this similar (cosine, after centring) share a
    # split; None disables near-duplicate grouping (exact duplicates are always one image)

    def check(self) -> None:
        for name in SPLIT_NAMES:
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise InputError(f"the split fraction {name}={value!r} must be between 0 and 1")
        total = self.train + self.val + self.test
        if abs(total - 1) > 1e-6:
            raise InputError(f"split fractions must sum to 1; got train={self.train} + val={self.val} + "
                             f"test={self.test} = {total:g}")
        if self.train <= 0 or self.test <= 0:
            raise InputError("the train and test fractions must be above 0 (a model needs data to learn from and "
                             f"data to be measured on); got train={self.train}, test={self.test}")
        if self.near_duplicate_cosine is not None and not 0 < self.near_duplicate_cosine <= 1:
            raise InputError(f"near_duplicate_cosine must be in (0, 1] or None; got {self.near_duplicate_cosine!r}")


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning a pretrained backbone in PyTorch: frozen phase, then the top blocks unfrozen."""

    image_size: int | None = None  # input side in pixels; None = the backbone's own input size
    crop: bool = False  # False: the whole image is resized (nothing cut off); True: the backbone's centre crop
    probe_init: bool = True  # start the new top from a logistic regression on the cached features (LP-FT):
    # the frozen-backbone phase at the cost of a probe, not of epochs of forward passes
    frozen_epochs: int = 0  # then epochs training only the top on augmented images (backbone frozen)
    epochs: int = 8  # further epochs with the top `unfreeze_blocks` blocks trainable
    unfreeze_blocks: int = 3  # backbone blocks (counted from the top) trained in the second phase
    batch_size: int = 32
    lr: float = 1e-3  # AdamW learning rate of the new top, per batch of `batch_size`
    backbone_lr: float = 1e-4  # learning rate of the unfrozen blocks (lower: keep pretrained features)
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    patience: int = 3  # early stopping: epochs without a lower validation loss before stopping
    dropout: float = 0.0  # before the new linear top; 0 by default: dropout noise on a probe-initialised top
    # cost 10 points of training accuracy at the start on the demo (0.875 -> 0.77)
    warmup_epochs: float = 0.5  # linear learning-rate warm-up at the start of each phase: Adam's first steps
    # move every weight by about the full learning rate, whatever its gradient
    freeze_batchnorm: bool = True  # batch-norm layers keep their pretrained statistics (their scale and shift
    # still learn in unfrozen blocks): small batches give noisy statistics that shift every feature
    # augmentation (training images only)
    crop_scale: tuple[float, float] | None = (0.6, 1.0)  # random resized crop: fraction of the area kept;
    # None: no crop and no resampling beyond the input resize (fine texture, small defects)
    hflip: bool = True
    vflip: bool = False  # also flip vertically (right for textures, satellite or microscope images)
    turns: int = 0  # random exact rotations: 0 none, 2 half turns (0/180 degrees: keeps a diagonal texture's
    # orientation), 4 quarter turns (0/90/180/270: for images without any orientation)
    rotation: float = 10.0  # degrees, uniform in [-rotation, rotation] (interpolates: 0 for fine texture)
    color_jitter: float = 0.2  # brightness / contrast / saturation jitter strength
    augment: str = "standard"  # "augmix": torchvision's AugMix after the augmentation above, for robustness
    # to corruptions (blur, noise, compression)
    # robustness to adversarial pixels
    adversarial_eps: float = 0.0  # > 0: fast adversarial training (FGSM with a random start, Wong et al. 2020)
    # at this L-inf radius in pixel units of [0, 1] (the CLI's --adversarial 2 is 2/255 = 0.0078), keeping the
    # epoch with the best PGD-10 accuracy on (up to 128 images of) the val split; 0 trains on clean images
    tta: bool = True  # predict as the mean over the image and the exact moves training used (flips, turns)
    max_train_images: int | None = None  # subsample the train split (stratified) to bound training time
    device: str = "auto"  # auto (CUDA when present, else CPU), cpu, cuda
    mixed_precision: bool = True  # fp16 autocast on CUDA only; never on CPU (no bf16 hardware assumed)
    num_workers: int = 0  # DataLoader decoding processes; 0 decodes in the training process

    def check(self) -> None:
        for name in ("frozen_epochs", "epochs", "unfreeze_blocks", "patience", "num_workers"):
            if getattr(self, name) < 0:
                raise InputError(f"finetune.{name} must be >= 0; got {getattr(self, name)!r}")
        if self.frozen_epochs + self.epochs < 1:
            raise InputError("fine-tuning needs at least one epoch: set finetune.frozen_epochs or finetune.epochs >= 1")
        if self.warmup_epochs < 0 or not 0 <= self.dropout < 1:
            raise InputError(f"finetune.warmup_epochs must be >= 0 and finetune.dropout in [0, 1); got "
                             f"{self.warmup_epochs!r}, {self.dropout!r}")
        if self.batch_size < 1:
            raise InputError(f"finetune.batch_size must be >= 1; got {self.batch_size!r}")
        if self.turns not in (0, 2, 4):
            raise InputError(f"finetune.turns must be 0 (none), 2 (half turns) or 4 (quarter turns); got {self.turns!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"finetune.device must be auto, cpu or cuda; got {self.device!r}")
        if self.augment not in AUGMENT_NAMES:
            raise InputError(f"finetune.augment {self.augment!r} is not known; choose one of: "
                             f"{', '.join(AUGMENT_NAMES)}")
        if isinstance(self.adversarial_eps, bool) or not isinstance(self.adversarial_eps, (int, float)) \
                or not 0 <= self.adversarial_eps <= 1:
            raise InputError("finetune.adversarial_eps must be a number in [0, 1] (pixel units: 2/255 = 0.0078 is "
                             f"two grey levels; 0 turns adversarial training off); got {self.adversarial_eps!r}")
        low, high = self.crop_scale if self.crop_scale is not None else (1.0, 1.0)
        if not 0 < low <= high <= 1:
            raise InputError("finetune.crop_scale must be (low, high) with 0 < low <= high <= 1; "
                             f"got {self.crop_scale!r}")


@dataclass(frozen=True)
class AutoConfig:
    """Automatic model selection (``head="auto"``, the default): see :mod:`pixelmine.learn.auto`."""

    budget_s: float = 300.0  # wall-clock seconds for the whole search (extraction of candidates included)
    backbones: tuple[str, ...] = ("mobilenet_v2", "efficientnet_lite0")  # tried when their weights are here
    extra_backbones: tuple[str, ...] = ()  # backbones the user names (may download their weights)
    full_frame: bool = True  # also try each backbone on the whole frame at the images' own size
    max_full_frame: int = 320  # cap of that size, pixels (cost grows with its square)
    heads: tuple[str, ...] = FEATURE_HEADS  # the first is the reference head (always scored)
    screen_heads: tuple[str, ...] = ("logreg", "knn")  # the screen ranks feature sets with the cheap heads:
    # the calibrated SVM cost 10x a logistic regression there (30 s vs 3 s on 2,120 Fashion-MNIST images)
    # and never changed which feature sets went on; the finalists get every head
    finalists: int = 2  # feature sets kept after the screen (and concatenated)
    min_screen_images: int = 500  # the screen's sample of train + val: a quarter of it, within these bounds
    max_screen_images: int = 3000
    max_cv_images: int = 20_000  # the final rung's cross-validation uses at most this many (stratified)
    finetune: bool = True  # fine-tune too when the budget left covers its estimated time

    def check(self) -> None:
        if not self.budget_s >= 0:
            raise InputError(f"auto.budget_s must be >= 0 seconds; got {self.budget_s!r}")
        for name in ("heads", "screen_heads"):
            heads = getattr(self, name)
            if not heads or [h for h in heads if h not in FEATURE_HEADS]:
                raise InputError(f"auto.{name} must be a non-empty list of {', '.join(FEATURE_HEADS)}; got {list(heads)!r}")
        if self.finalists < 1 or self.min_screen_images < 10 or self.max_screen_images < self.min_screen_images:
            raise InputError("auto.finalists must be >= 1 and 10 <= auto.min_screen_images <= auto.max_screen_images; "
                             f"got {self.finalists}, {self.min_screen_images}, {self.max_screen_images}")
        if self.max_cv_images < self.min_screen_images or self.max_full_frame < 32:
            raise InputError("auto.max_cv_images must be >= auto.min_screen_images and auto.max_full_frame >= 32")


@dataclass(frozen=True)
class TrainConfig:
    """Everything `pixelmine train` needs; saved with the run and the model."""

    head: str = "auto"  # auto (choose by cross-validation) | logreg | svm | knn | finetune
    name: str | None = None  # model name (folder under models/); default "auto", or "<head>-<backbone>"
    backbone: str = DEFAULT_BACKBONE  # feature backbone (probes) or the network to fine-tune; for auto, the
    # reference: its features group near-duplicates for the split, and its logistic probe is always scored
    split: SplitConfig = field(default_factory=SplitConfig)
    class_weight: str | None = "balanced"  # "balanced": weight classes inversely to their frequency; None: equal
    standardize: bool = True  # scale features to zero mean, unit variance before the head
    search_budget_s: float = 60.0  # hyper-parameter search on the val split stops after this many seconds
    search_max_samples: int = 20_000  # the search fits on at most this many train images (stratified sample)
    refit_on_val: bool = True  # refit the chosen hyper-parameters on train + val before testing
    cv_folds: int = 5  # folds for the out-of-fold probabilities of every labelled image
    bootstrap: int = 1000  # bootstrap resamples for the confidence intervals
    min_confidence: float | None = None  # predictions below this top-1 probability are `uncertain`;
    # None = 1.5 / number of classes, capped at 0.6
    min_margin: float = 0.1  # predictions whose top two probabilities are closer than this are `uncertain`
    novelty_quantile: float = 0.99  # predictions farther from the training data than this quantile of the
    # training images' own neighbour distances are `uncertain`
    exclude_classes: tuple[str, ...] = ()  # labels left out of training (e.g. a class with one image)
    clean: bool = False  # leave out leaking copies and confident label issues that discovery found (clean.py)
    clean_min_issue_probability: float = 0.5  # a flagged label issue is left out when its suggested class is
    # at least this probable (out-of-fold)
    balance_groups: str | None = None  # a metadata column: refit the head of `balance_base` with every group x
    # class cell weighted equally (last-layer retraining, learn/balance.py) instead of training from scratch
    balance_base: str | None = None  # the probe model to refit; None: the newest one (trained first if none)
    seed: int = 0
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    auto: AutoConfig = field(default_factory=AutoConfig)

    @property
    def model_name(self) -> str:
        if self.name:
            return self.name
        return "auto" if self.head == "auto" else re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{self.head}-{self.backbone}")

    def check(self) -> "TrainConfig":
        if self.head not in HEAD_NAMES:
            raise InputError(f"the head {self.head!r} is not known; choose one of: {', '.join(HEAD_NAMES)}")
        if not _NAME_RE.match(self.model_name):
            raise InputError(f"the model name {self.model_name!r} must be 1-100 letters, digits, '_', '-' or '.', "
                             "starting with a letter or digit")
        if self.class_weight not in (None, "balanced"):
            raise InputError(f"class_weight must be 'balanced' or None; got {self.class_weight!r}")
        if self.cv_folds < 2:
            raise InputError(f"cv_folds must be >= 2; got {self.cv_folds!r}")
        if self.bootstrap < 0:
            raise InputError(f"bootstrap must be >= 0; got {self.bootstrap!r}")
        if self.min_confidence is not None and not 0 <= self.min_confidence <= 1:
            raise InputError(f"min_confidence must be in [0, 1] or None; got {self.min_confidence!r}")
        if not 0 <= self.min_margin <= 1:
            raise InputError(f"min_margin must be in [0, 1]; got {self.min_margin!r}")
        if not 0 < self.novelty_quantile <= 1:
            raise InputError(f"novelty_quantile must be in (0, 1]; got {self.novelty_quantile!r}")
        if not 0 <= self.clean_min_issue_probability <= 1:
            raise InputError(f"clean_min_issue_probability must be in [0, 1]; got {self.clean_min_issue_probability!r}")
        if self.balance_groups is not None and (not isinstance(self.balance_groups, str)
                                                or not self.balance_groups.strip()):
            raise InputError(f"balance_groups must be the name of a metadata column; got {self.balance_groups!r}")
        self.split.check()
        self.finetune.check()
        self.auto.check()
        return self

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_mapping(cls, data: dict | None = None, **overrides) -> "TrainConfig":
        """Build from a (file's) dict, then apply keyword overrides. Unknown keys raise InputError.

        Nested sections may be given as dicts (``{"split": {"seed": 3}}``) or flat with a dotted prefix
        (``split.seed=3``, ``finetune_epochs=3`` is not accepted: use ``finetune={"epochs": 3}``).
        """
        merged: dict = {}
        for source in (data or {}, overrides):
            for key, value in source.items():
                if "." in key:
                    section, sub = key.split(".", 1)
                    merged.setdefault(section, {})
                    if not isinstance(merged[section], dict):
                        merged[section] = asdict(merged[section])
                    merged[section][sub] = value
                elif key in ("split", "finetune", "auto") and isinstance(value, dict):
                    current = merged.get(key) or {}
                    if not isinstance(current, dict):
                        current = asdict(current)
                    merged[key] = {**current, **value}
                else:
                    merged[key] = value
        config = _build(cls, merged, "")
        return config.check()

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> "TrainConfig":
        """Read TOML or JSON (a ``[train]`` table or top-level keys), then apply overrides."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise InputError(f"cannot read the config file {str(path)!r}: {exc.strerror}") from exc
        try:
            if path.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                import tomllib

                data = tomllib.loads(text)
        except ValueError as exc:
            raise InputError(f"the config file {str(path)!r} is not valid {path.suffix or 'TOML'}: {exc}") from exc
        if isinstance(data, dict) and isinstance(data.get("train"), dict):
            data = data["train"]
        return cls.from_mapping(data, **overrides)


def _build(cls, data: dict, prefix: str):
    check_keys(cls, data, stage=prefix.rstrip(".") or "train", prefix=prefix)
    values = {}
    for key, value in data.items():
        if key == "split" and isinstance(value, dict):
            value = _build(SplitConfig, value, "split.")
        elif key == "finetune" and isinstance(value, dict):
            value = _build(FinetuneConfig, value, "finetune.")
        elif key == "auto" and isinstance(value, dict):
            value = _build(AutoConfig, value, "auto.")
        elif key in ("backbones", "extra_backbones", "heads", "screen_heads") and value is not None:
            value = tuple(value)
        elif key in ("exclude_classes",) and value is not None:
            value = tuple(value)
        elif key == "crop_scale" and value is not None:
            value = tuple(value)
        values[key] = value
    try:
        return replace(cls(), **values)
    except TypeError as exc:
        raise InputError(f"invalid {prefix.rstrip('.') or 'train'} settings: {exc}") from exc
