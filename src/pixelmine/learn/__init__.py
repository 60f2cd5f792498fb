"""Stage 3 and 4: splits, heads on cached features, fine-tuning, evaluation, prediction, model artifacts.

    splits.py    near-duplicate groups and stratified group splits        data.py      labelled images, stored split
    heads.py     sklearn estimators: logreg, linear SVM, kNN              search.py    time-boxed search on val
    probe.py     train a head: search, refit, test, OOF                   finetune*.py PyTorch fine-tuning
    metrics.py   evaluation (sklearn metrics + bootstrap, ECE, mistakes)  plots.py     confusion / reliability PNGs
    oof.py       out-of-fold probabilities                                novelty.py   distance to the training data
    model.py     a saved model: predict, evaluate (probe_model.py, finetuned_model.py; loading.py picks)
    artifacts.py models/<name>/ on disk                                  tta.py       test-time moves
    train.py     the whole `pixelmine train`                              predictions.py, embed.py: prediction I/O
    auto.py      automatic selection: grouped CV, successive halving      selection.py train the winner
    candidates.py the feature sets auto considers                         joined.py    A+B concatenated features
    clean.py     the audit-fix-retrain loop (train --clean)               suggest.py   what to label next

Importing this package loads no scikit-learn or torch. Entry points: ``Workspace.train`` / ``pixelmine.train``
(train.py) and ``Workspace.model`` / ``pixelmine.load_model`` (loading.py).
"""

from __future__ import annotations

from .config import HEAD_NAMES, AutoConfig, FinetuneConfig, SplitConfig, TrainConfig


__all__ = ["HEAD_NAMES", "AutoConfig", "FinetuneConfig", "SplitConfig", "TrainConfig"]
