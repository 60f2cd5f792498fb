"""The feature vectors a training reads: a backbone's (or ``A+B``'s) cached features for the labelled
images, extracting what is missing first."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from ..errors import NotFittedError
from .data import LabelledSet

log = logging.getLogger(__name__)


def features_for(root, backbone: str, data: LabelledSet, *, extract=None, progress="auto"):
    """The FeatureSet of ``backbone`` and ``data`` restricted to images that have features.

    ``extract(backbone)`` (e.g. ``Workspace.extract``) is called first when some labelled image has no
    vector yet; without it, the images without features are left out with a note. ``A+B`` is the
    concatenation of two backbones' features (:mod:`.joined`).
    """
    from .joined import load_feature_set, parts

    def load():
        try:
            return load_feature_set(root, backbone)
        except NotFittedError:
            return None

    features = load()
    have = set(features.ids) if features is not None else set()
    missing = [i for i in data.ids if i not in have]
    if missing and extract is not None:
        log.info("%d labelled images have no %s features; extracting", len(missing), backbone)
        for name in parts(backbone):
            extract(name, progress=progress)
        features = load()
        have = set(features.ids) if features is not None else set()
        missing = [i for i in data.ids if i not in have]
    if features is None:
        raise NotFittedError(f"no {backbone} features in workspace {str(root)!r}; run: pixelmine extract "
                             f"--backbone {backbone}")
    notes = []
    if missing:
        keep = np.asarray([i in have for i in data.ids])
        notes.append(f"{len(missing)} labelled images have no {backbone} features (they failed to decode or "
                     "were not extracted) and are left out")
        data = replace(data, ids=[i for i, k in zip(data.ids, keep) if k], labels=data.labels[keep],
                       paths=[p for p, k in zip(data.paths, keep) if k],
                       metadata=[m for m, k in zip(data.metadata, keep) if k])
        from .data import check_trainable

        check_trainable(data.labels, workspace=str(root))
    return features, data, notes
