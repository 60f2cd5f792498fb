"""``clip:ARCH/PRETRAINED``: a CLIP text-image model through open_clip (the optional extra ``pixelmine[clip]``).

The image tower is a backbone like any other: extraction, the feature cache and the ONNX export treat it
as they treat a CNN. Its features are the projected CLIP image embedding, float32, *not* L2-normalised
(as every pixelmine feature; search normalises). There is no classifier, hence no tags, and no spatial
feature map. The text tower is :func:`clip_text_encoder`: L2-normalised text embeddings in the same space.

    ARCH        an open_clip architecture: open_clip.list_models(), e.g. ViT-B-32
    PRETRAINED  a tag of open_clip.list_pretrained_tags_by_model(ARCH), e.g. laion2b_s34b_b79k;
                or a checkpoint file (anything with '/', '.' or '~': clip:ViT-B-32//data/open_clip_model.safetensors);
                or ``random``: a fixed-seed random initialisation, for tests and wiring checks only

Preprocessing comes from the tag's pretrained config (mean, std, interpolation, resize mode) and the
architecture's image size, not from open_clip's model defaults, which open_clip falls back to silently
for a checkpoint file; every default pixelmine has to use instead is logged. Weights resolve offline
first (the Hugging Face cache, open_clip's URL cache), then, where downloads are allowed, open_clip's
own download. No PyPI package ships CLIP weights, so the error for missing weights says how to fetch them
on a machine with internet and where to put them.

:data:`TINY_ARCH` (``clip:pixelmine-tiny/random``) is a tiny ViT + text transformer, known to open_clip
whenever this module uses it: it builds in milliseconds, for tests.
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, SourceNotFoundError, WeightsNotFoundError
from ..optional import require
from .spec import Backbone, Preprocessing
from .weights import HubModel, LocalCheckpoint, RandomInit, ResolvedWeights, WeightSource, hf_hub_dir, sha256_of

_log = logging.getLogger(__name__)

PREFIX = "clip"
RANDOM = "random"
RANDOM_SEED = 0
TINY_ARCH = "pixelmine-tiny"
# A ViT of one block on 4x4 patches of 32 px and a one-block text transformer, 1.6 M parameters (1.58 M of
# them the token embedding: the full BPE vocabulary, so open_clip's standard tokenizer works unchanged).
TINY_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "head_width": 16, "layers": 1},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
# open_clip's URL downloads land here (open_clip.pretrained.download_pretrained_from_url)
OPEN_CLIP_URL_CACHE = Path("~/.cache/clip")
_HF_DEFAULT_FILE = "open_clip_pytorch_model.bin"  # what open_clip fetches from a repo named without a file
_FEATURE = "The CLIP backbones (clip:ARCH/PRETRAINED)"


def is_clip(name: str) -> bool:
    """True for a ``clip:ARCH/PRETRAINED`` backbone name (a text-image model with a text encoder)."""
    return isinstance(name, str) and name.startswith(PREFIX + ":")


@dataclass(frozen=True)
class ClipBackbone(Backbone):
    """A :class:`Backbone` that also knows its open_clip model; a missing-weights error says how to fetch them."""

    arch: str = ""  # open_clip architecture, e.g. "ViT-B-32"
    pretrained: str = ""  # the tag, "random", or the checkpoint file's absolute path
    quick_gelu: bool = False  # the weights were trained with QuickGELU (OpenAI's); open_clip only warns

    def locate_weights(self, *, allow_download: bool | None = None) -> ResolvedWeights:
        try:
            return super().locate_weights(allow_download=allow_download)
        except WeightsNotFoundError as exc:
            raise self._how_to_fetch(exc) from None

    def resolve_weights(self, *, allow_download: bool | None = None) -> ResolvedWeights:
        try:
            return super().resolve_weights(allow_download=allow_download)
        except WeightsNotFoundError as exc:
            raise self._how_to_fetch(exc) from None

    def _how_to_fetch(self, exc: WeightsNotFoundError) -> WeightsNotFoundError:
        source = self.weights[0] if self.weights else None
        if isinstance(source, OpenClipPretrained):
            fetch = (f"python -c \"import open_clip; open_clip.create_model_and_transforms("
                     f"'{self.arch}', pretrained='{self.pretrained}')\"")
            where = (f"then copy its ~/.cache/huggingface/hub/{source.hf_cache_folder().name} folder into "
                     f"{hf_hub_dir()} here" if source.hf_repo
                     else f"then copy its ~/.cache/clip/{source.url_filename()} to {source.url_cache_path()} here")
            direct = (f"; or download {source.hf_filenames[0]} from https://huggingface.co/{source.hf_repo} and use "
                      f"the backbone {PREFIX}:{self.arch}/PATH_TO_THAT_FILE" if source.hf_repo else "")
            advice = (f"No PyPI package ships CLIP weights. On a machine with internet: pip install 'pixelmine[clip]' "
                      f"and run {fetch}, {where}{direct}.")
        else:
            advice = f"Check the path, or name a tag: {PREFIX}:{self.arch}/TAG (open_clip.list_pretrained_tags_by_model)."
        return WeightsNotFoundError(f"{exc} {advice}", package=None, install=None)


# -- weights --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OpenClipPretrained(WeightSource):
    """The weights of an open_clip pretrained tag: a Hugging Face repository (open_clip's preference) and/or
    a URL, found in the caches open_clip itself downloads to, downloaded by open_clip."""

    arch: str
    tag: str
    hf_repo: str = ""  # e.g. "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    hf_filenames: tuple[str, ...] = ()  # candidates in open_clip's order of preference (safetensors first)
    url: str = ""
    url_sha256: str = ""  # hex prefix open_clip reads from the URL, "" when it names none
    layout: str = "open_clip"

    @property
    def identity(self) -> str:  # type: ignore[override]
        # one name for the tag: the safetensors and .bin files of a repository hold the same tensors
        return f"open_clip:{self.arch}/{self.tag}"

    def hf_cache_folder(self) -> Path:
        return hf_hub_dir() / ("models--" + self.hf_repo.replace("/", "--"))

    def url_filename(self) -> str:
        return self.url.rstrip("/").rpartition("/")[2]

    def url_cache_path(self) -> Path:
        return OPEN_CLIP_URL_CACHE.expanduser() / self.url_filename()

    def cached(self) -> Path | None:
        for filename in self.hf_filenames if self.hf_repo else ():
            found = HubModel(self.hf_repo, filename).cached()
            if found is not None:
                return found
        if self.url:
            path = self.url_cache_path()
            if path.is_file():
                if not self.url_sha256 or sha256_of(path).startswith(self.url_sha256):
                    return path
                _log.warning("ignoring %s: its sha256 does not start with %s; delete it if it is corrupt",
                             path, self.url_sha256)
        return None

    def can_download(self) -> bool:
        return bool(self.hf_repo or self.url)

    def download(self) -> Path | None:
        open_clip = _open_clip()
        _log.info("downloading the open_clip weights %s/%s", self.arch, self.tag)
        found = open_clip.pretrained.download_pretrained(open_clip.get_pretrained_cfg(self.arch, self.tag))
        return Path(found) if found else None

    def searched(self) -> list[str]:
        places = []
        if self.hf_repo:
            places.append(f"Hugging Face cache {self.hf_cache_folder()} ({' or '.join(self.hf_filenames)})")
        if self.url:
            places.append(f"open_clip cache {self.url_cache_path()}")
        return places


def _pretrained_source(arch: str, tag: str, cfg: dict) -> OpenClipPretrained:
    hf_repo, hf_filenames = "", ()
    if cfg.get("hf_hub"):
        # open_clip's convention: "org/repo/" means its default file, "org/repo/file.bin" names one; it tries
        # the safetensors twin of a .bin/.pth file first
        hf_repo, _, filename = cfg["hf_hub"].rstrip().rpartition("/")
        filename = filename or _HF_DEFAULT_FILE
        twin = ("open_clip_model.safetensors" if filename == _HF_DEFAULT_FILE
                else filename.rsplit(".", 1)[0] + ".safetensors" if filename.endswith((".bin", ".pth")) else None)
        hf_filenames = tuple(name for name in (twin, filename) if name)
    url = cfg.get("url") or ""
    return OpenClipPretrained(arch, tag, hf_repo=hf_repo, hf_filenames=hf_filenames, url=url,
                              url_sha256=_url_sha256(url))


def _url_sha256(url: str) -> str:
    """The sha256 prefix open_clip checks a URL download against: the folder of an OpenAI URL, the last
    dash-separated part of a release file's name."""
    if "openaipublic" in url:
        return url.rstrip("/").split("/")[-2]
    if "mlfoundations" in url:
        return url.rpartition("/")[2].rsplit(".", 1)[0].rpartition("-")[2]
    return ""


# -- the spec -------------------------------------------------------------------------------------
def clip_backbone(rest: str, **_context) -> ClipBackbone:
    """The Backbone for ``clip:<rest>``, rest being ``ARCH/PRETRAINED``. Builds nothing, loads no weights."""
    arch, slash, pretrained = rest.partition("/")
    if not arch or not slash or not pretrained:
        raise InputError(f"the backbone '{PREFIX}:{rest}' must be written {PREFIX}:ARCH/PRETRAINED, e.g. "
                         f"{PREFIX}:ViT-B-32/laion2b_s34b_b79k (PRETRAINED: a tag, a checkpoint file, or {RANDOM})")
    open_clip = _open_clip()
    model_cfg = _model_config(open_clip, arch)
    name = f"{PREFIX}:{arch}/"
    if pretrained == RANDOM:
        sources: tuple[WeightSource, ...] = (RandomInit(seed=RANDOM_SEED),)
        preprocess_cfg, origin, quick_gelu = {}, "random initialisation", False
        name += RANDOM
        description = (f"CLIP {arch}, random initialisation (seed {RANDOM_SEED}): for tests and wiring checks "
                       "only, its features mean nothing")
        _log_once(logging.INFO, "%s is randomly initialised: its features and text embeddings mean nothing", name)
    elif _is_path(pretrained):
        path = Path(pretrained).expanduser().resolve()
        if not path.is_file():
            raise SourceNotFoundError(f"the checkpoint file {str(path)!r} of the backbone '{PREFIX}:{rest}' does not "
                                      f"exist; give the path of an open_clip checkpoint (.safetensors, .bin, .pt)")
        sources = (LocalCheckpoint(path, sha256_of(path), layout="open_clip"),)
        preprocess_cfg, origin = _sibling_preprocess_cfg(path)
        quick_gelu = False
        pretrained = str(path)
        name += pretrained
        description = f"CLIP {arch} with the weights of {path.name}"
    else:
        tag = pretrained.lower().replace("-", "_")  # open_clip's own normalisation of tags
        pretrained_cfg = open_clip.get_pretrained_cfg(arch, tag)
        if not pretrained_cfg:
            raise InputError(_unknown_tag(open_clip, arch, pretrained))
        sources = (_pretrained_source(arch, tag, pretrained_cfg),)
        preprocess_cfg, origin = pretrained_cfg, f"the pretrained config of {arch}/{tag}"
        quick_gelu = bool(pretrained_cfg.get("quick_gelu")) and not model_cfg.get("quick_gelu")
        if quick_gelu:
            _log_once(logging.INFO, "%s/%s was trained with QuickGELU; building %s with it", arch, tag, arch)
        pretrained = tag
        name += tag
        description = f"CLIP {arch} {tag} (open_clip; text-image embeddings, no tags)"
    return ClipBackbone(
        name=name, description=description, builder=_build_image_tower, weights=sources,
        preprocessing=clip_preprocessing(name, preprocess_cfg, image_size=_image_size(arch, model_cfg), origin=origin,
                                         defaults_expected=pretrained == RANDOM),
        feature_dim=int(model_cfg["embed_dim"]), num_classes=0, labels=None, source="open_clip",
        arch=arch, pretrained=pretrained, quick_gelu=quick_gelu)


def clip_preprocessing(name: str, cfg: dict, *, image_size: int, origin: str, defaults_expected: bool = False
                       ) -> Preprocessing:
    """pixelmine's Preprocessing for an open_clip preprocess config (``mean``, ``std``, ``interpolation``,
    ``resize_mode``) and the architecture's ``image_size``. A field the config lacks takes open_clip's default,
    and the log says so: a warning, unless defaults are what ``defaults_expected`` (random weights) asks for."""
    from open_clip.transform import PreprocessCfg

    defaults = PreprocessCfg()
    values, filled = {}, []
    for field in ("mean", "std", "interpolation", "resize_mode"):
        value = cfg.get(field)
        if value is None:
            value = getattr(defaults, field)
            filled.append(f"{field}={value!r}")
        values[field] = value
    if filled:
        _log_once(logging.INFO if defaults_expected else logging.WARNING,
                  "%s: %s sets no %s; using open_clip's defaults: %s", name, origin,
                  "preprocessing" if len(filled) == 4 else "/".join(f.partition("=")[0] for f in filled),
                  ", ".join(filled))
    interpolation = values["interpolation"]
    if interpolation not in ("bilinear", "bicubic"):
        _log_once(logging.WARNING, "%s asks for %r interpolation; pixelmine resizes with bicubic instead",
                  name, interpolation)
        interpolation = "bicubic"
    if values["resize_mode"] != "shortest":
        # pixelmine's decoder only resizes the shorter side and centre-crops; square images are unaffected
        _log_once(logging.WARNING, "%s was trained with resize mode %r; pixelmine resizes the shorter side to %d px "
                  "and centre-crops instead, so non-square images are framed differently", name,
                  values["resize_mode"], image_size)
    return Preprocessing(input_size=image_size, resize=image_size, mean=tuple(float(v) for v in values["mean"]),
                         std=tuple(float(v) for v in values["std"]), interpolation=interpolation)


def _model_config(open_clip, arch: str) -> dict:
    cfg = open_clip.get_model_config(arch) if arch in open_clip.list_models() else None
    if cfg is None:
        near = difflib.get_close_matches(arch, open_clip.list_models(), n=5, cutoff=0.5)
        raise InputError(f"open_clip has no architecture {arch!r} (backbone '{PREFIX}:{arch}/...'); "
                         + (f"did you mean: {', '.join(near)}? " if near else "")
                         + "list them with: python -c \"import open_clip; print(open_clip.list_models())\"")
    return cfg


def _unknown_tag(open_clip, arch: str, tag: str) -> str:
    tags = open_clip.list_pretrained_tags_by_model(arch)
    near = difflib.get_close_matches(tag.lower().replace("-", "_"), tags, n=5, cutoff=0.4)
    choices = (f"did you mean: {', '.join(near)}? its tags: {', '.join(tags)}" if near
               else f"its tags: {', '.join(tags)}" if tags else "it has no pretrained tags in open_clip")
    return (f"open_clip has no pretrained weights {tag!r} for {arch} (backbone '{PREFIX}:{arch}/{tag}'); {choices}; "
            f"or give a checkpoint file ({PREFIX}:{arch}//path/to/open_clip_model.safetensors) or {PREFIX}:{arch}/{RANDOM}")


def _image_size(arch: str, model_cfg: dict) -> int:
    size = model_cfg["vision_cfg"].get("image_size")
    if size is None:
        size = 224  # CLIPVisionCfg's default, what open_clip builds such a config with
        _log_once(logging.WARNING, "the open_clip config of %s sets no image_size; using open_clip's default 224", arch)
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise InputError(f"the CLIP architecture {arch} takes {size[0]}x{size[1]} images; pixelmine feeds "
                             "backbones square crops only: choose a square architecture")
        size = size[0]
    return int(size)


def _is_path(pretrained: str) -> bool:
    # open_clip's tags are lower-case words with underscores: anything path-like is a file
    return any(mark in pretrained for mark in ("/", ".", "~", os.sep))


def _sibling_preprocess_cfg(path: Path) -> tuple[dict, str]:
    """The preprocess_cfg of the open_clip_config.json beside a checkpoint (a Hugging Face repo ships one)."""
    config_file = path.parent / "open_clip_config.json"
    if config_file.is_file():
        try:
            cfg = json.loads(config_file.read_text()).get("preprocess_cfg") or {}
        except (OSError, ValueError) as exc:
            _log.warning("cannot read %s (%s); using open_clip's default preprocessing", config_file, exc)
            cfg = {}
        if cfg:
            return cfg, str(config_file)
    return {}, f"the checkpoint {path.name} (no open_clip_config.json beside it)"


_logged: set[str] = set()


def _log_once(level: int, message: str, *args) -> None:
    """Specs are rebuilt on every lookup; say each thing about them once per process."""
    text = message % args
    if text not in _logged:
        _logged.add(text)
        _log.log(level, text)


# -- open_clip ------------------------------------------------------------------------------------
def register_tiny_test_config() -> None:
    """Make :data:`TINY_ARCH` an open_clip architecture (idempotent; every use of this module does it)."""
    from open_clip import factory

    if TINY_ARCH in factory.list_models():
        return
    configs = getattr(factory, "_MODEL_CONFIGS", None)
    if isinstance(configs, dict):  # open_clip keeps its configs in this dict and keeps entries across rescans
        configs[TINY_ARCH] = json.loads(json.dumps(TINY_CLIP_CONFIG))
        return
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="pixelmine-open-clip-"))
    (folder / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    factory.add_model_config(folder)


def _open_clip():
    open_clip = require("open_clip", _FEATURE)
    register_tiny_test_config()
    return open_clip


class _DropRandomInitWarning(logging.Filter):
    """open_clip warns on the root logger that a model without weights is random; for ``random`` that is
    the point, and for a checkpoint pixelmine loads the weights itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


def create_clip_model(spec: ClipBackbone, weights: ResolvedWeights):
    """The whole open_clip model (both towers) of ``spec`` with ``weights``, float32, in eval mode."""
    import torch

    open_clip = _open_clip()
    options = {"pretrained_image": False, "pretrained_text": False, "force_quick_gelu": spec.quick_gelu}
    quiet = _DropRandomInitWarning()
    logging.getLogger().addFilter(quiet)
    try:
        if weights.path is None:  # random initialisation
            seed = int(weights.identity.rpartition("=")[2])
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = open_clip.create_model(spec.arch, pretrained=None, **options)
        else:
            model = open_clip.create_model(spec.arch, pretrained=str(weights.path), **options)
    except OSError as exc:  # a tower from the Hugging Face hub (e.g. an XLM-R text encoder) that is not cached
        raise WeightsNotFoundError(
            f"{spec.name} needs parts open_clip fetches from the Hugging Face hub ({exc}); build it once on a machine "
            f"with internet and copy its ~/.cache/huggingface/hub into {hf_hub_dir()}") from exc
    finally:
        logging.getLogger().removeFilter(quiet)
    return model.float().eval()


@functools.cache
def _image_tower_class():
    """The torch module class, made on first use: specs (this module) import no torch."""
    from torch import nn

    class ClipImageTower(nn.Module):
        """open_clip's visual tower as a pixelmine network: (no map, the projected embedding, no logits)."""

        has_map = False  # a ViT gives tokens, not a spatial map

        def __init__(self, visual: nn.Module):
            super().__init__()
            self.visual = visual

        def forward(self, x):
            return None, self.visual(x), None

    return ClipImageTower


def _build_image_tower(spec: ClipBackbone, weights: ResolvedWeights):
    return _image_tower_class()(create_clip_model(spec, weights).visual)


# -- the text side --------------------------------------------------------------------------------
class ClipTextEncoder:
    """The text tower of a CLIP backbone: ``encode(texts)`` -> (n, dim) float32, L2-normalised, in the space
    of that backbone's image features (normalise those before comparing).

    ``logit_scale`` is the model's learned temperature, already exponentiated (100.0 for trained CLIP): zero-shot
    class probabilities are ``softmax(logit_scale * cosine)`` (plus ``logit_bias`` for SigLIP, else None).
    ``fingerprint`` is the fp32 fingerprint of the image features these embeddings pair with."""

    def __init__(self, spec: ClipBackbone, weights: ResolvedWeights, model, tokenizer, *, device: str = "cpu"):
        self.spec = spec
        self.name = spec.name
        self.weights = weights
        self.fingerprint = spec.fingerprint(weights)
        self.device = device
        self.logit_scale = float(model.logit_scale.detach().exp().reshape(-1)[0])
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = None if bias is None else float(bias.detach().reshape(-1)[0])
        self.dim = int(spec.feature_dim)
        self._model = model.to(device)
        self._tokenizer = tokenizer

    def encode(self, texts: list[str], *, batch_size: int = 64) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors; the same texts give the same vectors."""
        import torch

        if self._model is None:
            raise InputError(f"the text encoder of {self.name} is closed; open another with clip_text_encoder()")
        if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
            raise InputError(f"ClipTextEncoder.encode takes a list of strings; got {texts!r:.80}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"The 'batch_size' parameter of encode must be an integer >= 1. Got {batch_size!r} instead.")
        texts = list(texts)
        parts = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                tokens = self._tokenizer(texts[start:start + batch_size]).to(self.device)
                parts.append(self._model.encode_text(tokens, normalize=True).float().cpu().numpy())
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)

    def close(self) -> None:
        self._model = None
        self._tokenizer = None

    def __enter__(self) -> "ClipTextEncoder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ClipTextEncoder({self.name!r}, dim={self.dim}, logit_scale={self.logit_scale:.2f})"


def clip_text_encoder(name: str, *, root: str | os.PathLike | None = None, allow_download: bool | None = None,
                      device: str = "cpu") -> ClipTextEncoder:
    """The text encoder of CLIP backbone ``name`` (``clip:ARCH/PRETRAINED``), its weights resolved as for
    the image side (offline first). ``root`` is accepted for symmetry with ``backbones.get``; CLIP needs none."""
    if not is_clip(name):
        raise InputError(f"text embeddings need a CLIP backbone ({PREFIX}:ARCH/PRETRAINED, e.g. "
                         f"{PREFIX}:ViT-B-32/laion2b_s34b_b79k); got {name!r}")
    spec = clip_backbone(name[len(PREFIX) + 1:])
    weights = spec.resolve_weights(allow_download=allow_download)
    model = create_clip_model(spec, weights)
    model.visual = None  # the text side never uses it; free its memory
    return ClipTextEncoder(spec, weights, model, _tokenizer(spec.arch), device=device)


@functools.lru_cache(maxsize=4)
def _tokenizer(arch: str):
    open_clip = _open_clip()
    try:
        return open_clip.get_tokenizer(arch)
    except OSError as exc:  # a Hugging Face tokenizer that is not cached
        raise WeightsNotFoundError(
            f"the tokenizer of CLIP {arch} comes from the Hugging Face hub and is not cached here ({exc}); load it once "
            f"on a machine with internet (open_clip.get_tokenizer('{arch}')) and copy ~/.cache/huggingface/hub "
            f"into {hf_hub_dir()}") from exc
