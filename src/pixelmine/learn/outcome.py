"""What a training path (probe or fine-tuning) hands back to be saved (train.py saves it)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .metrics import Evaluation


@dataclass
class TrainOutcome:
    """What a training path (probe or fine-tuning) hands back to be saved."""

    kind: str  # probe | finetune
    head_params: dict
    test: Evaluation
    oof_probs: np.ndarray
    oof_folds: np.ndarray
    oof: Evaluation
    oof_model: str  # which model produced the out-of-fold probabilities
    search: dict | None = None
    selection: dict | None = None  # automatic model selection: leaderboard, budget, what it cut
    timings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra_info: dict = field(default_factory=dict)  # merged into model.json (e.g. preprocessing)
    cleaning: dict | None = None  # the clean loop: what was left out, test accuracy before and after
    # in memory only (not saved): the fitted head and its test probabilities, for the clean loop's "before"
    head: object | None = None
    test_probs: np.ndarray | None = None
