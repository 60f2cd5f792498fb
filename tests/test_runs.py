"""Every run is recorded one way (catalog.run): completed, failed or interrupted by the same rules, with
what it read (inputs) and what it counted, whichever stage ran."""

from __future__ import annotations

import pytest
from learnkit import FAST, labelled_workspace

import pixelmine
from pixelmine.catalog import Catalog
from pixelmine.runs import image_set


@pytest.fixture
def catalog(tmp_path):
    with Catalog(tmp_path / "catalog.sqlite") as opened:
        yield opened


def test_a_completed_run_stores_config_inputs_counts_and_metrics(catalog):
    with catalog.run("demo", {"k": 3}, inputs={"images": image_set(["b", "a"])}) as run:
        run.counts["done"] = 2
        run.metrics["elapsed_s"] = 0.5
        run.inputs["fingerprint"] = "f" * 64
    (row,) = catalog.runs("demo")
    assert row["status"] == "completed" and row["error"] is None and row["id"] == run.id
    assert row["config"] == {"k": 3} and row["counts"] == {"done": 2} and row["metrics"] == {"elapsed_s": 0.5}
    assert row["inputs"] == {"images": image_set(["a", "b"]), "fingerprint": "f" * 64}
    assert image_set(["a", "b"]) == image_set(["b", "a", "a"]) and image_set(["a"])["count"] == 1


@pytest.mark.parametrize("exc, status, error", [
    (KeyboardInterrupt(), "interrupted", "interrupted"),
    (SystemExit(3), "interrupted", "exit 3"),
    (ValueError("bad value"), "failed", "ValueError: bad value"),
    (MemoryError(), "failed", "MemoryError: "),
])
def test_how_a_run_ends_decides_its_status(catalog, exc, status, error):
    with pytest.raises(type(exc)):
        with catalog.run("demo", {}) as run:
            run.counts["partial"] = 1
            raise exc
    (row,) = catalog.runs("demo")
    assert (row["status"], row["error"], row["counts"]) == (status, error, {"partial": 1})


def test_a_killed_run_is_marked_interrupted_by_the_next(catalog):
    with catalog.transaction() as conn:  # what a SIGKILLed process leaves: running, with a dead pid
        conn.execute("INSERT INTO runs(kind, config, version, status, pid, host, started_at) "
                     "VALUES ('extract', '{}', '0', 'running', 999999999, ?, '2026-01-01')",
                     (__import__("socket").gethostname(),))
    with catalog.run("demo", {}):
        pass
    assert {r["kind"]: r["status"] for r in catalog.runs()} == {"extract": "interrupted", "demo": "completed"}


def test_every_stage_records_its_inputs(tmp_path):
    ws, ids, labels, _ = labelled_workspace(tmp_path, {"a": 12, "b": 12})
    ws.split(backbone="tiny")
    ws.train("logreg", progress=False, **FAST)
    runs = {r["kind"]: r for r in ws.runs()}
    assert set(runs) >= {"ingest", "split", "train"}
    assert runs["split"]["status"] == "completed" and runs["split"]["inputs"]["images"] == image_set(ids)
    assert sum(runs["split"]["counts"].values()) == 24
    assert runs["train"]["inputs"] == {"fingerprint": ws.features("tiny").fingerprint, "images": image_set(ids)}
    assert runs["ingest"]["inputs"]["sources"] and runs["ingest"]["counts"]["files_seen"] == 24


def test_an_interrupted_stage_is_interrupted_not_failed(tmp_path, monkeypatch):
    ws, *_ = labelled_workspace(tmp_path, {"a": 12, "b": 12})

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("pixelmine.learn.probe.train_probe", interrupt)
    with pytest.raises(KeyboardInterrupt):
        ws.train("logreg", progress=False, **FAST)
    assert ws.runs("train")[0]["status"] == "interrupted"
    assert isinstance(ws, pixelmine.Workspace)
