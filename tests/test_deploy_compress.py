"""pixelmine compress: pruned + distilled networks, a refitted head, four measured files and their table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from learnkit import tinted_workspace

from pixelmine.errors import InputError

pytest.importorskip("torch_pruning")

FAST = {"search_budget_s": 2.0, "bootstrap": 50, "cv_folds": 3}
TINTS = {"red": (16, (200, 60, 50)), "green": (16, (60, 190, 70)), "blue": (16, (50, 70, 200))}


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    ws = tinted_workspace(tmp_path_factory.mktemp("compress"), TINTS)
    ws.extract("tiny_test", progress=False)
    ws.train("logreg", backbone="tiny_test", name="tiny", progress=False, **FAST)
    model = ws.model("tiny")
    result = model.compress(sparsity=0.5, budget_s=4.0)
    yield ws, model, result
    ws.close()


def test_the_table_has_the_four_files_measured(compressed):
    _, model, result = compressed
    assert [row["variant"] for row in result.rows] == ["original fp32", "original int8", "pruned fp32", "pruned int8"]
    by_variant = {row["variant"]: row for row in result.rows}
    assert by_variant["pruned fp32"]["params_m"] < by_variant["original fp32"]["params_m"]
    assert by_variant["pruned fp32"]["macs_m"] < by_variant["original fp32"]["macs_m"]
    n = len(model.test_rows())
    for row in result.rows:
        assert row["n"] == n and 0 <= row["accuracy"] <= 1 and row["latency_ms"] > 0 and row["throughput"] > 0
        assert Path(row["path"]).is_file()
    assert by_variant["original fp32"]["agreement"] == 1.0 and by_variant["original fp32"]["cosine"] == 1.0
    table = result.format_table()
    assert table.count("\n") == 5 and "pruned int8" in table
    assert json.loads((Path(result.directory) / "compress.json").read_text())["rows"][2]["variant"] == "pruned fp32"
    assert "## Compression (sparsity 0.50)" in model.card


def test_the_pruned_file_is_a_working_export(compressed):
    from pixelmine.deploy.export import ExportedSession, decode_for_export, read_sidecar

    _, model, result = compressed
    graph, sidecar = read_sidecar(Path(result.rows[2]["path"]).parent)
    assert sidecar["compressed"]["sparsity"] == 0.5 and sidecar["classes"] == model.classes
    probs = ExportedSession(graph).probabilities(decode_for_export(model.test_rows()[0]["path"], 72))
    assert probs.shape == (len(model.classes),) and abs(probs.sum() - 1) < 1e-4


def test_distillation_brought_the_student_closer_and_resumes_without_redoing_work(compressed):
    _, model, result = compressed
    record = result.distillation[0]
    assert record["loss_last"] < record["loss_first"]
    again = model.compress(sparsity=0.5, budget_s=4.0)
    assert again.distillation[0]["stopped_by"] == "finished earlier"
    assert again.distillation[0]["steps"] == record["steps"]


def test_bad_sparsity_and_budget_are_refused(compressed):
    _, model, _ = compressed
    for sparsity in (0.0, 0.95, "x"):
        with pytest.raises(InputError, match="sparsity"):
            model.compress(sparsity=sparsity)
    with pytest.raises(InputError, match="budget"):
        model.compress(budget_s=0)


def test_the_report_shows_the_compression_table(compressed):
    ws, model, _ = compressed
    html = Path(ws.report(model=model.name)).read_text()
    assert "Deploying small" in html and "pruned int8" in html and "Sparsity 0.50" in html
