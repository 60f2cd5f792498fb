"""The pixel-space attacks on small synthetic models: FGSM's step is the one worked out by hand on a linear
model, PGD never leaves the eps-ball or [0, 1] and is at least as strong as FGSM, attacks are deterministic
given a generator, and they leave the model as they found it (modes, parameters, flags, gradients)."""

import numpy as np
import pytest
import torch
from torch import nn

from pixelmine.errors import InputError
from pixelmine.trust.attacks import fgsm, fgsm_random_start, pgd, robust_accuracy

SIDE = 8


def _brightest_channel_data(n: int, seed: int):
    """Noisy grey images whose class is the channel lifted by 0.15: a margin a small eps can cross."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=generator)
    x = 0.5 + 0.1 * torch.randn(n, 3, SIDE, SIDE, generator=generator)
    x[torch.arange(n), y] += 0.15
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def trained_conv():
    """A two-layer ReLU convnet fitted to the brightest-channel task (about a second on a CPU)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    x, y = _brightest_channel_data(512, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(150):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _linear_model(seed: int = 0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * SIDE * SIDE, 2))


def test_fgsm_with_eps_zero_returns_the_input_unchanged(trained_conv):
    x, y = _brightest_channel_data(16, seed=3)
    assert torch.equal(fgsm(trained_conv, x, y, 0.0), x)
    assert torch.equal(pgd(trained_conv, x, y, 0.0), x)


def test_fgsm_on_a_linear_model_steps_towards_the_other_class_by_hand():
    """For logits W x + b and true class t, d CE / dx = p_other (w_other - w_t): its sign is that of
    w_other - w_t whatever the probabilities, so FGSM adds exactly eps * sign(w_other - w_t)."""
    model = _linear_model()
    generator = torch.Generator().manual_seed(1)
    x = 0.2 + 0.6 * torch.rand(6, 3, SIDE, SIDE, generator=generator)  # interior: no clamping at eps 0.05
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    eps = 0.05
    weight = model[1].weight.detach()
    expected = eps * torch.sign(weight[1 - y] - weight[y]).reshape(x.shape)
    assert (weight[1] != weight[0]).all()  # every pixel has a direction
    step = fgsm(model, x, y, eps) - x
    torch.testing.assert_close(step, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("eps", [0.5 / 255, 2 / 255, 8 / 255, 0.3])
def test_pgd_never_leaves_the_eps_ball_or_the_pixel_range(trained_conv, eps):
    x, y = _brightest_channel_data(64, seed=4)
    x[:8] = 0.0  # pixels at the edges of [0, 1]: the ball is cut by the range there
    x[8:16] = 1.0
    for steps, step_size in ((10, None), (3, 4 * eps), (1, 0.0)):
        adversarial = pgd(trained_conv, x, y, eps, steps=steps, step_size=step_size, random_start=True,
                          generator=torch.Generator().manual_seed(0))
        assert adversarial.shape == x.shape
        assert float((adversarial - x).abs().max()) <= eps + 1e-6
        assert float(adversarial.min()) >= 0 and float(adversarial.max()) <= 1
    trained = fgsm_random_start(trained_conv, x, y, eps, generator=torch.Generator().manual_seed(0))
    assert float((trained - x).abs().max()) <= eps + 1e-6
    assert float(trained.min()) >= 0 and float(trained.max()) <= 1


def test_pgd_is_deterministic_given_its_generator(trained_conv):
    x, y = _brightest_channel_data(32, seed=5)

    def attack(seed):
        return pgd(trained_conv, x, y, 0.05, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(attack(7), attack(7))
    assert not torch.equal(attack(7), attack(8))  # the random start is random
    assert torch.equal(pgd(trained_conv, x, y, 0.05, random_start=False),
                       pgd(trained_conv, x, y, 0.05, random_start=False))


@pytest.mark.parametrize("eps", [0.06, 0.07, 0.08])
def test_pgd_is_at_least_as_strong_as_fgsm(trained_conv, eps):
    x, y = _brightest_channel_data(256, seed=1)
    clean, none = robust_accuracy(trained_conv, x, y, 0.0)
    assert none is None and clean.dtype == bool and clean.shape == (256,)
    by_fgsm, _ = robust_accuracy(trained_conv, x, y, eps, attack="fgsm")
    by_pgd, adversarial = robust_accuracy(trained_conv, x, y, eps, attack="pgd",
                                          generator=torch.Generator().manual_seed(0))
    assert by_pgd.mean() <= by_fgsm.mean() <= clean.mean()
    assert by_pgd.mean() < clean.mean() - 0.1  # the attack does bite at this radius
    assert not (by_pgd & ~clean).any()  # a clean mistake is never "robustly right"
    with torch.no_grad():
        again = (trained_conv(adversarial).argmax(1) == y).numpy()
    np.testing.assert_array_equal(again, by_pgd)  # the returned images are the ones scored


def test_robust_accuracy_batches_and_keeps_clean_pixels_of_mistakes():
    model = _linear_model(seed=2).eval()
    x = torch.rand(20, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(2))
    y = torch.randint(0, 2, (20,), generator=torch.Generator().manual_seed(3))
    one, images_one = robust_accuracy(model, x, y, 0.03, attack="fgsm", batch_size=3)
    whole, images_whole = robust_accuracy(model, x, y, 0.03, attack="fgsm", batch_size=100)
    np.testing.assert_array_equal(one, whole)
    torch.testing.assert_close(images_one, images_whole)
    with torch.no_grad():
        wrong = (model(x).argmax(1) != y).numpy()
    assert wrong.any()
    assert torch.equal(images_one[wrong], x[wrong])
    assert not torch.equal(images_one[~wrong], x[~wrong])


class _ModeRecorder(nn.Module):
    """Records the mode each forward pass ran in."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(self.training)
        return x


def test_attacks_leave_the_model_as_they_found_it():
    torch.manual_seed(0)
    recorder = _ModeRecorder()
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), recorder,
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    model.train()
    model[1].eval()  # a frozen batch-norm inside a network in training mode, as fine-tuning has it
    model[0].weight.requires_grad_(False)
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}  # batch-norm statistics included
    x = torch.rand(10, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 2, (10,), generator=torch.Generator().manual_seed(1))
    fgsm(model, x, y, 0.05)
    pgd(model, x, y, 0.05, steps=3)
    robust_accuracy(model, x, y, 0.05, batch_size=4)
    assert recorder.seen and not any(recorder.seen)  # evaluation attacks run in eval mode
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    recorder.seen.clear()
    fgsm_random_start(model, x, y, 0.05, generator=torch.Generator().manual_seed(0))
    assert recorder.seen == [True]  # the training attack runs in the mode it finds
    assert all(p.grad is None for p in model.parameters())


def test_clear_errors_for_unusable_inputs():
    model = _linear_model()
    x, y = torch.rand(4, 3, SIDE, SIDE), torch.tensor([0, 1, 0, 1])
    with pytest.raises(InputError, match="eps must be"):
        fgsm(model, x, y, -0.1)
    with pytest.raises(InputError, match="steps must be"):
        pgd(model, x, y, 0.1, steps=0)
    with pytest.raises(InputError, match=r"in \[0, 1\].*divide uint8 by 255"):
        pgd(model, x * 255, y, 0.1)
    with pytest.raises(InputError, match=r"\(N, 3, H, W\)"):
        fgsm(model, x.permute(0, 2, 3, 1), y, 0.1)
    with pytest.raises(InputError, match=r"\(N, 3, H, W\)"):
        fgsm(model, (x * 255).to(torch.uint8), y, 0.1)
    with pytest.raises(InputError, match="int64"):
        fgsm(model, x, y.float(), 0.1)
    with pytest.raises(InputError, match="unknown attack 'cw'"):
        robust_accuracy(model, x, y, 0.1, attack="cw")
