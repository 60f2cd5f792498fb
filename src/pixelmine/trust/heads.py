"""A probe's head seen from the inside: its linear class scores, and the same probabilities in PyTorch.

Why: a class activation map is exact only when the class score is linear in the pooled features, and an
attack needs the gradient of the very probabilities ``predict_proba`` gives. Both are read off the fitted
scikit-learn pipeline (scaler, then logistic regression or Platt-calibrated linear SVMs) rather than
approximated:

- ``logreg``: the scores are the logits ``W (x - mean) / scale + b``; a binary model's single logit ``z`` is
  written as the pair ``(-z/2, z/2)``, whose softmax is the same ``(1 - sigmoid(z), sigmoid(z))``.
- ``svm``: each calibration fold's SVM gives decisions ``d``, its sigmoid calibrators turn them into
  ``sigmoid(-(a d + b))`` per class (normalised over the classes; ``1 - p`` for the other class of a binary
  model), and the folds are averaged. The linear score of a class is the sum over folds of ``-(a d)``, the
  argument each fold's sigmoid sees.
- ``knn``: votes of neighbours are not a differentiable function of the features; such a model gets a clear
  error naming the heads that work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

LINEAR_HEADS = ("logreg", "svm")


@dataclass
class LinearScores:
    """Class scores ``features @ weights.T + bias`` (K classes, D features): the map of class k is
    ``weights[k]`` applied to the feature map at every position."""

    weights: np.ndarray  # (K, D) float64
    bias: np.ndarray  # (K,)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, dtype=np.float64) @ self.weights.T + self.bias


def _pipeline_parts(probe):
    steps = [step for _, step in probe.model_.steps]
    scaler, estimator = (steps[0], steps[-1]) if len(steps) > 1 else ("passthrough", steps[0])
    return scaler, estimator


def _unscale(scaler, weights: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fold a StandardScaler into affine scores: w.(x - m)/s + b = (w/s).x + (b - w.m/s)."""
    if scaler == "passthrough" or scaler is None:
        return weights, bias
    mean = np.zeros(weights.shape[1]) if scaler.mean_ is None else scaler.mean_
    scale = np.ones(weights.shape[1]) if scaler.scale_ is None else scaler.scale_
    scaled = weights / scale
    return scaled, bias - scaled @ mean


def head_kind(probe) -> str:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression

    if not hasattr(probe, "model_"):
        raise InputError(f"the head {type(probe).__name__} has no fitted linear model inside; explanations and "
                         f"attacks need one of the heads {', '.join(LINEAR_HEADS)} (or a fine-tuned network): "
                         "pixelmine train --head logreg")
    _, estimator = _pipeline_parts(probe)
    if isinstance(estimator, LogisticRegression):
        return "logreg"
    if isinstance(estimator, CalibratedClassifierCV):
        return "svm"
    raise InputError(f"the head {type(probe).__name__} is not linear in the features")


def _logreg_affine(probe) -> tuple[np.ndarray, np.ndarray]:
    scaler, estimator = _pipeline_parts(probe)
    weights, bias = np.asarray(estimator.coef_, np.float64), np.asarray(estimator.intercept_, np.float64)
    if weights.shape[0] == 1:  # binary: one logit z for classes_[1]
        weights, bias = np.vstack([-weights / 2, weights / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    return _unscale(scaler, weights, bias)


def svm_folds(probe) -> list[dict]:
    """Per calibration fold: the decision's affine map (K', D), (K',) and the calibrators' a, b (K',)."""
    scaler, estimator = _pipeline_parts(probe)
    folds = []
    for calibrated in estimator.calibrated_classifiers_:
        svm = calibrated.estimator
        weights, bias = _unscale(scaler, np.asarray(svm.coef_, np.float64), np.asarray(svm.intercept_, np.float64))
        a = np.array([c.a_ for c in calibrated.calibrators], np.float64)
        b = np.array([c.b_ for c in calibrated.calibrators], np.float64)
        folds.append({"weights": weights, "bias": bias, "a": a, "b": b})
    return folds


def linear_scores(probe) -> LinearScores:
    """The head's class scores as one affine map of the raw (unstandardised) features."""
    kind = head_kind(probe)
    if kind == "logreg":
        return LinearScores(*_logreg_affine(probe))
    folds = svm_folds(probe)
    n_classes = len(probe.classes_)
    weights = np.zeros((n_classes, folds[0]["weights"].shape[1]))
    bias = np.zeros(n_classes)
    for fold in folds:
        fold_weights = -fold["a"][:, None] * fold["weights"]
        fold_bias = -(fold["a"] * fold["bias"] + fold["b"])
        if n_classes == 2:  # one calibrated score for classes_[1]; the other class's is its negative
            fold_weights = np.vstack([-fold_weights, fold_weights]) / 2
            fold_bias = np.array([-fold_bias[0], fold_bias[0]]) / 2
        weights += fold_weights
        bias += fold_bias
    return LinearScores(weights, bias)


def torch_head(probe):
    """An ``nn.Module``: raw features (N, D) -> log of exactly the probabilities ``probe.predict_proba`` gives."""
    import torch
    from torch import nn

    kind = head_kind(probe)

    class LogisticHead(nn.Module):
        def __init__(self, weights, bias):
            super().__init__()
            self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))
            self.register_buffer("bias", torch.tensor(bias, dtype=torch.float32))

        def forward(self, features):
            return torch.log_softmax(features @ self.weights.T + self.bias, dim=1)

    class CalibratedSVMHead(nn.Module):
        def __init__(self, folds, n_classes):
            super().__init__()
            self.n_classes = n_classes
            for name in ("weights", "bias", "a", "b"):
                stacked = np.stack([fold[name] for fold in folds])
                self.register_buffer(name, torch.tensor(stacked, dtype=torch.float32))

        def forward(self, features):
            decisions = torch.einsum("nd,fkd->fnk", features, self.weights) + self.bias[:, None, :]
            calibrated = torch.sigmoid(-(self.a[:, None, :] * decisions + self.b[:, None, :]))
            if self.n_classes == 2:
                probs = torch.cat([1 - calibrated, calibrated], dim=2)
            else:
                total = calibrated.sum(dim=2, keepdim=True)
                probs = torch.where(total > 0, calibrated / total.clamp_min(1e-30),
                                    torch.full_like(calibrated, 1.0 / self.n_classes))
            return torch.log(probs.mean(dim=0).clamp_min(1e-30))

    if kind == "logreg":
        return LogisticHead(*_logreg_affine(probe))
    return CalibratedSVMHead(svm_folds(probe), len(probe.classes_))
