"""The learn commands as a user runs them: train, models, evaluate, predict, split; --json; clear errors."""

import csv
import json

import pytest
from click.testing import CliRunner
from learnkit import BACKBONE, labelled_workspace

from pixelmine.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    ws, ids, labels, vectors = labelled_workspace(tmp, {"cat": 20, "dog": 20})
    return ws


def test_train_models_evaluate_predict(workspace, tmp_path):
    w = ("-w", workspace.root)
    trained = run("train", "--head", "logreg", "--backbone", BACKBONE, "--search-budget", "2", "--name", "cli-model",
                  "--json", *w)
    assert trained.exit_code == 0, trained.output
    payload = json.loads(trained.output)
    assert payload["model"] == "cli-model" and payload["test"]["metrics"]["accuracy"] == 1.0
    assert set(payload["split"]["counts"]) == {"train", "val", "test"}

    text = run("train", "--head", "knn", "--backbone", BACKBONE, "--search-budget", "1", *w)
    assert text.exit_code == 0 and "test split:" in text.output and "macro_f1" in text.output
    assert "Next: pixelmine predict" in text.output

    listed = json.loads(run("models", "--json", *w).output)
    assert {m["name"] for m in listed} == {"cli-model", "knn-tiny"}
    table = run("models", *w).output
    assert "cli-model" in table and "knn" in table and "accuracy" in table

    evaluated = run("evaluate", "--model", "cli-model", "--bootstrap", "50", *w)
    assert evaluated.exit_code == 0 and "model cli-model, test split:" in evaluated.output

    image = workspace.images()[0]
    out_csv = tmp_path / "pred.csv"
    predicted = run("predict", image["path"], tmp_path / "missing.jpg", "--model", "cli-model", "--top-k", "2",
                    "--output", out_csv, *w)
    assert predicted.exit_code == 0  # a missing file is a row, not a failed run
    assert "2 files: 1 predicted by cli-model" in predicted.output and "1 could not be read" in predicted.output
    rows = list(csv.DictReader(out_csv.open()))
    assert rows[0]["label"] == image["label"] and rows[1]["error"].startswith("file not found")
    records = json.loads(run("predict", image["path"], "--model", "cli-model", "--json", *w).output)
    assert records[0]["label"] == image["label"] and len(records[0]["top_k"]) == 2  # 2 classes


def test_split_command_prints_the_table(workspace):
    result = run("split", "--backbone", BACKBONE, "--seed", "0", "-w", workspace.root)
    assert result.exit_code == 0 and "cat" in result.output and "train" in result.output


def test_errors_are_one_line_with_the_fix(tmp_path):
    ws, *_ = labelled_workspace(tmp_path, {"a": 5})
    result = CliRunner().invoke(main, ["train", "--backbone", BACKBONE, "-w", str(ws.root)])
    assert result.exit_code == 1
    assert "Error: all 5 labelled images" in result.output and "at least 2 classes" in result.output
    missing = CliRunner().invoke(main, ["predict", "x.jpg", "--model", "nope", "-w", str(ws.root)])
    assert missing.exit_code == 1 and "no model named 'nope'" in missing.output


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "models", "split"])
def test_every_learn_command_has_help_with_an_example(command):
    result = run(command, "-h")
    assert result.exit_code == 0 and "Example" in result.output
