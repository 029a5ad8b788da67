"""`make_messy_folder`: one file of every awkward kind found in real image folders."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# Substrings of the skip reasons expected for the bad entries (relative posix paths).
BAD = {
    "empty.jpg": "empty file",
    "not_an_image.png": "not an image",
    "text_as.jpeg": "not an image",
    "postscript.png": "not an image",
    "truncated.jpg": "truncated",
    "truncated.png": "damaged",
    "bad_crc.png": "damaged",
    "bomb_error.png": "too large",
    "bomb_warning.png": "too large",
    "readme.txt": "not an image extension",
    ".hidden.png": "hidden",
    ".hidden_dir": "hidden",
    "loop": "loop",
    "sub/up": "loop",
    "broken_link.png": "broken symlink",
    "self_link.png": "broken symlink",
}
SIXTEEN_BIT = np.tile(np.array([0, 32896, 65535, 65535], np.uint16), (6, 2))  # 0, 128, 255
# Files accepted by the fast scan whose pixels cannot be decoded (load gives a placeholder).
DECODE_FAILS = {"zlib_garbage.png"}


def png_bytes(width: int, height: int, idat: bytes | None = None, iend: bool = True) -> bytes:
    """A PNG built chunk by chunk (8-bit RGB), with valid CRCs around whatever IDAT is given."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    if idat is not None:
        out += chunk(b"IDAT", idat)
    return out + (chunk(b"IEND", b"") if iend else b"")


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    """Encode a Pillow image into bytes."""
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def gradient(width: int = 16, height: int = 12, seed: int = 0) -> Image.Image:
    """A small RGB image with distinct, reproducible content."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB")


def bad_files(seed: int = 10) -> dict[str, bytes]:
    """Contents of one unreadable file of every kind, keyed by a name whose ending matters.

    Every name is a key of `BAD` (the expected skip reason) or of `DECODE_FAILS`; ``seed``
    varies the images the damaged files are cut from.
    """
    jpeg = encode(gradient(64, 64, seed=seed), "JPEG")
    png = encode(gradient(64, 64, seed=seed + 1), "PNG")
    bad_png = bytearray(png)
    bad_png[60] ^= 0xFF  # inside IDAT: the CRC no longer matches
    return {
        "empty.jpg": b"",
        "not_an_image.png": b"just some text, not a PNG\n",
        "text_as.jpeg": b"<html>not a jpeg</html>",
        "postscript.png": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 6\n",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.png": png[: len(png) // 2],
        "bad_crc.png": bytes(bad_png),
        "bomb_error.png": png_bytes(100_000, 100_000, idat=b"x"),  # Pillow raises
        "bomb_warning.png": png_bytes(10_000, 10_000, idat=b"x"),  # Pillow only warns
        "readme.txt": b"notes\n",
        "zlib_garbage.png": png_bytes(8, 6, idat=f"definitely not zlib data {seed}".encode()),
    }


def broken_symlink(path: Path) -> None:
    """A file symlink at ``path`` to a file that does not exist."""
    os.symlink(f"{path.stem}-missing{path.suffix}", path)


def self_symlink(path: Path) -> None:
    """A file symlink at ``path`` to itself (opening it fails with ELOOP)."""
    os.symlink(path.name, path)


#: Bad symlinks: name (a key of `BAD`) -> function making one at a path.
BAD_LINKS = {"broken_link.png": broken_symlink, "self_link.png": self_symlink}


def make_messy_folder(root: Path) -> dict[str, object]:
    """Fill ``root`` with good images of every colour mode plus one of each bad kind.

    Returns ``{"good": [relative paths expected in ids], "bad": BAD, "decode_fails": ...,
    "duplicates": [group of identical files]}``.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "ünïcödé dir").mkdir()
    (root / ".hidden_dir").mkdir()
    good: dict[str, bytes] = {
        "rgb.jpg": encode(gradient(seed=1), "JPEG", quality=90),
        "rgb.png": encode(gradient(seed=2), "PNG"),
        "grey.png": encode(Image.new("L", (8, 6), 100), "PNG"),
        "bilevel.bmp": encode(Image.new("1", (8, 6), 1), "BMP"),
        "palette.gif": encode(gradient(seed=3).convert("P"), "GIF"),
        "cmyk.jpg": encode(Image.new("CMYK", (8, 6), (0, 255, 255, 0)), "JPEG"),
        "cmyk.tif": encode(Image.new("CMYK", (8, 6), (0, 255, 255, 0)), "TIFF"),
        "sixteen_bit.png": encode(Image.fromarray(SIXTEEN_BIT), "PNG"),
        "photo.webp": encode(gradient(seed=4), "WEBP", lossless=True),
        "sub/deeper/nested.png": encode(gradient(seed=5), "PNG"),
        "ünïcödé dir/spaced name é.png": encode(gradient(seed=6), "PNG"),
        "UPPER.JPEG": encode(gradient(seed=7), "JPEG"),
        "trailing_bytes.jpg": encode(gradient(seed=8), "JPEG") + b"SEFT-trailer" * 4,
        "dup_a.png": encode(gradient(seed=9), "PNG"),
        "sub/dup_b.png": encode(gradient(seed=9), "PNG"),
    }
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[:, :4] = (255, 0, 0, 0)  # transparent red -> white
    rgba[:, 4:] = (0, 0, 255, 255)  # opaque blue
    good["rgba.png"] = encode(Image.fromarray(rgba, "RGBA"), "PNG")
    good["grey_alpha.png"] = encode(Image.new("LA", (8, 6), (0, 0)), "PNG")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    good["exif_rotated.jpg"] = encode(gradient(width=8, height=4), "JPEG", exif=exif)
    for rel, data in good.items():
        (root / rel).write_bytes(data)
    files = {
        **bad_files(seed=10),
        ".hidden.png": encode(gradient(seed=12), "PNG"),
        ".hidden_dir/inside.png": encode(gradient(seed=13), "PNG"),
    }
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    os.symlink(root, root / "loop", target_is_directory=True)
    os.symlink("..", root / "sub" / "up", target_is_directory=True)
    for name, make_link in BAD_LINKS.items():
        make_link(root / name)
    os.symlink("rgb.png", root / "link_to_rgb.png")
    return {
        "good": sorted([*good, "link_to_rgb.png"]),
        "bad": BAD,
        "decode_fails": DECODE_FAILS,
        "duplicates": [["dup_a.png", "sub/dup_b.png"], ["link_to_rgb.png", "rgb.png"]],
    }
