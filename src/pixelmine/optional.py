"""One guard for optional dependencies: every import of a package an extra provides goes through it, so a
base install (``pip install pixelmine``, catalog + ingest only) answers ``pip install 'pixelmine[ml]'``,
never a raw ``ModuleNotFoundError``.

    torch = require("torch", "Fine-tuning")            # the module, or MissingDependencyError naming the extra
    with needs_extras("pixelmine extract"):             # any optional import inside becomes the same error
        ...
    @needs_extras("Training")                           # ... or inside a function
"""

from __future__ import annotations

import contextlib
import importlib
from types import ModuleType

from .errors import MissingDependencyError

# import name -> (PyPI distribution, pixelmine extra that installs it)
OPTIONAL: dict[str, tuple[str, str]] = {
    "torch": ("torch", "ml"), "torchvision": ("torchvision", "ml"), "timm": ("timm", "ml"),
    "onnx": ("onnx", "ml"), "onnxscript": ("onnxscript", "ml"), "onnxruntime": ("onnxruntime", "ml"),
    "sklearn": ("scikit-learn", "ml"), "scipy": ("scipy", "ml"), "joblib": ("joblib", "ml"),
    "umap": ("umap-learn", "ml"), "mlxtend": ("mlxtend", "ml"), "faiss": ("faiss-cpu", "ml"),
    "cleanlab": ("cleanlab", "ml"), "matplotlib": ("matplotlib", "ml"), "safetensors": ("safetensors", "ml"),
    "huggingface_hub": ("huggingface-hub", "ml"), "pandas": ("pandas", "ml"),
    "torch_pruning": ("torch-pruning", "ml"),
    "watchdog": ("watchdog", "ml"),
    "fastapi": ("fastapi", "serve"), "uvicorn": ("uvicorn", "serve"), "multipart": ("python-multipart", "serve"),
    "python_multipart": ("python-multipart", "serve"), "starlette": ("fastapi", "serve"),
    "pydantic": ("fastapi", "serve"), "swagger_ui_bundle": ("swagger-ui-bundle", "serve"),
    "conformal_clip_data": ("conformal-clip-data", "demo"),
    "open_clip": ("open_clip_torch", "clip"), "tokenizers": ("tokenizers", "ml"),
}


def install_command(module: str) -> str:
    package, extra = OPTIONAL[module.partition(".")[0]]
    return f"pip install 'pixelmine[{extra}]'  (or just: pip install {package})"


def missing(module: str, feature: str) -> MissingDependencyError:
    """The error for optional ``module`` missing when ``feature`` needs it."""
    top = module.partition(".")[0]
    package = OPTIONAL[top][0] if top in OPTIONAL else top
    return MissingDependencyError(package, feature, install_command(top) if top in OPTIONAL else None)


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` (an optional dependency) or raise MissingDependencyError naming its extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing(getattr(exc, "name", None) or module, feature) from exc


# what each stage imports as it runs, checked before it starts (and before its inputs are loaded)
STAGE_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "discover": ("sklearn", "faiss", "cleanlab"),
    "clusters": ("sklearn",),
    "rules": ("mlxtend", "pandas"),
    "similar": ("faiss",),
}


def check_stage(stage: str) -> None:
    """Fail early, before any work, when the optional packages of ``stage`` are not installed."""
    import importlib.util

    for module in STAGE_REQUIREMENTS[stage]:
        if importlib.util.find_spec(module) is None:
            raise missing(module, f"pixelmine {stage}")


def as_missing_dependency(exc: ImportError, feature: str) -> MissingDependencyError | None:
    """MissingDependencyError for an ImportError of an optional package; None for anything else (a real bug)."""
    if isinstance(exc, MissingDependencyError):
        return exc
    name = (getattr(exc, "name", None) or "").partition(".")[0]
    return missing(name, feature) if name in OPTIONAL else None


class needs_extras(contextlib.ContextDecorator):  # noqa: N801 - used like contextlib's lower-case helpers
    """Turn an ImportError of an optional package inside the block (or the decorated function) into
    MissingDependencyError naming the extra; any other ImportError (a real bug) passes unchanged."""

    def __init__(self, feature: str):
        self.feature = feature

    def __enter__(self) -> "needs_extras":
        return self

    def __exit__(self, kind, exc, traceback) -> bool:
        if exc is None or not isinstance(exc, ImportError) or isinstance(exc, MissingDependencyError):
            return False
        translated = as_missing_dependency(exc, self.feature)
        if translated is None:
            return False
        raise translated from exc
