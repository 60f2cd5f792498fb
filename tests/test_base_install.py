"""A base install (``pip install pixelmine``, without the ``ml`` extra) ingests, and every stage that needs
the extra says which pip command installs it, never a raw ModuleNotFoundError.

The extras are hidden from a fresh interpreter by an import hook that refuses them, the way a venv without
them would: the same ModuleNotFoundError, raised at the same imports."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from imagefactory import photo, save

from pixelmine.optional import OPTIONAL

HIDE_EXTRAS = textwrap.dedent("""
    import sys
    from importlib.abc import MetaPathFinder

    HIDDEN = {hidden!r}

    class WithoutExtras(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, WithoutExtras())
    from pixelmine.cli import main
    main(sys.argv[1:], prog_name="pixelmine")
""")

ML = sorted(name for name, (_, extra) in OPTIONAL.items() if extra in ("ml", "serve"))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("base")
    for label in ("a", "b"):
        for k in range(3):
            save(photo(k + (10 if label == "b" else 0), (40, 32)), root / "images" / label / f"{k}.jpg")
    script = root / "without_extras.py"
    script.write_text(HIDE_EXTRAS.format(hidden=ML))

    def run(*args, workspace=True):
        where = ["-w", str(root / "ws")] if workspace else []
        return subprocess.run([sys.executable, str(script), *map(str, args), *where],
                              capture_output=True, text=True, timeout=300, cwd=root,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})

    return root, run


def test_ingest_status_backbones_and_report_need_no_extra(base):
    root, run = base
    done = run("ingest", root / "images", "--labels-from-folders", "--json")
    assert done.returncode == 0, done.stderr
    assert '"files_seen": 6' in done.stdout
    assert run("status").returncode == 0
    listed = run("backbones", workspace=False)
    assert listed.returncode == 0 and "mobilenet_v2" in listed.stdout, listed.stderr
    report = run("report")
    assert report.returncode == 0 and (root / "ws" / "reports" / "report.html").stat().st_size > 1000, report.stderr


@pytest.mark.parametrize("command, extra", [
    (["extract"], "ml"), (["train"], "ml"), (["discover"], "ml"), (["clusters"], "ml"), (["rules"], "ml"),
    (["similar", "IMAGE"], "ml"), (["serve", "--port", "0"], "serve"),
])
def test_stages_that_need_an_extra_name_the_pip_command(base, command, extra):
    root, run = base
    run("ingest", root / "images", "--labels-from-folders")
    done = run(*[str(root / "images" / "a" / "0.jpg") if part == "IMAGE" else part for part in command])
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and "ModuleNotFoundError" not in done.stderr, done.stderr
    assert f"pip install 'pixelmine[{extra}]'" in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("Error:")  # one line, after any progress note
