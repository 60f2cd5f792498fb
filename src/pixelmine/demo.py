"""The embedded demo: 2,000 real textile photos (conformal-clip-data) in three class folders
(nominal / local / global defects), run through every stage pixelmine has."""

from __future__ import annotations

from pathlib import Path

from .errors import MissingDependencyError

DEMO_PACKAGE = "conformal-clip-data"
_SUBDIR = ("data", "textile_images", "simulated")


def demo_data_path() -> Path:
    """The folder holding the demo's class subfolders."""
    try:
        import conformal_clip_data
    except ImportError as exc:
        raise MissingDependencyError(DEMO_PACKAGE, "The demo data set") from exc
    root = Path(conformal_clip_data.__file__).parent.joinpath(*_SUBDIR)
    if not root.is_dir():
        raise MissingDependencyError(DEMO_PACKAGE, f"The demo data set (expected {root})",
                                     install=f"pip install --force-reinstall {DEMO_PACKAGE}")
    return root


def run_demo(workspace, *, progress="auto") -> dict:
    """Run the pipeline on the demo data; returns each stage's result keyed by stage name."""
    results: dict = {"data": str(demo_data_path())}
    results["ingest"] = workspace.ingest(results["data"], labels_from_folders=True, progress=progress)
    results["status"] = workspace.status()
    # stage 2: features + ImageNet tags with the default backbone (cached: a re-run computes nothing)
    results["extract"] = workspace.extract(progress=progress)
    # stages 3-4: a classifier measured on a held-out test split; discovery reads its out-of-fold probabilities
    results["model"] = demo_model(workspace, progress=progress)
    # stage 5a: discovery reads the features and the model's out-of-fold probabilities written above
    from .errors import NotFittedError

    try:
        results["discover"] = workspace.discover(progress=progress)
    except NotFittedError as exc:  # an earlier stage did not run: say which command would
        results["discover_skipped"] = str(exc)
    results.update(_explore(workspace, results.get("discover")))
    return results


# The demo's classifier is what `pixelmine train` gives by default: automatic selection over backbones,
# framings and heads. On these textile photos it finds that the whole 250 px frame beats the standard crop
# (the defects are a few pixels of noise that the crop's resampling blurs): about 0.85 on the test split
# against 0.76 for a logistic probe on the standard crop (benchmarks/README.md, "Auto").
DEMO_MODEL = {"name": "demo-classifier"}


def demo_model(workspace, *, progress="auto"):
    """Train the demo's classifier, or reuse it when the images, labels and features are unchanged."""
    from .errors import NotFittedError

    try:
        model = workspace.model(DEMO_MODEL["name"])
        if model.is_current():
            return model
    except NotFittedError:
        pass
    return workspace.train(progress=progress, **DEMO_MODEL)


def _explore(workspace, discovered=None) -> dict:
    """Stage 5b: clusters and the map (unless discover made them), association rules, and the HTML report,
    which is written whatever ran before it (a missing stage is a section naming its command)."""
    from .discover.findings import latest_discover_run
    from .errors import NotFittedError

    results: dict = {}
    try:
        ran = getattr(discovered, "run_id", None)
        if ran is None or latest_discover_run(workspace.catalog, "cluster") != ran:
            workspace.discover_clusters()
        results["clusters"] = workspace.clusters()
    except NotFittedError as exc:
        results["clusters_skipped"] = str(exc)
    try:
        results["rules"] = workspace.rules()
    except NotFittedError as exc:
        results["rules_skipped"] = str(exc)
    results["report"] = str(workspace.report())
    return results
