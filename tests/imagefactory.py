"""Builders for the files tests need: distinct photos-like images and every kind of broken file."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def photo(seed: int, size: tuple[int, int] = (96, 64)) -> Image.Image:
    """A smooth random colour field: distinct per seed, compressible, photo-like enough for hashing."""
    rng = np.random.default_rng(seed)
    w, h = size
    coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)


def save(img: Image.Image, path: Path, **params) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **params)
    return path


def encoded(img: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, *, bit_depth: int = 8, colour_type: int = 2, rows: bytes | None = None) -> bytes:
    """A PNG written by hand, so headers can declare what Pillow would never write (48-bit, huge sizes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    if rows is None:
        channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
        row = b"\x00" + bytes(width * channels * bit_depth // 8)
        rows = row * height
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(rows)) + \
        _png_chunk(b"IEND", b"")


def png_16bit_rgb(width: int = 32, height: int = 24) -> bytes:
    rng = np.random.default_rng(0)
    rows = b"".join(b"\x00" + rng.integers(0, 65535, size=width * 3, dtype=np.uint16).astype(">u2").tobytes() for _ in range(height))
    return png_bytes(width, height, bit_depth=16, colour_type=2, rows=rows)


def png_bomb(side: int = 100_000) -> bytes:
    """A PNG whose header declares side x side pixels; only a few bytes of data follow."""
    return png_bytes(side, side, colour_type=0, rows=b"\x00" * 64)


def png_broken_crc(img: Image.Image) -> bytes:
    data = bytearray(encoded(img, "PNG"))
    at = data.index(b"IDAT") + 8  # inside the compressed data; the stored CRC no longer matches
    data[at] ^= 0xFF
    return bytes(data)


def jpeg_with_orientation(img: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(img, "JPEG", exif=exif.tobytes(), quality=90)


def animated(fmt: str, frames: int = 3) -> bytes:
    images = [photo(100 + i) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, format=fmt, save_all=True, append_images=images[1:], duration=100, loop=0)
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def xpm_bytes(width: int = 16, height: int = 12) -> bytes:
    """An XPM (X PixMap, a C-source text format) checkerboard, written by hand: Pillow reads XPM but cannot
    write it."""
    rows = ["".join(".#"[(x // 4 + y // 3) % 2] for x in range(width)) for y in range(height)]
    lines = ["/* XPM */", "static char *planted[] = {", f'"{width} {height} 2 1",', '". c #204080",', '"# c #F0E0A0",']
    lines += [f'"{row}",' for row in rows[:-1]] + [f'"{rows[-1]}"', "};", ""]
    return "\n".join(lines).encode()
