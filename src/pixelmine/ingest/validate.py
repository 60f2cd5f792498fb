"""Validate one file: read it once, hash it, decode it under a time and memory budget, classify it.

Runs inside ingest worker processes. Every outcome is a :class:`FileRecord` with one status from
:data:`STATUSES`; nothing here raises for a bad file.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import struct
import threading
import warnings
from dataclasses import asdict, dataclass, field

from .sniff import explain_unidentified, sniff
from ..fileio import sha256_file

# What each status means, in the words the CLI, the README and the report use.
STATUSES: dict[str, str] = {
    "ok": "decodes fully; properties recorded",
    "empty_file": "zero bytes",
    "not_an_image": "another kind of file (text, PDF, HTML, archive, video...) under an image name",
    "truncated": "the image data ends early (an interrupted copy or download)",
    "corrupt": "an image format whose data is damaged or cannot be parsed",
    "unsupported_format": "an image format pixelmine cannot decode (SVG, EPS without Ghostscript, JPEG XL...)",
    "too_large": "above the pixel or byte limit (e.g. a decompression bomb); never decoded",
    "too_small": "decodes, but smaller than the minimum side length",
    "unreadable": "cannot be read: permissions, or the file vanished during the run",
}

# Path-level state, not a property of the bytes: a file seen before and gone now.
MISSING = "missing"


@dataclass(frozen=True)
class ValidationLimits:
    """Bounds on what one file may cost to validate."""

    max_pixels: int = 89_478_485  # Pillow's own decompression-bomb threshold (about 89.5 MP)
    max_bytes: int = 1 << 30  # files above 1 GiB are not read at all
    min_side: int = 8  # pixels; smaller images are 'too_small'
    timeout_s: float = 30.0  # wall-clock budget to decode one file
    phash: bool = True  # compute a 64-bit perceptual hash of ok images


@dataclass
class FileRecord:
    """Everything ingest learns about one path. ``sha256`` is None only when the file was unreadable."""

    path: str
    size: int | None
    mtime_ns: int | None
    status: str
    error: str | None = None
    sha256: str | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    bit_depth: int | None = None
    orientation: int | None = None
    frames: int | None = None
    phash: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class _DecodeTimeout(BaseException):  # not Exception: decoders must not swallow it
    pass


def _on_alarm(signum, frame):  # pragma: no cover - fires only on pathological files
    raise _DecodeTimeout()


_BIT_DEPTH_BY_MODE = {
    "1": 1, "L": 8, "P": 8, "RGB": 8, "RGBA": 8, "CMYK": 8, "YCbCr": 8, "LAB": 8, "HSV": 8,
    "LA": 8, "PA": 8, "RGBX": 8, "RGBa": 8, "La": 8,
    "I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16, "I": 32, "F": 32,
}


def _bit_depth(img, head: bytes) -> int | None:
    # Pillow reduces 16-bit colour PNGs to 8-bit RGB on load; the header tells the truth.
    if img.format == "PNG" and len(head) >= 25 and head[12:16] == b"IHDR":
        return head[24]
    if img.format == "TIFF":
        bits = img.tag_v2.get(258) if hasattr(img, "tag_v2") else None
        if isinstance(bits, tuple) and bits:
            return int(bits[0])
        if isinstance(bits, int):
            return bits
    return _BIT_DEPTH_BY_MODE.get(img.mode)


def _classify_decode_error(exc: BaseException, sniffed_format: str | None) -> tuple[str, str]:
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    what = sniffed_format or "image"
    if isinstance(exc, MemoryError):
        return "too_large", f"decoding needed more memory than allowed ({text}); raise the pixel limit only if you trust the file"
    if "truncated" in lowered or isinstance(exc, EOFError) or "premature end" in lowered:
        return "truncated", f"{what} data ends early ({text}); re-copy or re-download the file"
    if (isinstance(exc, NotImplementedError) or "decoder" in lowered and "not available" in lowered
            or any(word in lowered for word in ("ghostscript", "unsupported", "cannot find loader"))):
        return "unsupported_format", f"{what} variant that this installation cannot decode ({text}); convert it to PNG or JPEG"
    return "corrupt", f"{what} data is damaged ({type(exc).__name__}: {text}); re-export the image from its source"


def _bomb_message(exc: BaseException) -> str:
    return (f"the declared image size is far above the pixel limit, a likely decompression bomb ({exc}); "
            "it was not decoded. Raise max_pixels (--max-pixels) only if you trust the file")


def _stat(path: str) -> tuple[int | None, int | None, str | None]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None, None, "file vanished before it could be read; re-run ingest once the file is back"
    except OSError as exc:
        return None, None, f"cannot stat the file ({exc.strerror}); check the path and its permissions"
    return st.st_size, st.st_mtime_ns, None


def validate_file(path: str, limits: ValidationLimits = ValidationLimits()) -> FileRecord:
    """Classify one file. Never raises for a bad file; the result names the problem and the fix."""
    size, mtime_ns, stat_error = _stat(path)
    if stat_error:
        return FileRecord(path, size, mtime_ns, "unreadable", stat_error)
    if size == 0:
        return FileRecord(path, 0, mtime_ns, "empty_file", "the file is empty (0 bytes); re-copy it or remove it",
                          sha256=hashlib.sha256(b"").hexdigest())
    if size > limits.max_bytes:
        # Hash it anyway, in chunks, so that the image still has an identity in the catalog.
        try:
            digest = sha256_file(path)
        except OSError as exc:
            return FileRecord(path, size, mtime_ns, "unreadable", _read_error(exc))
        return FileRecord(path, size, mtime_ns, "too_large",
                          f"{size:,} bytes is above the {limits.max_bytes:,}-byte limit; raise max_bytes to read it",
                          sha256=digest)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        return FileRecord(path, size, mtime_ns, "unreadable", _read_error(exc))
    record = FileRecord(path, len(data), mtime_ns, "ok", sha256=hashlib.sha256(data).hexdigest())
    # The alarm bounds decoding time; signals can only be handled on a process's main thread.
    timed = threading.current_thread() is threading.main_thread()
    if timed:
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, limits.timeout_s)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's warnings about odd files become statuses, not noise
            _inspect_bytes(data, record, limits)
    except _DecodeTimeout:
        record.status, record.phash = "corrupt", None
        record.error = (f"decoding took longer than {limits.timeout_s:g} s, which no sound image of this size "
                        "needs; re-export the image, or raise the time limit (--timeout)")
    except Exception as exc:  # noqa: BLE001 - hostile files make third-party decoders raise anything
        record.status, record.error = _classify_decode_error(exc, record.format)
        record.phash = None
    finally:
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    return record


def _read_error(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file vanished while it was being read; re-run ingest once the file is back"
    if isinstance(exc, PermissionError):
        return "permission denied when reading the file; give the user running pixelmine read access (chmod +r)"
    if isinstance(exc, IsADirectoryError):
        return "this path is a directory, not a file"
    return f"cannot read the file ({exc.strerror or exc}); check the disk and the path"


def _inspect_bytes(data: bytes, record: FileRecord, limits: ValidationLimits) -> None:
    """Fill ``record`` from the file's bytes: format, properties, and the final status."""
    from PIL import Image, UnidentifiedImageError

    from ..imaging.plugins import register_optional_decoders

    register_optional_decoders()
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        record.status, record.error = "too_large", _bomb_message(exc)
        return
    except UnidentifiedImageError:
        record.status, record.error = explain_unidentified(sniff(data))
        return
    except (SyntaxError, ValueError, OSError, EOFError, struct.error, IndexError, KeyError, TypeError,
            ZeroDivisionError, MemoryError, RecursionError) as exc:
        record.status, record.error = _classify_decode_error(exc, sniff(data).image_format)
        return

    record.format = img.format
    record.width, record.height = img.size
    record.mode = img.mode
    record.bit_depth = _bit_depth(img, data[:64])
    record.frames = int(getattr(img, "n_frames", 1) or 1)
    try:
        orientation = img.getexif().get(0x0112)
        record.orientation = int(orientation) if orientation else None
    except Exception:  # a broken EXIF block does not make the pixels unusable
        record.orientation = None

    pixels = record.width * record.height
    if pixels > limits.max_pixels:
        record.status = "too_large"
        record.error = (f"{record.width}x{record.height} = {pixels:,} pixels is above the limit of "
                        f"{limits.max_pixels:,} (a possible decompression bomb); it was not decoded. "
                        "Raise max_pixels (--max-pixels) only if you trust the file")
        return

    try:
        _decode_fully(img, data, record, limits)
    except Image.DecompressionBombError as exc:
        record.status, record.error = "too_large", _bomb_message(exc)
    except (SyntaxError, ValueError, OSError, EOFError, struct.error, IndexError, KeyError, TypeError,
            ZeroDivisionError, MemoryError, RecursionError, AttributeError) as exc:
        record.status, record.error = _classify_decode_error(exc, record.format)
    if record.status != "ok":
        return
    if min(record.width, record.height) < limits.min_side:
        record.status = "too_small"
        record.error = (f"{record.width}x{record.height} has a side below the minimum of {limits.min_side} px; "
                        "lower min_side (--min-side) to keep it")


def _decode_fully(img, data: bytes, record: FileRecord, limits: ValidationLimits) -> None:
    from PIL import Image, ImageOps

    if img.format == "PNG":
        # verify() checks what load() does not (chunk CRCs); it must come straight after open and leaves
        # the image unusable, hence a fresh open on each side of it.
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()
        img = Image.open(io.BytesIO(data))
    if img.format == "JPEG" and limits.phash:
        # DCT-domain downscale: every byte is still entropy-decoded (truncation is caught), but the inverse
        # DCT runs at 1/2..1/8 scale, which is most of a JPEG's decoding cost.
        img.draft(img.mode if img.mode in ("L", "RGB") else None, (_HASH_INPUT, _HASH_INPUT))
    img.load()
    if limits.phash:
        record.phash = phash(ImageOps.exif_transpose(img))


# pHash as in the imagehash library (same values): 32x32 greyscale, 2-D DCT-II, the 8x8 lowest
# frequencies compared with their median. Written with numpy so ingest needs neither scipy nor imagehash.
_HASH_INPUT = 32
_HASH_SIDE = 8


def _dct_matrix(n: int):
    import numpy as np

    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * x + 1) / (2 * n))  # unnormalised DCT-II, scipy's default


_DCT = None


def phash(img) -> str:
    """64-bit perceptual hash of a Pillow image, as 16 hex digits."""
    import numpy as np

    from PIL import Image

    global _DCT
    if _DCT is None:
        _DCT = _dct_matrix(_HASH_INPUT)
    if img.mode.startswith("I") or img.mode == "F":
        # 16/32-bit greyscale: stretch to 8 bits, since Pillow cannot convert these modes to L directly.
        values = np.asarray(img, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        img = Image.fromarray(scaled.astype(np.uint8))
    elif img.mode not in ("L", "RGB"):
        img = img.convert("RGBA").convert("RGB") if "A" in img.getbands() else img.convert("RGB")
    if img.width > 4 * _HASH_INPUT or img.height > 4 * _HASH_INPUT:
        img = img.reduce(max(1, min(img.width, img.height) // (2 * _HASH_INPUT)))  # cheap box pre-shrink
    pixels = np.asarray(img.convert("L").resize((_HASH_INPUT, _HASH_INPUT), Image.Resampling.LANCZOS),
                        dtype=np.float64)
    low = (_DCT @ pixels @ _DCT.T)[:_HASH_SIDE, :_HASH_SIDE]
    return np.packbits((low > np.median(low)).flatten()).tobytes().hex()
