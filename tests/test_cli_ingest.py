"""The CLI as a user runs it: conventions (--workspace, env var, --quiet, --json, -h), exit codes, messages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

import imagefactory as f
from pixelmine.cli import main


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    for i in range(4):
        f.save(f.photo(i), root / ("a" if i % 2 else "b") / f"{i}.jpg")
    f.write(root / "a" / "bad.jpg", b"hello, I am text")
    return root


def run(*args, env=None):
    result = CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)
    return result


def test_ingest_json_is_one_parseable_document(tmp_path, data):
    result = run("ingest", data, "--labels-from-folders", "-w", tmp_path / "ws", "--json")
    assert result.exit_code == 0
    payload = json.loads(result.output)
    assert payload["files_seen"] == 5 and payload["by_status"] == {"ok": 4, "not_an_image": 1}


def test_bad_files_do_not_fail_the_run_and_are_listed_with_reasons(tmp_path, data):
    assert run("ingest", data, "-w", tmp_path / "ws", "-q").exit_code == 0
    listing = run("files", "--problems", "-w", tmp_path / "ws")
    assert listing.exit_code == 0
    (line,) = listing.output.strip().splitlines()
    status, path, reason = line.split("\t")
    assert status == "not_an_image" and path.endswith("bad.jpg") and "text file" in reason
    only = json.loads(run("files", "--status", "not_an_image", "-w", tmp_path / "ws", "--json").output)
    assert [Path_name(r["path"]) for r in only] == ["bad.jpg"]


def Path_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


@pytest.fixture
def mixed(tmp_path):
    """3 JPEGs and an XPM (images), 2 .txt and 1 .bin (not image extensions)."""
    root = tmp_path / "mixed"
    for i in range(3):
        f.save(f.photo(i), root / f"{i}.jpg")
    f.write(root / "pixmap.xpm", f.xpm_bytes())
    f.write(root / "a.txt", b"notes\n")
    f.write(root / "b.txt", b"more notes\n")
    f.write(root / "dump.bin", bytes(range(256)) * 4)
    return root


def test_ingest_says_what_it_skipped_and_how_to_take_it(tmp_path, mixed):
    result = run("ingest", mixed, "-w", tmp_path / "ws", "--workers", 1)
    assert result.exit_code == 0
    assert "4 files" in result.output
    assert "skipped 3 files without an image extension: .txt 2, .bin 1" in result.output
    assert "--include '*.txt' --include '*.bin'" in result.output
    quiet = run("ingest", mixed, "-w", tmp_path / "ws-q", "--workers", 1, "-q").output
    assert "skipped 3 files" in quiet and "--include" not in quiet  # the count is a result, the hint chatter
    payload = json.loads(run("ingest", mixed, "-w", tmp_path / "ws-json", "--workers", 1, "--json").output)
    assert payload["skipped"] == 3 and list(payload["skipped_by_extension"].items()) == [(".txt", 2), (".bin", 1)]
    assert payload["by_status"] == {"ok": 4}
    # Taking the hint: the .bin is ingested, with a status that says it is not an image, and a reason.
    taken = json.loads(run("ingest", mixed, "-w", tmp_path / "ws", "--include", "*.bin", "--json").output)
    assert taken["files_seen"] == 1 and taken["skipped"] == 0 and "ok" not in taken["by_status"]
    (row,) = json.loads(run("files", "--problems", "-w", tmp_path / "ws", "--json").output)
    assert row["path"].endswith("dump.bin") and row["status"] != "ok" and row["error"]


def test_skipped_line_names_a_handful_of_extensions_most_common_first():
    from pixelmine.cli.ingest import render_skipped

    text = render_skipped({".a": 1, ".b": 5, "": 3, ".c": 2, ".d": 2, ".e": 1, ".f": 1})
    first, hint = text.splitlines()
    assert first == ("skipped 15 files without an image extension: .b 5, (no extension) 3, .c 2, .d 2, .a 1 "
                     "and 2 more extensions (--json lists all)")
    assert hint == ("To ingest them too, run the same command with --include '*.b' --include '*.c' "
                    "--include '*.d' --include '*.a' (or --include '*' for every file)")
    assert render_skipped({"": 1}).splitlines()[1].endswith("with --include '*' for every file")


def test_workspace_from_environment_variable(tmp_path, data):
    env = {"PIXELMINE_WORKSPACE": str(tmp_path / "from-env")}
    assert run("ingest", data, "-q", env=env).exit_code == 0
    status = json.loads(run("status", "--json", env=env).output)
    assert status["files"] == 5
    assert (tmp_path / "from-env" / "catalog.sqlite").exists()


def test_status_text_lists_statuses_labels_and_duplicates(tmp_path, data):
    (data / "b" / "copy.jpg").write_bytes((data / "b" / "0.jpg").read_bytes())
    run("ingest", data, "--labels-from-folders", "-w", tmp_path / "ws", "-q")
    text = run("status", "-w", tmp_path / "ws").output
    assert "6 files, 5 unique images" in text
    assert "not_an_image" in text and "exact duplicates: 1 images" in text


def test_missing_source_is_a_clear_error_with_nonzero_exit(tmp_path):
    result = run("ingest", tmp_path / "nowhere", "-w", tmp_path / "ws")
    assert result.exit_code == 1
    assert "does not exist" in result.output and "Traceback" not in result.output


def test_workspace_that_is_a_file_is_a_clear_error(tmp_path, data):
    (tmp_path / "file").write_text("x")
    result = run("status", "-w", tmp_path / "file")
    assert result.exit_code == 2 and "is a file" in result.output
    from pixelmine.errors import WorkspaceError

    with pytest.raises(WorkspaceError, match="not a directory"):
        __import__("pixelmine").open_workspace(tmp_path / "file")


@pytest.mark.parametrize("command", ["ingest", "status", "files", "demo", "show"])
def test_every_command_has_help_with_an_example(command):
    result = run(command, "-h")
    assert result.exit_code == 0
    assert "Example" in result.output and "--workspace" in result.output and "--json" in result.output


def test_console_script_entry_point(tmp_path, data):
    exe = [sys.executable, "-m", "pixelmine.cli"]
    done = subprocess.run([*exe, "ingest", str(data), "-w", str(tmp_path / "ws"), "--json"],
                          capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["files_seen"] == 5
    assert subprocess.run([*exe, "--version"], capture_output=True, text=True).stdout.startswith("pixelmine")
