"""The images a model never learned from: its test split, as the catalog knows them today."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError


@dataclass
class HeldOut:
    ids: list[str]
    paths: list[str]
    labels: list[str]  # today's labels (corrections applied), all among the model's classes


def held_out(model, *, limit: int | None = None, seed: int = 0) -> HeldOut:
    """Up to ``limit`` of ``model``'s test images that are still in the workspace with a label it knows,
    drawn at random (``seed``) but stratified by class so a small sample keeps every class."""
    from ..corrections import effective_labels

    with np.load(model.dir / "data.npz", allow_pickle=False) as data:
        test_ids = data["ids"][data["splits"] == "test"].tolist()
    if not test_ids:
        raise InputError(f"model {model.name!r} has no test split to measure on; train it again with a test "
                         "split (pixelmine split, then pixelmine train)")
    rows = {row["id"]: row for row in model.catalog.images(status="ok")}
    labels = effective_labels(model.catalog)
    known = set(model.classes)
    usable = [i for i in test_ids if i in rows and labels.get(i) in known]
    if not usable:
        raise InputError(f"none of model {model.name!r}'s {len(test_ids)} test images is still in the workspace "
                         "with a label it knows; ingest them again or train a new model")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(usable))
    if limit is not None and limit < len(usable):
        by_class: dict[str, list[int]] = {}
        for k in order:
            by_class.setdefault(labels[usable[k]], []).append(k)
        # round robin over the classes: every class keeps its share of a small sample
        picked: list[int] = []
        queues = [list(v) for _, v in sorted(by_class.items())]
        while len(picked) < limit:
            for queue in queues:
                if queue and len(picked) < limit:
                    picked.append(queue.pop(0))
        order = np.asarray(sorted(picked))
    chosen = [usable[k] for k in order]
    return HeldOut(chosen, [rows[i]["path"] for i in chosen], [labels[i] for i in chosen])
