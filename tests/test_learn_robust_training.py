"""Fine-tuning that holds up: fast adversarial training buys PGD accuracy that standard training does not have,
the PGD validation score picks the kept epoch, AugMix changes the training images, and the CLI flags reach
the saved config."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from learnkit import tinted_workspace
from torch import nn

from pixelmine.cli import main
from pixelmine.errors import InputError
from pixelmine.learn.config import FinetuneConfig, TrainConfig
from pixelmine.learn.finetune import _Trainer
from pixelmine.learn.network import FinetuneNet, PixelLogits, augmentation, to_unit_pixels
from pixelmine.trust.attacks import robust_accuracy

EPS = 4 / 255
SIDE = 8


class TwoFeatureImages(torch.utils.data.Dataset):
    """Grey noise images (level 128, sd 10 per pixel) carrying two features of the class (Tsipras et al. 2019):

    - a robust one: the green channel +-12 levels, but flipped on ``flip`` of the images;
    - a non-robust one: the red channel +-3 levels, always right, and erased by an attack of 4 levels.

    Standard training needs the red shift to fit the flipped images, so it leans on it; under attack only
    green is worth learning. The test images carry both features, unflipped."""

    def __init__(self, n: int, seed: int, flip: float = 0.0):
        rng = np.random.default_rng(seed)
        self.targets = rng.integers(0, 2, n)
        green = np.where(rng.random(n) < flip, 1 - self.targets, self.targets)
        pixels = 128 + rng.normal(0, 10, (n, SIDE, SIDE, 3))
        pixels[..., 1] += np.where(green == 1, 12, -12)[:, None, None]
        pixels[..., 0] += np.where(self.targets == 1, 3, -3)[:, None, None]
        self.pixels = torch.from_numpy(np.clip(np.round(pixels), 0, 255).astype(np.uint8))

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        return self.pixels[index], int(self.targets[index]), True


class SmallConvNet(nn.Module):
    """A backbone as FinetuneNet expects one: NHWC pixels in 0..255, its own normalisation, pooled features."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.ReLU())

    def forward(self, pixels):
        return self.body((pixels.permute(0, 3, 1, 2).float() - 128) / 10).mean(dim=(2, 3))


def _fine_tune(tmp_path, adversarial_eps: float):
    config = TrainConfig.from_mapping({"seed": 0, "finetune": {
        "frozen_epochs": 0, "epochs": 6, "unfreeze_blocks": 2, "batch_size": 32, "lr": 0.02, "backbone_lr": 0.02,
        "patience": 0, "crop_scale": None, "hflip": False, "rotation": 0.0, "color_jitter": 0.0, "device": "cpu",
        "adversarial_eps": adversarial_eps}})
    torch.manual_seed(0)
    net = FinetuneNet(SmallConvNet(), 8, 2, dropout=0.0)
    train, val = TwoFeatureImages(512, seed=10, flip=0.3), TwoFeatureImages(64, seed=11)
    state = _Trainer(net, config, train, val, tmp_path / f"checkpoints-{adversarial_eps:g}", "cpu",
                     lambda *_: None).run(resume=False)
    return net, state


def _accuracies(net) -> tuple[float, float]:
    test = TwoFeatureImages(128, seed=12)
    x, y = to_unit_pixels(test.pixels), torch.as_tensor(test.targets)
    clean, _ = robust_accuracy(PixelLogits(net), x, y, 0.0)
    robust, _ = robust_accuracy(PixelLogits(net), x, y, EPS, attack="pgd", steps=10,
                                generator=torch.Generator().manual_seed(0))
    return float(clean.mean()), float(robust.mean())


def test_adversarial_training_raises_pgd_accuracy_and_keeps_the_most_robust_epoch(tmp_path):
    standard_net, standard = _fine_tune(tmp_path, 0.0)
    adversarial_net, adversarial = _fine_tune(tmp_path, EPS)
    standard_clean, standard_robust = _accuracies(standard_net)
    adversarial_clean, adversarial_robust = _accuracies(adversarial_net)
    assert standard_clean >= 0.95 and adversarial_clean >= 0.9  # both learnt the task
    assert standard_robust <= 0.5  # the red shift it relies on is gone under a 4-level attack
    assert adversarial_robust >= standard_robust + 0.4
    # the defaults are unchanged: no PGD validation without adversarial training
    assert all("val_pgd_accuracy" not in record for record in standard["history"])
    assert "best_val_pgd_accuracy" not in standard
    scores = [record["val_pgd_accuracy"] for record in adversarial["history"]]
    assert len(scores) == 6 and all(0 <= s <= 1 for s in scores)
    assert adversarial["best_val_pgd_accuracy"] == max(scores)
    assert scores[adversarial["best_epoch"] - 1] == max(scores)  # the kept epoch is the most robust one


def test_augmix_changes_the_training_images():
    plain = {"crop_scale": None, "hflip": False, "rotation": 0.0, "color_jitter": 0.0}
    image = torch.from_numpy(np.asarray(TwoFeatureImages(1, seed=0).pixels[0])).permute(2, 0, 1).contiguous()
    standard, augmix = (augmentation(FinetuneConfig(augment=name, **plain), SIDE, "bilinear")
                        for name in ("standard", "augmix"))
    assert torch.equal(standard(image), image)  # nothing else switched on: standard leaves the image
    torch.manual_seed(0)
    mixed = [augmix(image) for _ in range(5)]
    assert all(m.dtype == torch.uint8 and m.shape == image.shape for m in mixed)
    assert sum(not torch.equal(m, image) for m in mixed) >= 4
    assert len({m.numpy().tobytes() for m in mixed}) >= 4  # random, not one fixed change
    torch.manual_seed(0)
    usual = augmentation(FinetuneConfig(), SIDE, "bilinear")(image)
    torch.manual_seed(0)
    assert not torch.equal(augmentation(FinetuneConfig(augment="augmix"), SIDE, "bilinear")(image), usual)


def test_robustness_settings_are_checked():
    with pytest.raises(InputError, match="finetune.augment 'mixup' is not known; choose one of: standard, augmix"):
        TrainConfig.from_mapping({"finetune": {"augment": "mixup"}})
    with pytest.raises(InputError, match=r"adversarial_eps must be a number in \[0, 1\].*2/255"):
        TrainConfig.from_mapping({"finetune": {"adversarial_eps": 2}})
    assert TrainConfig().finetune.adversarial_eps == 0.0 and TrainConfig().finetune.augment == "standard"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tinted_workspace(tmp_path_factory.mktemp("robust"), {"red": (10, (230, 40, 40)), "blue": (10, (40, 40, 230))})


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_the_cli_flags_reach_the_saved_config_and_history(workspace, tmp_path):
    settings = tmp_path / "small.json"  # what no flag sets: a fast run
    settings.write_text(json.dumps({"bootstrap": 20, "cv_folds": 2, "finetune": {
        "frozen_epochs": 0, "batch_size": 8, "patience": 0, "device": "cpu"}}))
    result = _run("train", "--head", "finetune", "--backbone", "tiny_test", "--adversarial", 2, "--augment", "augmix",
                  "--epochs", 1, "--search-budget", 1, "--name", "robust", "--config", settings, "--json",
                  "-w", workspace.root)
    assert result.exit_code == 0, result.output
    model = workspace.model("robust")
    saved = json.loads((model.dir / "config.json").read_text())["finetune"]
    assert saved["adversarial_eps"] == pytest.approx(2 / 255) and saved["augment"] == "augmix"
    history = json.loads((model.dir / "history.json").read_text())
    assert [r["epoch"] for r in history["history"]] == [1]
    assert 0 <= history["history"][0]["val_pgd_accuracy"] <= 1
    assert history["best_val_pgd_accuracy"] == history["history"][0]["val_pgd_accuracy"]
    info = json.loads((model.dir / "model.json").read_text())
    assert info["adversarial_training"]["eps_255"] == pytest.approx(2)
    assert info["adversarial_training"]["val_images"] == model.info["n_val"]
    assert info["history"][0]["val_pgd_accuracy"] == history["history"][0]["val_pgd_accuracy"]


@pytest.mark.parametrize("flags", [("--head", "logreg", "--adversarial", "1"), ("--augment", "augmix",)])
def test_robustness_flags_without_finetune_say_to_add_it(workspace, flags):
    result = CliRunner().invoke(main, ["train", *flags, "-w", str(workspace.root)])
    assert result.exit_code == 2
    assert "add --head finetune" in result.output and flags[-2] in result.output
