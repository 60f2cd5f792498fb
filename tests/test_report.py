"""The report: one self-contained file, every section present, missing stages named, user text escaped."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner
from learnkit import BACKBONE, labelled_workspace

from pixelmine.cli import main
from pixelmine.discover.findings import Finding, store_findings

HOSTILE = "<script>alert(1)"  # a label straight from a folder name
SECTIONS = ("overview", "duplicates", "clusters", "model", "rules", "thresholds")


def external_references(text: str) -> list[str]:
    """src/href values that would fetch something: anything but data: URIs and in-page anchors."""
    values = re.findall(r"""(?:src|href)\s*=\s*["']?([^"' >]+)""", text, flags=re.I)
    return [v for v in values if not (v.startswith("data:") or v.startswith("#"))]


def fake_model(ws, classes: list[str]) -> None:
    """A models/<name>/ folder as the learn stage writes it (model.json + metrics.json)."""
    directory = ws.root / "models" / "probe1"
    directory.mkdir(parents=True)
    test = {"n": 30, "classes": classes, "metrics": {"accuracy": 0.9, "balanced_accuracy": 0.88, "macro_f1": 0.87},
            "intervals": {"accuracy": [0.8, 0.97]},
            "per_class": [{"class": c, "precision": 0.9, "recall": 0.9, "f1": 0.9, "support": 10} for c in classes],
            "confusion": [[9, 1, 0], [1, 8, 1], [0, 0, 10]], "reliability": [], "mistakes": [], "n_bootstrap": 100}
    (directory / "metrics.json").write_text(json.dumps({"test": test, "oof": {"metrics": {"accuracy": 0.85,
                                                                                          "macro_f1": 0.84}}}))
    (directory / "model.json").write_text(json.dumps({
        "format_version": 1, "name": "probe1", "kind": "probe", "head": "logreg", "backbone": BACKBONE,
        "classes": classes, "test_metrics": {"accuracy": 0.9, "macro_f1": 0.87}, "n_test": 30,
        "uncertainty": {"min_confidence": 0.5, "min_margin": 0.0},
        "created_at": "2026-01-01T00:00:00+00:00", "run_id": 1}))


def populated(tmp_path):
    ws, ids, labels, _ = labelled_workspace(tmp_path, {"cat": 12, "dog": 12, HOSTILE: 12}, separation=8.0)
    with ws.catalog.run("discover", {"finders": ["outliers", "duplicates"], "outlier_threshold": 0.1}) as run:
        store_findings(ws.catalog, run.id, [
            Finding(ids[0], "outlier", 0.05, True, {"reason": f"far from {HOSTILE}", "distance": 1.5,
                                                    "threshold": "distance above 0.9 & more"}),
            Finding(ids[1], "outlier", 0.7, False, {}),
            Finding(ids[2], "near_duplicate", 0.1, True, {"group": 1, "group_size": 2, "keeper": ids[3],
                                                          "is_keeper": False}),
            Finding(ids[3], "near_duplicate", 0.9, False, {"group": 1, "group_size": 2, "keeper": ids[3],
                                                           "is_keeper": True}),
        ])
    ws.discover_clusters(backbone=BACKBONE, map_method="pca", k_max=6, pca_dims=8)
    ws.rules(backbone=BACKBONE, min_support=0.05)
    fake_model(ws, sorted(set(labels)))
    return ws, ids


def test_report_is_one_offline_file_with_every_section(tmp_path):
    ws, ids = populated(tmp_path)
    path = ws.report()
    assert path == ws.root / "reports" / "report.html"
    text = path.read_text(encoding="utf-8")
    assert external_references(text) == []
    assert "http" not in " ".join(re.findall(r"""(?:src|href)\s*=\s*["'][^"']*["']""", text))
    assert "<link" not in text and "<script" not in text and "@import" not in text
    for anchor in SECTIONS:
        assert f'id="{anchor}"' in text
    assert 'id="kind-outlier"' in text
    assert "<b>Flagged when</b> distance above 0.9 &amp; more." in text  # the finder's threshold, explained
    # the hostile label is shown, escaped, never as markup
    assert "&lt;script&gt;alert(1)" in text
    assert "far from &lt;script&gt;alert(1)" in text
    # thumbnails and plots are embedded
    assert len(re.findall(r'src="data:image/jpeg;base64,', text)) >= 3
    assert len(re.findall(r'src="data:image/png;base64,', text)) >= 2  # map by cluster, map by label
    # the model's numbers and the confusion matrix come from metrics.json
    assert "probe1" in text and "0.900" in text and 'class="cm"' in text
    assert "No trained model yet" not in text and "No clusters yet" not in text


def test_report_names_the_command_for_each_missing_stage(tmp_path):
    ws, _, _, _ = labelled_workspace(tmp_path, {"a": 3, "b": 3})
    text = ws.report(tmp_path / "out" / "r.html").read_text()
    for command in ("pixelmine discover", "pixelmine clusters", "pixelmine train", "pixelmine rules"):
        assert f"<code>{command}</code>" in text
    assert external_references(text) == []


def test_cli_report_similar_clusters_rules(tmp_path):
    ws, ids = populated(tmp_path)
    runner = CliRunner()
    target = tmp_path / "audit.html"
    result = runner.invoke(main, ["report", "--workspace", str(ws.root), "--output", str(target),
                                  "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["report"] == str(target) and target.stat().st_size > 1000
    result = runner.invoke(main, ["similar", ids[0][:12], "-k", "3", "--backbone", BACKBONE,
                                  "--workspace", str(ws.root), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["image_id"] == ids[0]
    result = runner.invoke(main, ["similar", "zzzz", "--backbone", BACKBONE, "--workspace", str(ws.root)])
    assert result.exit_code == 1 and "neither a file nor a catalogued image id" in result.output
    result = runner.invoke(main, ["clusters", "--show", "--workspace", str(ws.root)])
    assert result.exit_code == 0 and "purity" in result.output
    result = runner.invoke(main, ["rules", "--show", "--workspace", str(ws.root), "--json"])
    assert result.exit_code == 0 and "rules" in json.loads(result.output)
    for command in ("report", "similar", "clusters", "rules"):
        help_text = runner.invoke(main, [command, "--help"]).output
        assert "Example" in help_text and "--workspace" in help_text and "--json" in help_text


def test_the_report_shows_how_an_automatic_model_was_chosen_and_what_cleaning_did(tmp_path):
    from learnkit import FAST

    ws, *_ = labelled_workspace(tmp_path, {"cat": 15, "dog": 15}, separation=3.0)
    model = ws.train(name="auto", clean=True, progress=False, **FAST)
    text = ws.report().read_text()
    assert "How this model was chosen" in text and "Trained on cleaned data" in text
    chosen = model.metrics["selection"]["chosen"]
    assert f"{chosen['head']} on <code>{chosen['features']}</code>" in text
    assert "logreg on tiny" in text  # the leaderboard's rows
