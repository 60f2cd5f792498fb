"""The workspace: a directory that holds the catalog and every stage's output.

    workspace/
      catalog.sqlite     images, paths, runs (and later findings, labels corrections)
      features/<backbone>/   cached feature shards
      models/<name>/     trained models
      index/  reports/   similarity index, report, clusters and rules
"""

from __future__ import annotations

import os
from pathlib import Path

from .catalog import Catalog
from .errors import InputError, WorkspaceError
from .optional import check_stage, needs_extras
from .defaults import DEFAULT_BACKBONE

DEFAULT_WORKSPACE = "pixelmine-workspace"
ENV_VAR = "PIXELMINE_WORKSPACE"


def default_workspace_path() -> Path:
    return Path(os.environ.get(ENV_VAR) or DEFAULT_WORKSPACE)


class Workspace:
    """Entry point of the Python API. ``open_workspace(path)`` creates the directory when needed."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.root = Path(path) if path is not None else default_workspace_path()
        if self.root.exists() and not self.root.is_dir():
            raise WorkspaceError(f"workspace path {str(self.root)!r} exists and is not a directory; "
                                 "choose another --workspace")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WorkspaceError(f"cannot create the workspace {str(self.root)!r}: {exc.strerror}; "
                                 "choose a writable --workspace") from exc
        self._catalog: Catalog | None = None

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = Catalog(self.root / "catalog.sqlite")
        return self._catalog

    def path(self, *parts: str) -> Path:
        """A directory or file inside the workspace; parent directories are created."""
        target = self.root.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- stage 1: ingest --------------------------------------------------------------------------
    def ingest(self, sources=None, *, manifest=None, progress="auto", **options):
        """Validate and catalogue images. ``sources``: a folder, an image path, or a list of them.

        Options are the fields of :class:`pixelmine.ingest.IngestConfig`, e.g.
        ``labels_from_folders=True``, ``include=["*.jpg"]``, ``max_pixels=50_000_000``.
        Returns an :class:`~pixelmine.ingest.IngestResult`.
        """
        from .ingest import ingest

        return ingest(self.catalog, sources, manifest=manifest, progress=progress, **options)

    def status(self) -> dict:
        """Counts by status, label and format; exact duplicates; conflicting labels."""
        return self.catalog.summary()

    def files(self, status: str | None = None) -> list[dict]:
        """Files with their status and, for problems, the reason and the fix."""
        from .ingest import MISSING, STATUSES

        if status is not None and status not in STATUSES and status != MISSING:
            raise InputError(f"unknown status {status!r}; choose one of: {', '.join([*STATUSES, MISSING])}")
        return self.catalog.files(status)

    def images(self, *, status: str | None = "ok", label: str | None = None) -> list[dict]:
        """Catalogued images (unique contents) with their properties and one present path each."""
        return self.catalog.images(status=status, label=label)

    # -- stage 2: features (pixelmine.backbones, pixelmine.features) ----------------------------------
    @needs_extras("Feature extraction")
    def extract(self, backbone: str = DEFAULT_BACKBONE, *, config=None, progress="auto", ids=None, **options):
        """Compute and cache the features (and top-5 ImageNet tags) of every ok image the cache lacks.

        Options are the fields of :class:`pixelmine.features.ExtractConfig`: ``backend`` ("onnx" or
        "torch"), ``batch_size``, ``precision``, ``threads``, ``workers``, ``retry_errors``, ...
        ``ids`` restricts the work to those image ids. Returns an :class:`~pixelmine.features.ExtractResult`;
        ``result.features()`` gives the vectors.
        """
        from .features.extract import extract

        if config is None:
            options["backbone"] = backbone
        return extract(self.catalog, self.root, config, progress=progress, ids=ids, **options)

    def features(self, backbone: str = DEFAULT_BACKBONE, *, precision: str = "fp32"):
        """Cached feature vectors of ``backbone`` as a :class:`pixelmine.features.FeatureSet`.

        Looks up the cache of the backbone's current fingerprint (weights + preprocessing + precision);
        when there is none (e.g. the weights package was removed since), the newest cache of that
        backbone is returned. Raises NotFittedError (with the command to run) when nothing was extracted.
        """
        from .features.store import load_features

        return load_features(self.root, backbone, precision=precision)

    @needs_extras("ImageNet tags")
    def tags(self, backbone: str = DEFAULT_BACKBONE, *, min_prob: float = 0.0) -> dict[str, list[tuple[str, float]]]:
        """Each image's top-5 ImageNet tags ``[(label, probability), ...]``, best first, by image id."""
        from .backbones import get as get_backbone
        from .features.tags import tags_by_image

        return tags_by_image(self.features(backbone), get_backbone(backbone, root=self.root).label_names(), min_prob=min_prob)

    def extraction_errors(self, backbone: str | None = None) -> list[dict]:
        """Images that ingest accepted but that failed to decode during extraction, with the reason."""
        from .features.extract import extraction_errors

        return extraction_errors(self.catalog, backbone)

    # -- stage 3: learn (splits, training, evaluation, prediction; pixelmine.learn) -----------------------
    @needs_extras("Splitting")
    def split(self, *, backbone: str = DEFAULT_BACKBONE, exclude_classes=(), **split_options):
        """Split the labelled images into train/val/test (stored in the catalog) and return the
        :class:`~pixelmine.learn.data.SplitResult`. Options are fields of
        :class:`~pixelmine.learn.SplitConfig` (``train=0.8, val=0.1, test=0.1, seed=1, column="split"``);
        near-duplicates are found from ``backbone``'s cached features, when there are any."""
        from .errors import NotFittedError
        from .learn.config import TrainConfig
        from .learn.data import ensure_splits, labelled_images
        from .learn.inputs import features_for

        config = TrainConfig.from_mapping({"backbone": backbone, "exclude_classes": tuple(exclude_classes),
                                           "split": split_options})
        data = labelled_images(self.catalog, exclude_classes=config.exclude_classes)
        vectors = None
        try:
            features, data, _ = features_for(self.root, backbone, data, extract=self.extract, progress=False)
            vectors = features.vectors[features.rows(data.ids)]
        except NotFittedError:
            pass
        return ensure_splits(self.catalog, data, config.split, vectors, resplit=True)

    @needs_extras("Training")
    def train(self, head: str | None = None, *, config=None, resplit: bool = False, resume: bool = False,
              progress="auto", on_epoch=None, **options):
        """Train and save a model; returns a :class:`~pixelmine.learn.model.Model`.

        ``head``: "auto" (default: choose backbone, framing and head by cross-validation within
        ``auto={"budget_s": 300}``), "logreg", "svm", "knn" or "finetune"; it overrides ``config.head`` when given.

        Options are fields of :class:`~pixelmine.learn.TrainConfig`: ``name``, ``backbone``, ``clean=True``
        (leave out leaking copies and confident label issues), ``split={"seed": 1}``, ``finetune={"epochs": 5}``,
        ``class_weight=None``, ``balance_groups="camera"`` (refit the newest probe model's head, or
        ``balance_base``'s, with every group x class cell of that metadata column weighted equally), ...
        """
        from .learn.train import train

        if head is not None:
            options["head"] = head
        return train(self.catalog, self.root, config, extract=self.extract, discover=self.discover, resplit=resplit,
                     resume=resume, progress=progress, on_epoch=on_epoch, **options)

    @needs_extras("Fairness")
    def fairness(self, by=None, *, model: str | None = None, min_group: int = 20, n_bootstrap: int = 1000,
                 progress="auto"):
        """Who the model fails: its test-split metrics per group of each metadata column in ``by`` (a name or a
        list; None: every column that splits the test images), with stratified bootstrap intervals and the
        gaps between groups; failed groups become ``group_gap`` findings. A
        :class:`~pixelmine.trust.fairness.FairnessResult`, also saved as ``models/NAME/fairness.json``."""
        from .trust.fairness import assess_fairness

        return assess_fairness(self.catalog, self.root, self.model(model), by, min_group=min_group,
                               n_bootstrap=n_bootstrap, progress=progress)

    def group_columns(self) -> dict[str, str]:
        """The columns images can be grouped by (manifest columns and derived ones): name -> what it is."""
        from .discover.groups import group_columns

        return group_columns(self.catalog.images(status="ok"))

    def privacy_audit(self, *, faces: bool = True, progress="auto"):
        """What the images carry that could identify a place or a person: GPS (EXIF, XMP), serial numbers,
        owner names, embedded thumbnails, faces; per image, cached and resumable. A
        :class:`~pixelmine.privacy.audit.PrivacyAudit`, saved in the workspace for the report."""
        from .privacy.audit import audit_privacy

        return audit_privacy(self.catalog, self.root, faces=faces, progress=progress)

    def export_data(self, output, *, only: str | None = None, labels=None, strip_location: bool = True,
                    strip_metadata: bool = False, anonymise_faces: str | None = "fill", anonymise_paths: bool = False,
                    progress="auto"):
        """Copy selected images to ``output`` for sharing (the originals are never touched): EXIF orientation
        applied, location and thumbnails removed (JPEG losslessly), faces filled or mosaicked, with a manifest
        CSV. ``only``: a finding kind; ``labels``: labels to keep. See :mod:`pixelmine.privacy.export`."""
        from .privacy.export import export_data

        return export_data(self.catalog, self.root, output, only=only, labels=labels, strip_location=strip_location,
                           strip_metadata=strip_metadata, anonymise_faces=anonymise_faces,
                           anonymise_paths=anonymise_paths, progress=progress)

    @needs_extras("Suggestions")
    def suggest(self, n: int = 50, *, model: str | None = None, pool: str = "unlabelled",
                backbone: str | None = None, seed: int = 0) -> list:
        """The ``n`` images to label next (:class:`~pixelmine.learn.suggest.Suggestion` rows, best first):
        uncertain for the newest (or named) model, one per cluster of the pool before any cluster repeats.
        ``pool``: "unlabelled" (default), "review" (flagged label issues) or "all"."""
        from .learn.suggest import suggest

        return suggest(self.catalog, self.root, model=self._trained(model), n=n, pool=pool, backbone=backbone,
                       seed=seed)

    @needs_extras("Cleaning")
    def clean_plan(self, *, backbone: str = DEFAULT_BACKBONE, exclude_classes=(), min_issue_probability: float = 0.5,
                   run_discovery: bool = False, progress="auto", **split_options):
        """What ``train(clean=True)`` would leave out of training (a :class:`~pixelmine.learn.clean.CleanPlan`):
        near-copies of test images and confident label issues of train / val images, from the newest discover
        run (``run_discovery=True`` runs discovery of copies and label issues first when there is none).
        Nothing is changed: a preview."""
        from .learn.clean import CLEAN_FINDINGS, plan_cleaning
        from .learn.config import TrainConfig
        from .learn.data import ensure_splits, labelled_images
        from .learn.inputs import features_for
        from .discover.findings import latest_discover_run

        config = TrainConfig.from_mapping({"backbone": backbone, "exclude_classes": tuple(exclude_classes),
                                           "split": split_options})
        data = labelled_images(self.catalog, exclude_classes=config.exclude_classes)
        features, data, _ = features_for(self.root, backbone, data, extract=self.extract, progress=progress)
        split = ensure_splits(self.catalog, data, config.split, features.vectors[features.rows(data.ids)])
        if run_discovery and latest_discover_run(self.catalog, "label_issue") is None:
            self.discover(only=list(CLEAN_FINDINGS), backbone=backbone, progress=progress)
        return plan_cleaning(self.catalog, data, split, min_issue_probability=min_issue_probability)

    @needs_extras("Loading a model")
    def model(self, name: str | None = None):
        """A trained model by name (default: the most recently trained)."""
        from .learn.loading import load_model

        return load_model(self.catalog, self.root, name)

    def models(self) -> list[dict]:
        """Every model folder: name, kind, head, backbone, classes, test accuracy and macro-F1."""
        from .learn.artifacts import list_models

        return list_models(self.root)

    def oof_probabilities(self, model: str | None = None) -> dict:
        """Out-of-fold probabilities of every labelled image (``models/<name>/oof.npz``): ids, labels, classes,
        probs (N, K), folds, splits. Default model: the most recently trained."""
        return self.model(model).oof()

    def runs(self, kind: str | None = None, limit: int = 50) -> list[dict]:
        return self.catalog.runs(kind, limit)

    # -- stage 5a: discover (duplicates, outliers, label issues, quality, classes; pixelmine.discover.run) ----
    @needs_extras("Discovery")
    def discover(self, *, only=None, backbone: str = DEFAULT_BACKBONE, model: str | None = None, workers: int = 2,
                 progress="auto"):
        """Run the finders (all, or ``only`` finder names / finding kinds) as one recorded run; returns a
        :class:`~pixelmine.discover.run.DiscoverResult` (run id, counts per kind, summary). Needs features:
        NotFittedError names the command to run when there are none."""
        from .discover.context import require_images
        from .discover.finders import resolve_only
        from .discover.run import discover

        check_stage("discover")
        only = resolve_only(only)  # a wrong name is said before any work
        require_images(self.catalog)
        return discover(self.catalog, self.root, self.features(backbone), model=self._trained(model), only=only,
                        workers=workers, progress=progress)

    def _trained(self, name: str | None):
        """The model ``name`` (NotFittedError when it does not exist); for ``None`` the newest, or None when no
        model is trained yet (the stages that can use one work without)."""
        from .learn.artifacts import list_models

        if name is None and not any(m["status"] == "ready" for m in list_models(self.root)):
            return None  # nothing to load (and nothing of the learn stack to import)
        return self.model(name)

    def findings(self, kind: str | None = None, *, issues_only: bool = False, run_id: int | None = None,
                 limit: int | None = None) -> list:
        """Findings of the latest discover run that has ``kind`` (or of ``run_id``), worst (lowest score) first."""
        from .discover import KINDS, load_findings

        if kind is not None and kind not in KINDS:
            stored = {row[0] for row in self.catalog.query("SELECT DISTINCT kind FROM findings")}
            if kind not in stored:
                raise InputError(f"unknown finding kind {kind!r}; choose one of: {', '.join(sorted(set(KINDS) | stored))}")
        return load_findings(self.catalog, kind=kind, run_id=run_id, issues_only=issues_only, limit=limit)

    # -- stage 5b: explore (clusters, 2-D map, association rules, similarity search, report) ---------------
    # pixelmine.discover.explore, pixelmine.search, pixelmine.report
    @needs_extras("Clustering")
    def discover_clusters(self, *, backbone: str = DEFAULT_BACKBONE, map_method: str = "umap", **options):
        """Cluster the images in feature space (automatic number of clusters), store ``cluster`` findings,
        ``reports/clusters.json`` and the 2-D map ``index/map2d.npz``. Options are fields of
        :class:`pixelmine.discover.clusters.ClusterConfig` (``method="hdbscan"``, ``k_max=30``, ...).
        Returns a :class:`~pixelmine.discover.clusters.ClusterResult`."""
        from .discover.explore import run_clusters

        check_stage("clusters")
        return run_clusters(self.catalog, self.root, self.features(backbone), map_method=map_method, **options)

    def clusters(self) -> dict:
        """The stored cluster descriptions (method, k, silhouette, clusters with labels, tags, purity)."""
        from .discover.explore import load_clusters
        from .errors import NotFittedError

        data = load_clusters(self.root)
        if data is None:
            raise NotFittedError(f"no clusters in workspace {str(self.root)!r} yet; run: pixelmine clusters")
        return data

    def map2d(self):
        """The 2-D map (``ids``, ``xy`` (N, 2), ``method``) of the last clustering."""
        from .discover.explore import load_map

        return load_map(self.root)

    @needs_extras("Association rules")
    def rules(self, *, backbone: str = DEFAULT_BACKBONE, model: str | None = None, refresh: bool = True,
              **options) -> dict:
        """Association rules over labels, predictions, tags, clusters, findings and metadata (FP-growth).
        ``refresh=False`` returns the stored ``reports/rules.json`` without mining again. Options are fields
        of :class:`pixelmine.discover.rules.RulesConfig` (``min_support``, ``min_confidence``, ``min_lift``)."""
        from .discover.explore import load_rules, run_rules
        from .errors import NotFittedError

        if not refresh and not options:
            stored = load_rules(self.root)
            if stored is not None:
                return stored
        check_stage("rules")
        try:
            features = self.features(backbone)
        except NotFittedError:  # rules over labels, findings and metadata still work without features
            features = None
        run_rules(self.catalog, self.root, features=features, model=self._trained(model), **options)
        return load_rules(self.root)

    @needs_extras("Similarity search")
    def similar(self, image: str, k: int = 10, *, backbone: str = DEFAULT_BACKBONE):
        """The ``k`` images most similar to ``image`` (an image id or unique prefix, a catalogued path, or a
        new image file), most similar first: a list of :class:`pixelmine.search.Neighbour`."""
        from .search import similar

        check_stage("similar")
        return similar(self.catalog, self.root, self.features(backbone), image, k)[1]

    @needs_extras("Text search")
    def search_text(self, query: str, k: int = 20, *, backbone: str | None = None):
        """The ``k`` images that best match the words ``query``, best first (a
        :class:`pixelmine.search.text.TextSearch`): through a ``clip:`` backbone's features when cached (or
        named), else offline through the ImageNet concepts of the default backbone's tags."""
        from .search.text import search_text

        return search_text(self.catalog, self.root, query, k, backbone=backbone)

    @needs_extras("Zero-shot labels")
    def zero_shot(self, labels=None, *, from_labels: bool = False, backbone: str | None = None, templates=None,
                  as_labels: bool = False, min_probability: float = 0.5):
        """A probability per label for every image, from the label names alone (``labels``: "cat,dog,car" or a
        list; ``from_labels``: the labels the images carry), measured against existing labels; ``as_labels``
        records confident predictions of unlabelled images as corrections. A
        :class:`pixelmine.learn.zero_shot.ZeroShotResult`, stored as a run."""
        from .learn.zero_shot import zero_shot

        return zero_shot(self.catalog, self.root, labels, from_labels=from_labels, backbone=backbone,
                         templates=templates, as_labels=as_labels, min_probability=min_probability)

    # -- stage 6: watch (pixelmine.watch) -------------------------------------------------------------
    @needs_extras("Watching folders")
    def watch(self, dirs, *, model: str | None = None, backbone: str | None = None, mode: str = "auto",
              webhook: str | None = None, labels_from_folders: bool = False, batch_max: int = 32,
              queue_max: int = 256, settle_s: float = 1.0, stop=None, max_events: int | None = None,
              timeout_s: float | None = None, **options):
        """Watch folders and yield one event dict per arrival, as it is stored in the catalog.

        On start a scan catalogues what arrived (or left) while nobody watched; then each complete new or
        changed image file is validated and catalogued as ``ingest`` would, embedded by a resident session,
        predicted by ``model`` (default: the newest, if any), checked for near-duplicates and novelty, and
        emitted: ``{"type": "image", "path", "image_id", "status", "label", "probability", "uncertain",
        "reason", "novelty", "near_duplicate", "flags", ...}``; deleted files give ``missing`` events, drift
        reports ``drift`` / ``alarm``. ``mode``: "auto", "inotify" or "polling" (``settle_s`` seconds of
        unchanged size and mtime). Stops when ``stop`` (a threading.Event) is set, after ``max_events``,
        after ``timeout_s`` seconds, or when the generator is closed. See :mod:`pixelmine.watch`.
        """
        from .watch.pipeline import watch

        return watch(self, dirs, model=model, backbone=backbone, mode=mode, webhook=webhook,
                     labels_from_folders=labels_from_folders, batch_max=batch_max, queue_max=queue_max,
                     settle_s=settle_s, stop=stop, max_events=max_events, timeout_s=timeout_s, **options)

    @needs_extras("The report")
    def report(self, output=None, *, model: str | None = None, anonymise_paths: bool = False) -> "Path":
        """Write the self-contained HTML report (default ``reports/report.html``); returns its path."""
        from .report import write_report

        return write_report(self.catalog, self.root, output, model=self._trained(model), models=self.models(),
                            anonymise_paths=anonymise_paths)



def open_workspace(path: str | os.PathLike | None = None) -> Workspace:
    """Open (and create if needed) a workspace. ``None`` uses $PIXELMINE_WORKSPACE or ./pixelmine-workspace."""
    return Workspace(path)
