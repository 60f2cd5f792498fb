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
    drawn at random (``seed``), stratified so a sample keeps the test split's class shares."""
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
        # proportional stratification: the k-th of a class's n images (in random order) sits at (k + 0.5) / n,
        # so any prefix of the merged order keeps the classes' shares of the test split (and every class)
        position = np.empty(len(usable))
        for label in set(labels[i] for i in usable):
            members = [k for k in order if labels[usable[k]] == label]
            position[members] = (np.arange(len(members)) + 0.5) / len(members)
        order = np.asarray(sorted(np.argsort(position, kind="stable")[:limit]))
    chosen = [usable[k] for k in order]
    return HeldOut(chosen, [rows[i]["path"] for i in chosen], [labels[i] for i in chosen])
