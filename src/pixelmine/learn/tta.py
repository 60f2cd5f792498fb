"""Test-time moves: the exact pixel moves a fine-tuning augmented with, applied to uint8 NHWC crops.

Prediction averages the class probabilities of the crop and its views under these moves only (a flip that
training never showed, e.g. on a diagonal weave, is a different image to the network). numpy, no torch.
"""

from __future__ import annotations

import numpy as np

TTA_MOVES = ("hflip", "vflip", "rot90", "rot180", "rot270")


def views(pixels: np.ndarray, moves) -> list[np.ndarray]:
    """The crops (N, H, W, 3) and their views under ``moves``; quarter turns only when square."""
    result = [pixels]
    square = pixels.shape[1] == pixels.shape[2]
    for move in moves:
        if move == "hflip":
            result.append(pixels[:, :, ::-1])
        elif move == "vflip":
            result.append(pixels[:, ::-1])
        elif move == "rot180":
            result.append(pixels[:, ::-1, ::-1])
        elif move in ("rot90", "rot270") and square:
            result.append(np.rot90(pixels, 1 if move == "rot90" else 3, axes=(1, 2)))
        elif move not in TTA_MOVES:
            raise ValueError(f"unknown test-time augmentation {move!r}; expected one of {', '.join(TTA_MOVES)}")
    return [np.ascontiguousarray(view) for view in result]


def saved_moves(network_info: dict) -> list[str]:
    """The moves of a saved fine-tuned model (``model.json`` ``network``)."""
    if "tta_moves" in network_info:
        return list(network_info["tta_moves"])
    # models saved before tta_moves: the plain image and its horizontal (and vertical) flip when tta was on
    return (["hflip"] + (["vflip"] if network_info.get("vflip") else [])) if network_info.get("tta") else []
