"""The package surface: light import, a curated API, one error hierarchy."""

import subprocess
import sys

import pytest

import pixelmine
from pixelmine import errors


def test_import_is_light():
    code = ("import sys, pixelmine; heavy = [m for m in ('torch', 'torchvision', 'onnxruntime', 'sklearn', 'fastapi', "
            "'click', 'pyarrow', 'timm') if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_errors_subclass_the_matching_builtins():
    assert issubclass(errors.InputError, ValueError)
    assert issubclass(errors.SourceNotFoundError, FileNotFoundError)
    assert issubclass(errors.MissingDependencyError, ImportError)
    assert issubclass(errors.NotFittedError, ValueError)
    for name in ("InputError", "WorkspaceError", "NotFittedError", "MissingDependencyError"):
        assert issubclass(getattr(errors, name), errors.PixelmineError)


def test_missing_dependency_message_names_the_install_command():
    with pytest.raises(ImportError, match=r"pip install foo\[bar\]"):
        raise errors.MissingDependencyError("foo", "Frobbing", install="pip install foo[bar]")


def test_public_api():
    for name in ("open_workspace", "ingest", "Workspace", "__version__"):
        assert name in pixelmine.__all__


def test_newer_catalog_schema_is_refused(tmp_path):
    ws = pixelmine.open_workspace(tmp_path)
    ws.catalog.query("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    ws.close()
    with pytest.raises(errors.SchemaVersionError, match="upgrade pixelmine"):
        pixelmine.open_workspace(tmp_path).status()
