"""Adversarial attacks in pixel space: how far a classifier's decisions hold under small worst-case changes.

Accuracy on clean test images says nothing about pixels an adversary (or an unlucky sensor) nudges by a
level or two; an L-inf attack of radius ``eps`` finds such nudges. FGSM (Goodfellow et al. 2015) takes one
step along the sign of the loss gradient; PGD (Madry et al. 2018) takes several from a random point of the
eps-ball, projecting back after each, and is the standard measure of robust accuracy. Fine-tuning's fast
adversarial training (:mod:`pixelmine.learn.finetune`) trains on :func:`fgsm_random_start` examples and
keeps the epoch with the best PGD accuracy on the validation split.

A model is any ``nn.Module`` whose ``forward(x)`` takes float32 (N, 3, H, W) pixels in [0, 1] and returns
logits (N, K) (log-probabilities do as well: cross-entropy is the same on them); normalisation lives inside
the model, so ``eps`` is in the units of the pixels (2/255: two grey levels). The evaluation attacks run
the model in eval mode and restore every submodule's mode afterwards; no attack changes a parameter, its
``requires_grad`` flag or its ``.grad``.
"""

from __future__ import annotations

import contextlib
import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

ATTACKS = ("pgd", "fgsm")
FAST_TRAINING_STEP = 1.25  # FGSM-RS step in units of eps: the paper's 10/255 at eps 8/255; much larger steps
# brought on catastrophic overfitting there (robust accuracy collapsing to 0 within an epoch)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """``x + eps * sign(grad_x CE(model(x), y))``, clamped to [0, 1]; ``eps = 0`` returns ``x`` unchanged."""
    _check(x, y, eps)
    if eps == 0:
        return x.clone()
    with _evaluating(model):
        return _fgsm(model, x, y, eps)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int = 10,
        step_size: float | None = None, random_start: bool = True,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """L-inf projected gradient descent (Madry et al.): ``steps`` steps of ``step_size * sign(grad)`` from a
    uniform random point of the eps-ball (``random_start``), each followed by projection onto the eps-ball
    around ``x`` and onto [0, 1]. ``step_size`` defaults to ``2.5 * eps / steps`` (enough to cross the ball
    and come back). Deterministic given ``generator`` (the random start is its only randomness)."""
    _check(x, y, eps, steps=steps, step_size=step_size)
    if eps == 0:
        return x.clone()
    with _evaluating(model):
        return _pgd(model, x, y, eps, steps=steps, step_size=step_size, random_start=random_start,
                    generator=generator)


def fgsm_random_start(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *,
                      step_size: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """The training attack of fast adversarial training ("Fast is better than free", Wong, Rice & Kolter
    2020): a uniform start in the eps-ball, one step of ``step_size`` (default ``1.25 * eps``) along the
    gradient sign, projection onto the eps-ball and [0, 1].

    Unlike the evaluation attacks it runs the model in the mode it is in: training makes its examples with
    the network as it is being trained (dropout and batch-norm included), as the paper does."""
    _check(x, y, eps, step_size=step_size)
    if eps == 0:
        return x.clone()
    step_size = FAST_TRAINING_STEP * eps if step_size is None else step_size
    return _pgd(model, x, y, eps, steps=1, step_size=step_size, random_start=True, generator=generator)


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, attack: str = "pgd",
                    steps: int = 10, batch_size: int = 32,
                    generator: torch.Generator | None = None) -> tuple[np.ndarray, torch.Tensor | None]:
    """(correct (N,) bool: classified right under the attack, the attacked images (N, 3, H, W) or None).

    Batches of ``batch_size`` go to the model's device. Only the images the model gets right unattacked are
    attacked: a wrong one is wrong either way (its returned image is the clean one), so robust accuracy never
    exceeds clean accuracy. ``eps = 0`` measures clean accuracy and returns no images (None). ``steps``:
    PGD's, with its default step size and a random start drawn from ``generator``."""
    if attack not in ATTACKS:
        raise InputError(f"unknown attack {attack!r}; choose one of: {', '.join(ATTACKS)}")
    _check(x, y, eps, steps=steps)
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1; got {batch_size!r}")
    device = _device_of(model)
    correct = torch.zeros(len(x), dtype=torch.bool)
    adversarial = None if eps == 0 else x.detach().clone()
    with _evaluating(model):
        for begin in range(0, len(x), batch_size):
            rows = slice(begin, begin + batch_size)
            xb, yb = x[rows].to(device), y[rows].to(device)
            with torch.no_grad():
                right = model(xb).argmax(1) == yb
            if eps > 0 and bool(right.any()):
                if attack == "pgd":
                    attacked = _pgd(model, xb[right], yb[right], eps, steps=steps, step_size=None,
                                    random_start=True, generator=generator)
                else:
                    attacked = _fgsm(model, xb[right], yb[right], eps)
                with torch.no_grad():
                    held = model(attacked).argmax(1) == yb[right]
                adversarial[rows][right.to(adversarial.device)] = attacked.to(adversarial.device)
                right[right.clone()] = held
            correct[rows] = right.cpu()
    return correct.numpy(), adversarial


# -- the one gradient-sign loop every attack is ---------------------------------------------------------
def _fgsm(model, x, y, eps: float) -> torch.Tensor:
    return _sign_steps(model, x, y, eps, steps=1, step_size=eps, start=None)


def _pgd(model, x, y, eps: float, *, steps: int, step_size: float | None, random_start: bool,
         generator) -> torch.Tensor:
    step_size = 2.5 * eps / steps if step_size is None else step_size
    start = _uniform_start(x, eps, generator) if random_start else None
    return _sign_steps(model, x, y, eps, steps=steps, step_size=step_size, start=start)


def _sign_steps(model, x, y, eps: float, *, steps: int, step_size: float, start) -> torch.Tensor:
    """From ``x + start`` (or ``x``), ``steps`` gradient-sign steps, each projected onto the eps-ball around
    ``x`` intersected with [0, 1] (one box: ``[max(x - eps, 0), min(x + eps, 1)]``)."""
    x = x.detach()
    low, high = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    adversarial = x.clone() if start is None else torch.minimum(torch.maximum(x + start, low), high)
    for _ in range(steps):
        adversarial = adversarial + step_size * _loss_gradient(model, adversarial, y).sign()
        adversarial = torch.minimum(torch.maximum(adversarial, low), high)
    return adversarial.detach()


def _loss_gradient(model, x, y) -> torch.Tensor:
    """d CE / d x only: ``autograd.grad`` leaves the parameters' ``.grad`` alone, whatever they require. The
    loss is summed, not averaged, so one image's gradient does not shrink with the batch (fp16 underflow)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x).float(), y, reduction="sum")
        (gradient,) = torch.autograd.grad(loss, x)
    return gradient


def _uniform_start(x, eps: float, generator) -> torch.Tensor:
    device = generator.device if generator is not None else x.device
    noise = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype)
    return ((2 * noise - 1) * eps).to(x.device)


@contextlib.contextmanager
def _evaluating(model: nn.Module):
    """Eval mode for the attack, then every submodule's own mode back (fine-tuning keeps frozen batch-norm
    layers in eval mode inside a network in training mode: ``model.train()`` would not restore that)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _device_of(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _check(x, y, eps, *, steps: int = 1, step_size: float | None = None) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 4 or x.shape[1] != 3:
        raise InputError("attacks take float pixels of shape (N, 3, H, W) in [0, 1]; got "
                         + (f"{x.dtype} of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor)
                            else type(x).__name__))
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
        raise InputError(f"attack inputs must be pixels in [0, 1] (divide uint8 by 255); got values from "
                         f"{float(x.min()):g} to {float(x.max()):g}")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.shape != (len(x),):
        raise InputError(f"attack labels must be an int64 tensor of shape ({len(x)},), one class index per "
                         "image; got " + (f"{y.dtype} of shape {tuple(y.shape)}" if isinstance(y, torch.Tensor)
                                          else type(y).__name__))
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not (math.isfinite(eps) and eps >= 0):
        raise InputError(f"eps must be a finite number >= 0 (pixel units: 2/255 is two grey levels); got {eps!r}")
    if not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be an integer >= 1; got {steps!r}")
    if step_size is not None and not (math.isfinite(step_size) and step_size >= 0):
        raise InputError(f"step_size must be a finite number >= 0 or None; got {step_size!r}")
