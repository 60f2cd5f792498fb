"""Which ImageNet classes a query stands for: the offline fallback of text search and zero-shot labels.

Without CLIP weights, a backbone only knows its 1,000 ImageNet classes. A query ("a dog catching a
frisbee") or a label name ("kitty") is embedded with a small sentence model (encoder.py) and compared
with each class written as words: "tabby, a kind of domestic cat, cat, feline: a cat with a grey or tawny
coat mottled with black" (data/imagenet_concepts.tsv, made by scripts/make_imagenet_concepts.py from
WordNet 3.0 and timm's class list). Images are then ranked by the backbone's ImageNet probabilities,
weighted by how much each class stands for the query (``ConceptMatch.weights``).

Why hypernyms and glosses: embedding bare class names ("tabby") leaves the model to guess what a rare
word is; with its hypernyms and definition, "a musical instrument" or "some kind of boat" reach the right
classes. On the frozen set of tests/fixtures/text_queries.json (52 queries), mAP is 0.93 with them
(0.92 without the WordNet-word boost below) and 0.71 with bare names (benchmarks/text.py --part classes).

The 1,000 class vectors are embedded once (10-20 s on two cores) and cached per user as a .npy whose
name carries a hash of the texts and of the model, so a new table or model embeds again by itself:

    ~/.cache/pixelmine/text/imagenet-concepts-<key>.npy   ($PIXELMINE_CACHE or $XDG_CACHE_HOME move it)

    concepts = ImageNetConcepts.load()
    match = concepts.match("a cup of coffee")      # match.weights: (1000,), sums to 1
    if not match.known:
        print(match.note)                          # the fallback cannot see this query
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fileio import HASH_BLOCK, atomic_save_npy
from .encoder import EMBEDDING_DIM, SentenceEncoder, model_files

_log = logging.getLogger(__name__)

TABLE_PATH = Path(__file__).parent / "data" / "imagenet_concepts.tsv"
NUM_CLASSES = 1000
LIST_SEPARATOR = "|"  # between names inside one TSV cell (scripts/make_imagenet_concepts.py)
# Bump when the way a text becomes a vector changes (pooling, normalisation), so old caches are not read.
EMBEDDING_VERSION = "mean-pool-l2-v1"
CACHE_PREFIX = "imagenet-concepts-"

# The rules below were set on the frozen query set of tests/fixtures/text_queries.json after it was
# written, plus 19 more off-ImageNet queries (benchmarks/text.py, DEV_OFF_IMAGENET); the numbers are cosine
# similarities of all-MiniLM-L6-v2 vectors and move with the model.
#
# A query whose best class similarity is below this is "unknown": no ImageNet concept is close. Queries
# that name a class or its kind score 0.5-0.85 ("a cup of coffee" 0.69, "a cat" 0.67 before the boost);
# defects, documents and charts score below 0.50 ("textile with a hole" 0.47, "a handwritten signature"
# 0.50-, "a crack in the concrete" 0.37). The two sets overlap at the edge: a sentence whose subject is a
# class but whose words are mostly about something else ("a horse grazing in a field" 0.45, "a dog
# catching a frisbee" 0.44), or a colloquial word ("bunny" 0.4996), falls just below and is reported as
# unknown. Of the two mistakes that is the milder one: the ranking is still made, with the note beside it,
# whereas a defect query called known would rank by the object alone with no warning.
KNOWN_THRESHOLD = 0.50
# A query that is exactly a WordNet word of a class ("tabby", "Persian cats") moves that class's
# similarity this share of the way to 1, and is known; a word of one of its three nearest hypernyms
# ("a bear", "a bird of prey", "snakes") moves it by the smaller share, so a class named outright still
# ranks above its siblings. Measured: no boost mAP 0.917, hypernym share 0.1 / 0.2 / 0.3: 0.925 / 0.929 /
# 0.926 (the frozen set has few queries that are a class's own word, so LEMMA_BOOST is set by the tests:
# "tabby" must rank tabby first, not tiger cat).
LEMMA_BOOST = 0.5
HYPERNYM_BOOST = 0.2
# Weights: a softmax with this temperature over the classes within WEIGHT_MARGIN of the best similarity;
# classes further down get exactly 0. With a temperature of 0.03 a class 0.1 below the best weighs 3.6%
# of the best one, so weight spreads over near-equals ("a cat": the 5 domestic cats) but not down the
# long tail that a softmax over all 1,000 would let add up to most of the weight. On the frozen set: 0.93
# of the weight lies on relevant classes, and 80% of the relevant classes get at least a tenth of an
# even share (temperature 0.01: 0.96 but 58%; 0.05: 0.88 and 86%). The margin only cuts the tail to 0
# (at 0.2 below the best a class would weigh 0.1% of it), which keeps cluster descriptions short.
WEIGHT_MARGIN = 0.20
WEIGHT_TEMPERATURE = 0.03
TOP_CLASSES = 5  # classes listed in ConceptMatch.top

ARTICLES = ("a", "an", "the", "some")
CLIP_ADVICE = ("use a CLIP backbone (--backbone clip:ViT-B-32/laion2b_s34b_b79k, after pip install "
               "'pixelmine[clip]') or train a model on labelled examples of it")


@dataclass(frozen=True)
class Concept:
    """One ImageNet-1k class as the table writes it."""

    index: int
    wnid: str
    name: str  # display name, the same as pixelmine's ImageNet tag of this index
    lemmas: tuple[str, ...]  # WordNet's words for the synset
    hypernyms: tuple[str, ...]  # up to 3, nearest first (what the sentence model reads)
    ancestors: tuple[str, ...]  # every word of every hypernym to the root (what the term boost matches)
    gloss: str


@dataclass(frozen=True, eq=False)
class ConceptMatch:
    """How a query maps onto the ImageNet classes."""

    query: str
    similarities: np.ndarray  # (1000,) cosine similarity of query and class text, after the term boost
    weights: np.ndarray  # (1000,) >= 0, sums to 1: how much each class stands for the query
    top: list[tuple[int, str, float]]  # (class index, display name, similarity), best first
    known: bool  # False: no ImageNet class is close, so ImageNet probabilities cannot find it
    note: str | None  # the sentence to show the user when not known


def read_concepts(path: str | os.PathLike = TABLE_PATH) -> list[Concept]:
    """The table's rows in class-index order."""
    concepts = []
    with open(path, encoding="utf-8") as handle:
        lines = [line.rstrip("\n") for line in handle if not line.startswith("#")]
    header, rows = lines[0].split("\t"), lines[1:]
    if header != ["index", "wnid", "name", "lemmas", "hypernyms", "ancestors", "gloss"] or len(rows) != NUM_CLASSES:
        raise InputError(f"{path} is not an ImageNet concept table ({len(rows)} rows, header {header}); "
                         "write it again with: python scripts/make_imagenet_concepts.py")
    for expected, row in enumerate(rows):
        index, wnid, name, lemmas, hypernyms, ancestors, gloss = row.split("\t")
        if int(index) != expected:
            raise InputError(f"{path}: row {expected + 1} has class index {index}; write the table again "
                             "with: python scripts/make_imagenet_concepts.py")
        concepts.append(Concept(int(index), wnid, name, tuple(lemmas.split(LIST_SEPARATOR)),
                                tuple(h for h in hypernyms.split(LIST_SEPARATOR) if h),
                                tuple(a for a in ancestors.split(LIST_SEPARATOR) if a), gloss))
    return concepts


def class_text(concept: Concept) -> str:
    """What the sentence model reads for a class: "name, a kind of h1, h2, h3: gloss"."""
    kind = f", a kind of {', '.join(concept.hypernyms)}" if concept.hypernyms else ""
    return f"{concept.name}{kind}: {concept.gloss}"


# English plurals the regular endings miss, for the nouns a query is likely to end in
IRREGULAR_PLURALS = {"people": "person", "men": "man", "women": "woman", "children": "child", "mice": "mouse",
                     "geese": "goose", "feet": "foot", "teeth": "tooth", "oxen": "ox", "dice": "die",
                     "fish": "fish", "sheep": "sheep", "deer": "deer", "fungi": "fungus", "cacti": "cactus"}


def term_forms(text: str) -> set[str]:
    """The forms of ``text`` compared with WordNet words: lower case, without a leading article, singular
    by the regular English endings ("the Persian cats" -> {"persian cats", "persian cat"})."""
    term = " ".join(re.sub(r"[^\w\s'-]", " ", text.lower()).split())
    words = term.split(" ")
    if len(words) > 1 and words[0] in ARTICLES:
        term = " ".join(words[1:])
    forms = {term}
    head, _, last = term.rpartition(" ")
    if last in IRREGULAR_PLURALS:
        forms.add(f"{head} {IRREGULAR_PLURALS[last]}".strip())
    if len(term) > 4 and term.endswith("ves"):  # knives, wolves, leaves
        forms.update({term[:-3] + "f", term[:-3] + "fe"})
    if len(term) > 3 and term.endswith("ies"):
        forms.add(term[:-3] + "y")
    if len(term) > 3 and term.endswith("es"):
        forms.add(term[:-2])
    if len(term) > 2 and term.endswith("s") and not term.endswith("ss"):
        forms.add(term[:-1])
    return forms


def _terms_to_classes(concepts: list[Concept], field: str) -> dict[str, list[int]]:
    table: dict[str, list[int]] = {}
    for concept in concepts:
        words = {word.lower() for word in getattr(concept, field)}
        if field == "lemmas":
            words.add(concept.name.lower())
        for word in words:
            table.setdefault(word, []).append(concept.index)
    return table


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def file_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of a file, computed once per process for each (path, size, mtime)."""
    stat = os.stat(path)
    return _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)


def cache_key(texts: list[str], model_path: str | os.PathLike, tokenizer_path: str | os.PathLike) -> str:
    """Changes when any class text, the model file or its tokenizer changes."""
    digest = hashlib.sha256()
    for part in (EMBEDDING_VERSION, file_fingerprint(model_path), file_fingerprint(tokenizer_path), *texts):
        digest.update(part.encode("utf-8") + b"\0")
    return digest.hexdigest()[:24]


def default_cache_dir() -> Path:
    from ..features.onnx_cache import user_cache_dir  # the one definition of pixelmine's per-user cache

    return user_cache_dir() / "text"


def _read_cached(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        _log.warning("cannot read the cached class vectors %s (%s); embedding them again", path, exc)
        return None
    if vectors.shape != (NUM_CLASSES, EMBEDDING_DIM) or not np.isfinite(vectors).all():
        _log.warning("the cached class vectors %s have shape %s; embedding them again", path, vectors.shape)
        return None
    return vectors.astype(np.float32, copy=False)


class ImageNetConcepts:
    """The 1,000 ImageNet-1k classes as sentence vectors; :meth:`match` maps a query onto them.

    Build it with :meth:`load`. ``classes[i]`` is the display name of class ``i`` (the backbone's class
    index, the same order and names as pixelmine's ImageNet tags), ``wnids[i]`` its WordNet id,
    ``texts[i]`` the words embedded for it.
    """

    def __init__(self, concepts: list[Concept], texts: list[str], vectors: np.ndarray, *,
                 encoder: SentenceEncoder | None = None, owns_encoder: bool = False):
        self.concepts = concepts
        self.classes = [concept.name for concept in concepts]
        self.wnids = [concept.wnid for concept in concepts]
        self.texts = texts
        self.vectors = vectors
        self._encoder = encoder
        self._owns_encoder = owns_encoder or encoder is None
        self._lemma_classes = _terms_to_classes(concepts, "lemmas")
        self._hypernym_classes = _terms_to_classes(concepts, "ancestors")

    @classmethod
    def load(cls, cache_dir: str | os.PathLike | None = None, *,
             encoder: SentenceEncoder | None = None) -> "ImageNetConcepts":
        """The class vectors from ``cache_dir`` (default: the per-user cache), embedding and caching them
        first when no cached file matches the texts and the model. ``encoder`` is used and left open;
        without one, an encoder is created when first needed and closed by :meth:`close`."""
        concepts = read_concepts()
        texts = [class_text(concept) for concept in concepts]
        if encoder is not None:
            model_path, tokenizer_path = encoder.model_path, encoder.tokenizer_path
        else:
            model_path, tokenizer_path = model_files()
        folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        path = folder / f"{CACHE_PREFIX}{cache_key(texts, model_path, tokenizer_path)}.npy"
        vectors = _read_cached(path)
        owns = encoder is None
        if vectors is None:
            if encoder is None:
                encoder = SentenceEncoder()
            _log.info("embedding the %d ImageNet class texts once (cached in %s)", len(texts), path)
            vectors = encoder.encode(texts)
            atomic_save_npy(path, vectors)
        return cls(concepts, texts, vectors, encoder=encoder, owns_encoder=owns)

    @property
    def encoder(self) -> SentenceEncoder:
        if self._encoder is None:
            self._encoder = SentenceEncoder()
        return self._encoder

    def match(self, query: str) -> ConceptMatch:
        """How much each ImageNet class stands for ``query`` (a search text or a label name)."""
        return self.match_many([query])[0]

    def match_many(self, queries: list[str]) -> list[ConceptMatch]:
        """:meth:`match` for several queries (label names of a zero-shot run) with one encoder call."""
        if isinstance(queries, str):
            queries = [queries]
        queries = list(queries)
        for query in queries:
            if not isinstance(query, str) or not query.strip():
                raise InputError(f"A text query must be a few words, got {query!r}; describe what to find, "
                                 "e.g. 'a dog on a beach' or a label name such as 'bottle cap'.")
        if not queries:
            return []
        similarities = self.encoder.encode(queries) @ self.vectors.T
        return [self._decide(query, row) for query, row in zip(queries, similarities)]

    def _decide(self, query: str, similarities: np.ndarray) -> ConceptMatch:
        similarities = similarities.astype(np.float32, copy=True)
        named, kinds = self.term_classes(query)
        similarities[kinds] += HYPERNYM_BOOST * (1.0 - similarities[kinds])
        similarities[named] += LEMMA_BOOST * (1.0 - similarities[named])
        best = float(similarities.max())
        known = best >= KNOWN_THRESHOLD or bool(named) or bool(kinds)
        order = np.argsort(-similarities, kind="stable")
        top = [(int(i), self.classes[i], round(float(similarities[i]), 4)) for i in order[:TOP_CLASSES]]
        note = None if known else (
            f"{query!r} is far from every ImageNet class (closest: {top[0][1]!r}, similarity {best:.2f}), "
            "so the offline text fallback, which ranks images by their ImageNet classes, cannot see it; "
            f"{CLIP_ADVICE}.")
        return ConceptMatch(query=query, similarities=similarities, weights=self.weights_for(similarities),
                            top=top, known=known, note=note)

    def term_classes(self, query: str) -> tuple[list[int], list[int]]:
        """(classes the query names by one of their WordNet words, classes whose hypernym it names)."""
        named: set[int] = set()
        kinds: set[int] = set()
        for form in term_forms(query):
            named.update(self._lemma_classes.get(form, ()))
            kinds.update(self._hypernym_classes.get(form, ()))
        return sorted(named), sorted(kinds - named)

    @staticmethod
    def weights_for(similarities: np.ndarray, *, margin: float = WEIGHT_MARGIN,
                    temperature: float = WEIGHT_TEMPERATURE) -> np.ndarray:
        """Softmax over the classes within ``margin`` of the best similarity; 0 for the rest."""
        best = float(similarities.max())
        logits = np.where(similarities >= best - margin, (similarities - best) / temperature, -np.inf)
        weights = np.exp(logits)
        return (weights / weights.sum()).astype(np.float32)

    def describe(self, class_weights: np.ndarray, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` most weighted classes as (display name, weight), heaviest first; classes of weight 0
        are left out. ``class_weights`` is any (1000,) non-negative vector, e.g. a cluster's mean ImageNet
        probabilities."""
        weights = np.asarray(class_weights, dtype=np.float64)
        if weights.shape != (NUM_CLASSES,) or not np.isfinite(weights).all():
            raise InputError(f"class_weights must be {NUM_CLASSES} finite numbers, one per ImageNet class, "
                             f"got shape {weights.shape}; pass the backbone's ImageNet probabilities.")
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}.")
        order = np.argsort(-weights, kind="stable")[:k]
        return [(self.classes[i], round(float(weights[i]), 4)) for i in order if weights[i] > 0]

    def close(self) -> None:
        if self._owns_encoder and self._encoder is not None:
            self._encoder.close()
            self._encoder = None

    def __enter__(self) -> "ImageNetConcepts":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
