"""Write ``src/pixelmine/text/data/imagenet_concepts.tsv``: one row per ImageNet-1k class, the words the
offline text fallback embeds to match a query against the classes (pixelmine.text.concepts).

Sources:
- class order, lemma names and glosses: timm's ImageNet-1k files (timm/data/_info, Apache-2.0), which are
  WordNet 3.0's words and definitions for the 1,000 synsets;
- display names: pixelmine's own ImageNet tag labels (backbones.builtin.imagenet_labels), so a concept and
  a tag with the same index read the same;
- hypernyms: WordNet 3.0's noun database from Debian's ``wordnet-base`` (/usr/share/wordnet/data.noun);
  an ImageNet wnid ``n01440764`` is the noun synset at byte offset ``01440764``.

The output is deterministic (same inputs, same bytes). WordNet's licence asks that its notice travel with
every copy, so it is written beside the table as WORDNET-LICENSE.

    .venv/bin/python scripts/make_imagenet_concepts.py [--wordnet /usr/share/wordnet]
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "src" / "pixelmine" / "text" / "data"
HYPERNYM_DEPTH = 3  # hypernyms kept per class, nearest first: "tabby, a kind of domestic cat, cat, feline"
LIST_SEPARATOR = "|"  # inside a TSV field; WordNet lemmas contain commas and spaces but never a bar
HYPERNYM_POINTERS = ("@", "@i")  # hypernym and instance hypernym ("Granny Smith" is an instance of apple)


def timm_imagenet_info() -> tuple[list[str], dict[str, str], dict[str, str]]:
    """(wnids in class-index order, wnid -> "lemma, lemma", wnid -> gloss) from timm's packaged files."""
    import importlib.util

    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("timm is not installed: pip install timm")
    info = Path(next(iter(spec.submodule_search_locations))) / "data" / "_info"
    wnids = (info / "imagenet_synsets.txt").read_text(encoding="utf-8").split()

    def table(name: str) -> dict[str, str]:
        rows = csv.reader((info / name).read_text(encoding="utf-8").splitlines(), delimiter="\t")
        return {row[0]: row[1] for row in rows if len(row) >= 2}

    return wnids, table("imagenet_synset_to_lemma.txt"), table("imagenet_synset_to_definition.txt")


def read_noun_synsets(data_noun: Path) -> dict[str, tuple[list[str], list[str]]]:
    """offset -> (words, hypernym offsets in file order) for every noun synset of WordNet's data.noun.

    A data line is ``offset lex_filenum ss_type w_cnt (word lex_id){w_cnt} p_cnt (symbol offset pos
    source/target){p_cnt} | gloss``; w_cnt is hexadecimal, p_cnt decimal (wndb(5WN))."""
    synsets: dict[str, tuple[list[str], list[str]]] = {}
    with open(data_noun, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("  "):  # the licence header, each line indented by two spaces
                continue
            fields = line.split(" | ", 1)[0].split()
            offset, word_count = fields[0], int(fields[3], 16)
            words = [fields[4 + 2 * i].replace("_", " ") for i in range(word_count)]
            cursor = 4 + 2 * word_count
            pointer_count = int(fields[cursor])
            hypernyms = []
            for i in range(pointer_count):
                symbol, target, pos = fields[cursor + 1 + 4 * i: cursor + 4 + 4 * i]
                if symbol in HYPERNYM_POINTERS and pos == "n":
                    hypernyms.append(target)
            synsets[offset] = (words, hypernyms)
    return synsets


def hypernym_names(offset: str, synsets: dict[str, tuple[list[str], list[str]]]) -> list[str]:
    """The first word of the nearest HYPERNYM_DEPTH ancestors, following each synset's first hypernym
    (WordNet lists the principal one first; a handful of ImageNet synsets have two)."""
    names = []
    current = offset
    while len(names) < HYPERNYM_DEPTH:
        parents = synsets[current][1]
        if not parents:
            break
        current = parents[0]
        names.append(synsets[current][0][0])
    return names


def ancestor_words(offset: str, synsets: dict[str, tuple[list[str], list[str]]]) -> list[str]:
    """Every word of every ancestor (all hypernym pointers, to the root), nearest first: a query that names
    any of them ("animals", "a tool", "food") names a kind of the class."""
    words, seen, frontier = [], {offset}, [offset]
    while frontier:
        following = []
        for current in frontier:
            for parent in synsets[current][1]:
                if parent not in seen:
                    seen.add(parent)
                    following.append(parent)
                    words += [w for w in synsets[parent][0] if w not in words]
        frontier = following
    return words


def license_notice(data_noun: Path) -> str:
    """WordNet's notice exactly as its database files carry it (the numbered header of data.noun)."""
    lines = []
    with open(data_noun, encoding="utf-8") as handle:
        for line in handle:
            if not line.startswith("  "):
                break
            _number, _, text = line.strip("\n").lstrip().partition(" ")
            lines.append(text.rstrip())
    return "\n".join(lines).strip() + "\n"


def clean(text: str) -> str:
    """One TSV cell: no tabs or line breaks, single spaces."""
    return " ".join(text.split())


def build(wordnet_dir: Path) -> tuple[str, str]:
    """(the TSV text, the licence text)."""
    sys.path.insert(0, str(REPO / "src"))
    from pixelmine.backbones.builtin import imagenet_labels

    data_noun = wordnet_dir / "data.noun"
    if not data_noun.is_file():
        sys.exit(f"{data_noun} not found: install Debian's wordnet-base (apt-get install wordnet-base) "
                 "or pass --wordnet DIR")
    wnids, lemmas, glosses = timm_imagenet_info()
    display = list(imagenet_labels())
    if len(wnids) != 1000 or len(display) != 1000:
        sys.exit(f"expected 1,000 ImageNet-1k classes, got {len(wnids)} wnids and {len(display)} labels")
    synsets = read_noun_synsets(data_noun)

    out = io.StringIO()
    out.write("# ImageNet-1k classes as the offline text fallback embeds them "
              "(written by scripts/make_imagenet_concepts.py; do not edit).\n"
              "# Lemma names and glosses: WordNet 3.0 via timm's imagenet_synset_to_lemma.txt and "
              "imagenet_synset_to_definition.txt (timm: Apache-2.0).\n"
              "# Hypernyms: WordNet 3.0 data.noun (Debian wordnet-base); WordNet 3.0 Copyright 2006 by "
              "Princeton University, see WORDNET-LICENSE.\n"
              "# Display names: pixelmine's ImageNet tag labels (torchvision's category list), same index.\n"
              f"# Lists are separated by '{LIST_SEPARATOR}'; hypernyms nearest first; ancestors: every word of "
              "every hypernym up to the root.\n")
    out.write("\t".join(["index", "wnid", "name", "lemmas", "hypernyms", "ancestors", "gloss"]) + "\n")
    for index, wnid in enumerate(wnids):
        offset = wnid[1:]
        if not wnid.startswith("n") or offset not in synsets:
            sys.exit(f"{wnid} (class {index}) is not a WordNet 3.0 noun synset in {data_noun}")
        names = [clean(name) for name in lemmas[wnid].split(", ")]
        wordnet_words = [word.lower() for word in synsets[offset][0]]
        if names[0].lower() not in wordnet_words:
            sys.exit(f"timm's lemma {names[0]!r} for {wnid} is not a word of WordNet's synset {offset}: "
                     "timm and WordNet disagree on the class")
        row = [str(index), wnid, clean(display[index]), LIST_SEPARATOR.join(names),
               LIST_SEPARATOR.join(clean(name) for name in hypernym_names(offset, synsets)),
               LIST_SEPARATOR.join(clean(word) for word in ancestor_words(offset, synsets)),
               clean(glosses[wnid])]
        out.write("\t".join(row) + "\n")
    return out.getvalue(), license_notice(data_noun)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"),
                        help="folder holding WordNet 3.0's data.noun")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="folder to write the table and licence to")
    args = parser.parse_args(argv)
    table, notice = build(args.wordnet)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "imagenet_concepts.tsv").write_text(table, encoding="utf-8")
    (args.out / "WORDNET-LICENSE").write_text(
        "The hypernyms, lemma names and glosses in imagenet_concepts.tsv come from WordNet 3.0.\n\n" + notice,
        encoding="utf-8")
    print(f"wrote {args.out / 'imagenet_concepts.tsv'} ({len(table.encode()):,} bytes) and WORDNET-LICENSE")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
