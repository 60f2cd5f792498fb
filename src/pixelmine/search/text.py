"""Words against images: text search, and the scores zero-shot labelling turns into probabilities.

    ws.search_text("a dog on grass", k=20)     # TextSearch: hits best first, the method, a note when blind

Two ways to put a text and an image in one space, chosen by what the workspace has:

- **clip** — a ``clip:ARCH/PRETRAINED`` backbone's image embeddings are cached (``pixelmine extract
  --backbone clip:...``): the text is embedded by the same model's text tower and images are ranked by cosine
  similarity, through the faiss index the similarity search builds.
- **imagenet-concepts** — the offline fallback, when no CLIP features are cached: the text is matched to the
  1,000 ImageNet classes described in words (:mod:`pixelmine.text.concepts`, a small sentence model), and each
  image scores the sum over its ImageNet tags of tag probability x how much the class stands for the text.
  A text far from every ImageNet concept ("textile with a hole") is said to be out of its sight.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import asdict, dataclass, field

import numpy as np

from ..defaults import DEFAULT_BACKBONE
from ..errors import InputError, NotFittedError

log = logging.getLogger(__name__)

CLIP = "clip"
CONCEPTS = "imagenet-concepts"


@dataclass
class TextHit:
    rank: int  # 1 = best match
    image_id: str
    score: float  # clip: cosine similarity; concepts: share of the image's tag probability on the text's classes
    path: str | None
    label: str | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TextSearch:
    query: str
    method: str  # clip | imagenet-concepts
    backbone: str
    hits: list[TextHit]
    known: bool = True  # False: the text is far from everything the method can see (concepts only)
    note: str | None = None
    concepts: list[tuple[str, float]] = field(default_factory=list)  # concepts: the classes the text matched

    def to_dict(self) -> dict:
        return {**asdict(self), "hits": [h.to_dict() for h in self.hits]}


def check_text(text, what: str = "the query") -> str:
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{what} is empty; give some words, e.g. \"a dog on grass\"")
    if len(text) > 1000:
        raise InputError(f"{what} is {len(text)} characters long; keep it under 1,000")
    return text.strip()


class TextSpace:
    """Images of one cached feature set and a way to score texts against them."""

    def __init__(self, root, features, method: str):
        self.root = root
        self.features = features
        self.method = method
        self.backbone = features.backbone
        self._encoder = None
        self._concepts = None

    # -- the text side ------------------------------------------------------------------------------------
    def clip_text(self, texts: list[str]) -> np.ndarray:
        """(T, D) L2-normalised CLIP text embeddings (clip method only)."""
        if self._encoder is None:
            self._encoder = _clip_encoder(self.backbone, str(self.root))
        with _ENCODER_LOCK:  # one text tower per process, shared by the server's threads
            return np.asarray(self._encoder.encode(list(texts)), dtype=np.float32)

    @property
    def logit_scale(self) -> float:
        """CLIP's learned temperature (100 for the released models); 1 for the concept method."""
        if self.method != CLIP:
            return 1.0
        if self._encoder is None:
            self.clip_text(["a photo"])
        return float(self._encoder.logit_scale)

    def concepts(self):
        """The ImageNet concepts in words (:class:`pixelmine.text.concepts.ImageNetConcepts`), loaded once."""
        if self._concepts is None:
            self._concepts = _imagenet_concepts()
        return self._concepts

    # -- scores -----------------------------------------------------------------------------------------
    def image_vectors(self) -> np.ndarray:
        vectors = np.asarray(self.features.vectors, dtype=np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def concept_scores(self, weights: np.ndarray) -> np.ndarray:
        """(N, T): each image's tag probabilities weighted by ``weights`` (T, 1000) of ImageNet classes."""
        indices, probs = self.features.tag_indices, self.features.tag_probs
        valid = indices >= 0
        gathered = np.asarray(weights, dtype=np.float64)[:, np.where(valid, indices, 0)]  # (T, N, 5)
        return np.einsum("tnj,nj->nt", gathered, np.where(valid, probs, 0.0))



_ENCODER_LOCK = threading.Lock()


@functools.lru_cache(maxsize=2)
def _clip_encoder(backbone: str, root: str):
    from ..backbones.clip import clip_text_encoder

    return clip_text_encoder(backbone, root=root)


@functools.lru_cache(maxsize=1)
def _imagenet_concepts():
    from ..text.concepts import ImageNetConcepts

    return ImageNetConcepts.load()


def open_text_space(root, backbone: str | None = None) -> TextSpace:
    """The text space of the workspace at ``root``: ``backbone`` when given (a ``clip:`` one, or one with
    ImageNet tags for the concept fallback); else the newest cached CLIP features, else the default
    backbone's tags. NotFittedError naming the extraction to run when the features are missing."""
    from ..backbones.clip import is_clip
    from ..features.store import extracted_backbones, load_features

    if backbone is None:
        cached = extracted_backbones(root)
        clip = [name for name in cached if is_clip(name)]
        tagged = [name for name in cached if not is_clip(name) and _has_imagenet_tags(name, root)]
        backbone = (clip or ([DEFAULT_BACKBONE] if DEFAULT_BACKBONE in tagged else tagged) or [DEFAULT_BACKBONE])[0]
    try:
        features = load_features(root, backbone)
    except NotFittedError:
        raise NotFittedError(f"no {backbone} features in this workspace yet, so there is nothing to search; run: "
                             f"pixelmine extract --backbone {backbone}" + (
                                 "" if is_clip(backbone) else
                                 "  (or, with CLIP weights: pixelmine extract --backbone "
                                 "clip:ViT-B-32/laion2b_s34b_b79k)")) from None
    if is_clip(backbone):
        return TextSpace(root, features, CLIP)
    if features.tag_indices is None or not _has_imagenet_tags(backbone, root):
        raise InputError(f"the {backbone} features carry no ImageNet-1k tags, which the offline text search reads; "
                         f"search with --backbone {DEFAULT_BACKBONE} (pixelmine extract first), or a clip: backbone")
    return TextSpace(root, features, CONCEPTS)


def _has_imagenet_tags(backbone: str, root) -> bool:
    """Whether ``backbone``'s tags are the 1,000 ImageNet classes (the concepts' order), e.g. not a test net's."""
    from .. import backbones
    from ..errors import PixelmineError

    try:
        return len(backbones.get(backbone, root=root).label_names()) == 1000
    except (PixelmineError, ImportError):
        return False


def search_text(catalog, root, query: str, k: int = 20, *, backbone: str | None = None,
                space: TextSpace | None = None) -> TextSearch:
    """The ``k`` catalogued images that best match the words ``query``, best first."""
    from .index import VectorIndex
    from .query import _image_info

    query = check_text(query)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"k must be a whole number >= 1; got {k!r}")
    space = space or open_text_space(root, backbone)
    known, note, matched = True, None, []
    if space.method == CLIP:
        index = VectorIndex.for_features(root, space.features)
        found, scores = index.search(space.clip_text([query]), min(k, len(index)))
        ranked = list(zip(found[0], scores[0].tolist()))
    else:
        match = space.concepts().match(query)
        known, note = match.known, match.note
        matched = [(name, round(float(sim), 4)) for _, name, sim in match.top[:5]]
        scores = space.concept_scores(match.weights[None])[:, 0]
        order = np.argsort(-scores, kind="stable")[:k]
        ranked = [(space.features.ids[i], float(scores[i])) for i in order if scores[i] > 0]
    info = _image_info(catalog, [image_id for image_id, _ in ranked])
    hits = [TextHit(rank + 1, image_id, float(score), *info.get(image_id, (None, None)))
            for rank, (image_id, score) in enumerate(ranked)]
    return TextSearch(query, space.method, space.backbone, hits, known, note, matched)
