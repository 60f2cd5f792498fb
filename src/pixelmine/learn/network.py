"""The fine-tuned network and its image input (PyTorch).

``FinetuneNet`` wraps a registered backbone (``pixelmine.backbones.create``: uint8 NHWC pixels in, pooled
features out) with a new top: dropout + a linear layer over the model's classes. Its input is the same
uint8 pixels as extraction's, so a fine-tuned model exports and serves like a backbone.

Images are decoded with ``pixelmine.imaging.decode`` (EXIF orientation, CMYK, 16-bit, alpha: the same
pixels as extraction). ``crop=False`` resizes the whole image to the input square (nothing cut off: a
defect at the border stays visible); ``crop=True`` uses the backbone's resize + centre crop.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..imaging.decode import open_rgb, prepare
from .tta import TTA_MOVES


class FinetuneNet(nn.Module):
    def __init__(self, backbone: nn.Module, feature_dim: int, n_classes: int, dropout: float = 0.2):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(feature_dim, n_classes)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.backbone(pixels)
        return out[0] if isinstance(out, tuple) else out

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (N, K), features (N, D)) for uint8 pixels (N, S, S, 3), or float ones in 0..255 (the
        adversarial images of :func:`to_network_pixels`)."""
        features = self.features(pixels)
        return self.classifier(self.dropout(features)), features


class PixelLogits(nn.Module):
    """A FinetuneNet seen as attacks see a model (:mod:`pixelmine.trust.attacks`): float (N, 3, S, S) pixels in
    [0, 1] in, logits out. The backbone normalises 0..255 pixels itself, so an attack perturbs pixels, not
    normalised values, and its eps is in grey levels / 255. The same modules: no copy, modes and weights shared."""

    def __init__(self, net: FinetuneNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(to_network_pixels(x))[0]


def to_unit_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC (the datasets' batches) -> float NCHW in [0, 1] (the attacks' pixels)."""
    return pixels.permute(0, 3, 1, 2).float() / 255.0


def to_network_pixels(x: torch.Tensor) -> torch.Tensor:
    """float NCHW in [0, 1] -> float NHWC in 0..255, which FinetuneNet takes as it takes uint8."""
    return x.permute(0, 2, 3, 1) * 255.0


def build_network(backbone: str, n_classes: int, dropout: float, *, device: str = "cpu", root=None) -> FinetuneNet:
    """A FinetuneNet on the pretrained ``backbone`` (weights resolved by the backbone registry)."""
    from .. import backbones

    feature_model = backbones.create(backbone, root=root)
    dim = backbones.get(backbone, root=root).feature_dim
    if dim is None:
        size = feature_model.preprocessing.input_size
        with torch.no_grad():
            out = feature_model(torch.zeros((1, size, size, 3), dtype=torch.uint8))
        dim = int((out[0] if isinstance(out, tuple) else out).shape[1])
    return FinetuneNet(feature_model, dim, n_classes, dropout).to(device)


def _is_leaf_layer(module: nn.Module) -> bool:
    return not any(True for _ in module.children())


def backbone_blocks(network: nn.Module) -> list[list[nn.Parameter]]:
    """The backbone's parameters grouped into blocks, bottom (stem) to top.

    The trunk is the ``nn.Sequential`` / ``nn.ModuleList`` with the most parameters among those with at
    least 3 children (MobileNetV2 ``features``, timm ``blocks``); a child that is itself a sequence of
    composite blocks (a timm stage) is expanded into them. Parameters before the trunk join the first
    block; parameters after it (timm's ``conv_head``) join the last.
    """
    candidates = [m for m in network.modules() if isinstance(m, (nn.Sequential, nn.ModuleList))
                  and len(list(m.children())) >= 3]
    if not candidates:
        return [[p for p in network.parameters()]]
    trunk = max(candidates, key=lambda m: sum(p.numel() for p in m.parameters()))
    units: list[nn.Module] = []
    for child in trunk.children():
        grandchildren = list(child.children())
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and len(grandchildren) > 1 and \
                not any(_is_leaf_layer(g) for g in grandchildren):
            units.extend(grandchildren)
        else:
            units.append(child)
    owner = {}
    for index, unit in enumerate(units):
        for parameter in unit.parameters():
            owner[id(parameter)] = index
    blocks: list[list[nn.Parameter]] = [[] for _ in units]
    seen_trunk = False
    for parameter in network.parameters():
        index = owner.get(id(parameter))
        if index is not None:
            seen_trunk = True
            blocks[index].append(parameter)
        else:
            blocks[-1 if seen_trunk else 0].append(parameter)
    return [b for b in blocks if b]


def set_trainable(net: FinetuneNet, unfreeze_blocks: int) -> list[nn.Parameter]:
    """Freeze the backbone except its top ``unfreeze_blocks`` blocks; returns the unfrozen parameters.

    Batch-norm layers whose parameters stay frozen are also kept in eval mode by :func:`train_mode`.
    """
    blocks = backbone_blocks(net.backbone)
    for parameter in net.backbone.parameters():
        parameter.requires_grad_(False)
    unfrozen = [p for block in blocks[len(blocks) - unfreeze_blocks:] for p in block] if unfreeze_blocks else []
    for parameter in unfrozen:
        parameter.requires_grad_(True)
    for parameter in net.classifier.parameters():
        parameter.requires_grad_(True)
    return unfrozen


def train_mode(net: FinetuneNet, *, freeze_batchnorm: bool = True) -> None:
    """Training mode for the trainable parts only: batch-norm keeps its pretrained statistics in frozen blocks
    (and everywhere when ``freeze_batchnorm``)."""
    net.train()
    for module in net.backbone.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if freeze_batchnorm or not any(p.requires_grad for p in module.parameters(recurse=False)):
                module.eval()


# -- image input ------------------------------------------------------------------------------------
def eval_pixels(path: str, *, input_size: int, resize: int, crop: bool, interpolation: str) -> np.ndarray:
    """The (S, S, 3) uint8 input of one image file, without augmentation."""
    image = open_rgb(path, min_side=resize if crop else input_size)
    return prepare(image, input_size=input_size, resize=resize if crop else input_size, interpolation=interpolation)


class ImageDataset(torch.utils.data.Dataset):
    """(pixels uint8 (S, S, 3), label index, ok) per file; an unreadable file gives ok = False."""

    def __init__(self, paths: list[str], targets: np.ndarray, *, input_size: int, resize: int, crop: bool,
                 interpolation: str, augment=None):
        self.paths = paths
        self.targets = targets
        self.input_size = input_size
        self.resize = resize
        self.crop = crop
        self.interpolation = interpolation
        self.augment = augment

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        size = self.input_size
        try:
            if self.augment is None:
                pixels = torch.from_numpy(np.array(eval_pixels(self.paths[index], input_size=size, resize=self.resize,
                                                               crop=self.crop, interpolation=self.interpolation)))
            else:
                if self.augment.resizes:  # the random resized crop works on the decoded image
                    image = np.asarray(open_rgb(self.paths[index], min_side=size), dtype=np.uint8)
                else:  # exact augmentation of the evaluation input: no further resampling
                    image = eval_pixels(self.paths[index], input_size=size, resize=self.resize, crop=self.crop,
                                        interpolation=self.interpolation)
                chw = torch.from_numpy(np.array(image)).permute(2, 0, 1)
                pixels = self.augment(chw).permute(1, 2, 0).contiguous()
            ok = True
        except Exception:  # noqa: BLE001 - any decoder failure costs this image only
            pixels, ok = torch.zeros((size, size, 3), dtype=torch.uint8), False
        return pixels, int(self.targets[index]), ok


class _RandomTurns(torch.nn.Module):
    """Rotate a CHW tensor by a random multiple of 360 / ``turns`` degrees (exact pixel moves)."""

    def __init__(self, turns: int):
        super().__init__()
        self.step = 4 // turns  # in quarter turns

    def forward(self, chw: torch.Tensor) -> torch.Tensor:
        return torch.rot90(chw, self.step * int(torch.randint(0, 4 // self.step, ())), dims=(1, 2))


class Augmentation:
    """Random resized crop (optional), flips, exact turns, small rotations, colour jitter on uint8 CHW
    (torchvision.transforms.v2), then AugMix with ``augment="augmix"`` (Hendrycks et al. 2020: mixtures of
    random chains of operations, for robustness to corruptions such as blur, noise or compression).
    ``resizes`` tells the dataset whether to hand over the decoded image (the crop resizes it) or the
    evaluation input (no crop: the input keeps its exact pixels)."""

    def __init__(self, config, input_size: int, interpolation: str):
        from torchvision.transforms import InterpolationMode, v2

        mode = InterpolationMode.BICUBIC if interpolation == "bicubic" else InterpolationMode.BILINEAR
        steps = []
        self.resizes = config.crop_scale is not None
        if self.resizes:
            steps.append(v2.RandomResizedCrop(input_size, scale=tuple(config.crop_scale), interpolation=mode,
                                              antialias=True))
        if config.hflip:
            steps.append(v2.RandomHorizontalFlip())
        if config.vflip:
            steps.append(v2.RandomVerticalFlip())
        if config.turns:
            steps.append(_RandomTurns(config.turns))
        if config.rotation:
            steps.append(v2.RandomRotation(config.rotation, interpolation=InterpolationMode.BILINEAR))
        if config.color_jitter:
            j = config.color_jitter
            steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
        if config.augment == "augmix":  # last: it mixes chains of operations over the image training would see
            steps.append(v2.AugMix())
        self.transform = v2.Compose(steps) if steps else None

    def __call__(self, chw: torch.Tensor) -> torch.Tensor:
        return chw if self.transform is None else self.transform(chw)


def augmentation(config, input_size: int, interpolation: str) -> Augmentation:
    return Augmentation(config, input_size, interpolation)




def tta_moves(config) -> list[str]:
    """The exact pixel moves training augmented with: test-time augmentation averages over these only (a
    flip that training never showed, e.g. on a diagonal weave, is a different image to the network)."""
    if not config.tta:
        return []
    moves = []
    if config.hflip:
        moves.append("hflip")
    if config.vflip:
        moves.append("vflip")
    if config.turns >= 2:
        moves.append("rot180")
    if config.turns == 4:
        moves += ["rot90", "rot270"]
    return moves


def tta_views(pixels: torch.Tensor, moves) -> list[torch.Tensor]:
    """The image (NHWC) and its views under ``moves`` (names from TTA_MOVES); quarter turns only when square."""
    views = [pixels]
    square = pixels.shape[1] == pixels.shape[2]
    for move in moves:
        if move == "hflip":
            views.append(pixels.flip(2))
        elif move == "vflip":
            views.append(pixels.flip(1))
        elif move == "rot180":
            views.append(pixels.flip(1, 2))
        elif move in ("rot90", "rot270") and square:
            views.append(torch.rot90(pixels, 1 if move == "rot90" else 3, dims=(1, 2)))
        elif move not in TTA_MOVES:
            raise ValueError(f"unknown test-time augmentation {move!r}; expected one of {', '.join(TTA_MOVES)}")
    return views
