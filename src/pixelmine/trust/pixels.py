"""A model applied to the crops its network sees: decode files once, then ask for probabilities of any
changed copy of those crops (perturbed cells, corruptions, attacks rounded back to pixels).

Probes run their backbones' ONNX graphs and their own head (any head, k-NN too); a fine-tuned network its
ONNX graph's logits, without test-time moves (the moves would see a different image than the one changed).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

CHUNK = 32


class ModelOnPixels:
    def __init__(self, model, *, precision: str | None = None, calibration=None):
        from .network import model_backbones

        self.model = model
        self.specs = model_backbones(model)
        self.precision = precision  # None: the precision the model's features were computed at
        self.calibration = calibration
        self._embedders = None

    @property
    def input_size(self) -> int:
        return self.specs[0].preprocessing.input_size

    def embedders(self) -> list:
        if self._embedders is None:
            from ..features.embedder import Embedder

            if self.precision is None:
                embedder = self.model.embedder()
                self._embedders = list(getattr(embedder, "embedders", [embedder]))
            else:
                opened = []
                try:
                    for spec in self.specs:
                        opened.append(Embedder(spec, precision=self.precision, workspace_root=self.model.root,
                                               calibration=self.calibration))
                except BaseException:
                    for embedder in opened:
                        embedder.close()
                    raise
                self._embedders = opened
        return self._embedders

    def decode(self, files):
        """Yield ``(rows, crops (n, S, S, 3) uint8, {row: error})`` batches, in order."""
        from .network import same_crop

        if not same_crop(self.specs):
            raise InputError(f"model {self.model.name!r} joins backbones that see different crops of an image "
                             f"({', '.join(s.name for s in self.specs)}); changing one crop cannot measure it")
        yield from self.embedders()[0].decode_files(list(files), batch_size=CHUNK)

    def crops(self, files) -> tuple[np.ndarray, list[int], dict[int, str]]:
        rows, parts, errors = [], [], {}
        for chunk_rows, pixels, chunk_errors in self.decode(files):
            errors.update(chunk_errors)
            if chunk_rows:
                rows.extend(chunk_rows)
                parts.append(pixels)
        size = self.input_size
        return (np.concatenate(parts) if parts else np.zeros((0, size, size, 3), np.uint8)), rows, errors

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """(n, K) probabilities of the model's classes for uint8 crops (n, S, S, 3)."""
        out = []
        for start in range(0, len(pixels), CHUNK):
            chunk = pixels[start:start + CHUNK]
            if self.model.kind == "finetune":
                from scipy.special import softmax

                out.append(softmax(self.embedders()[0].embed_pixels(chunk).logits.astype(np.float64), axis=1))
            else:
                features = np.hstack([e.embed_pixels(chunk).features for e in self.embedders()])
                out.append(self.model.predict_features(features)[0])
        return np.concatenate(out) if out else np.zeros((0, len(self.model.classes)))

    def close(self) -> None:
        for embedder in self._embedders or []:
            embedder.close()
        self._embedders = None

    def __enter__(self) -> "ModelOnPixels":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
