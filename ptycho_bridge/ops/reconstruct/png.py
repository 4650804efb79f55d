"""PNG images of the reconstruction without matplotlib: the canvas through a colour map, a colour bar, its range.

Why: ``reconstruct`` writes two or three images per run; drawing them as matplotlib figures (importing
``matplotlib.figure`` and the Agg backend, laying out axes, ticks and text) took about 0.9 s of a 2.2 s
100-pattern run on 2 cores — more than the reconstruction. An image here is numpy indexing into a 256-entry
colour table and ``zlib``: a few milliseconds. What is given up: axis ticks and titles drawn as text. What
is kept: every canvas pixel (integer-upscaled for small canvases, nearest-neighbour stride for canvases
over :data:`MAX_SIDE`), matplotlib's exact ``gray``/``viridis`` colours (the tables below are matplotlib's
``cmap(i, bytes=True)``, tested against it), a colour bar with its top/middle/bottom values in a small
bitmap font, and the title, colour map, value range and scale in the PNG's ``tEXt`` chunks.

PNG: 8-bit RGB, one IDAT (zlib level 6), filter type 0 per row (PNG spec §11, ISO/IEC 15948).
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

from ptycho_bridge.lazy import numpy as np

MAX_SIDE = 2048  # largest image side drawn; bigger canvases are strided (the .npz/.tiff keep every pixel)
MIN_SIDE = 384  # smaller canvases are upscaled by an integer factor to at least this
BAR_WIDTH, GAP, MARGIN, FONT_SCALE = 16, 8, 8, 2

# matplotlib 3.x colour tables, cmap(np.arange(256), bytes=True)[:, :3] (tests/ops/reconstruct/test_png.py)
_VIRIDIS = (
    "44015444025544035745055845065a45085b46095c460b5e460c5f460e61470f62471163471265471466471567471669"
    "47186a48196b481a6c481c6e481d6f481e70482071482172482273482374472575472676472777472878472a79472b7a"
    "472c7b462d7c462f7c46307d46317e45327f45347f453580453681443781443982433a83433b83433c84423d84423e85"
    "4240854141864142864043874044873f45873f47883e48883e49893d4a893d4b893d4c893c4d8a3c4e8a3b508a3b518a"
    "3a528b3a538b39548b39558b38568b38578c37588c37598c365a8c365b8c355c8c355d8c345e8d345f8d33608d33618d"
    "32628d32638d31648d31658d31668d30678d30688d2f698d2f6a8d2e6b8e2e6c8e2e6d8e2d6e8e2d6f8e2c708e2c718e"
    "2c728e2b738e2b748e2a758e2a768e2a778e29788e29798e287a8e287a8e287b8e277c8e277d8e277e8e267f8e26808e"
    "26818e25828e25838d24848d24858d24868d23878d23888d23898d22898d228a8d228b8d218c8d218d8c218e8c208f8c"
    "20908c20918c1f928c1f938b1f948b1f958b1f968b1e978a1e988a1e998a1e998a1e9a891e9b891e9c891e9d881e9e88"
    "1e9f881ea0871fa1871fa2861fa38620a48520a58521a68521a78422a78423a88323a98224aa8225ab8126ac8127ad80"
    "28ae7f29af7f2ab07e2bb17d2cb17d2eb27c2fb37b30b47a32b57a33b67935b77836b87738b97639b9763bba753dbb74"
    "3ebc7340bd7242be7144be7045bf6f47c06e49c16d4bc26c4dc26b4fc36951c46853c56755c66657c66559c7645bc862"
    "5ec96160c96062ca5f64cb5d67cc5c69cc5b6bcd596dce5870ce5672cf5574d05477d05279d1517cd24f7ed24e81d34c"
    "83d34b86d44988d5478bd5468dd64490d64392d74195d73f97d83e9ad83c9dd93a9fd938a2da37a5da35a7db33aadb32"
    "addc30afdc2eb2dd2cb5dd2bb7dd29bade27bdde26bfdf24c2df22c5df21c7e01fcae01ecde01dcfe11cd2e11bd4e11a"
    "d7e219dae218dce218dfe318e1e318e4e318e7e419e9e419ece41aeee51bf1e51cf3e51ef6e61ff8e621fae622fde724"
)
_GRAY = (
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202022232424262728282a2b2c2c2e2f"
    "303032333434363738383a3b3c3c3e3f40414143444546474849494b4c4d4e4f50515153545556575859595b5c5d5e5f"
    "60616163646566676869696b6c6d6e6f70717173747576777879797b7c7d7e7f808182838385868788898a8b8c8d8e8f"
    "909192939395969798999a9b9c9d9e9fa0a1a2a3a3a5a6a7a8a9aaabacadaeafb0b1b2b3b3b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c3c5c6c7c8c9cacbcccdcecfd0d1d2d3d3d5d6d7d8d9dadbdcdddedfe0e1e2e3e3e5e6e7e8e9eaebecedeeef"
    "f0f1f2f3f3f5f6f7f8f9fafbfcfdfeff"
)
# 3x5 glyphs for numbers ("%.3g"): rows top to bottom, 3 bits each
_GLYPHS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
    "8": "111101111101111", "9": "111101111001111", ".": "000000000000010", "-": "000000111000000",
    "+": "000010111010000", "e": "000111111100111", "n": "000110101101101", "a": "000011101111101",
    "i": "010000010010010", "f": "011100110100100",
}


def colour_table(cmap: str) -> np.ndarray:
    """uint8 ``[256, 3]`` of ``gray`` or ``viridis`` (``ValueError`` for anything else)."""
    if cmap == "viridis":
        return np.frombuffer(bytes.fromhex("".join(_VIRIDIS)), np.uint8).reshape(256, 3)
    if cmap == "gray":
        return np.repeat(np.frombuffer(bytes.fromhex("".join(_GRAY)), np.uint8)[:, None], 3, axis=1)
    raise ValueError(f"no colour table {cmap!r} (gray, viridis)")


def colour_indices(data: np.ndarray, vmin: float, vmax: float, n: int = 256) -> np.ndarray:
    """Table index per pixel as matplotlib's ``Normalize`` + ``Colormap.__call__`` compute it; -1 for NaN.

    Same float steps: normalise in the data's float type (float32 stays float32), ``× n``, ``n`` → ``n-1``,
    truncate; below 0 → 0, at or above ``n`` → ``n-1``. A constant image (``vmin == vmax``) maps to 0.
    """
    x = np.asarray(data)
    x = x.astype(np.promote_types(x.dtype, np.float32), copy=True)
    bad = np.isnan(x)
    if vmax > vmin:
        lo, hi = x.dtype.type(vmin), x.dtype.type(vmax)
        x -= lo
        x /= hi - lo
    else:
        x[...] = 0
    x *= n
    x[x == n] = n - 1
    under, over = x < 0, x >= n
    with np.errstate(invalid="ignore"):
        idx = x.astype(np.int64)
    idx[under] = 0
    idx[over] = n - 1
    idx[bad] = -1
    return idx


def format_value(v: float) -> str:
    """``%.3g`` of a colour-bar value, in the glyphs the font has."""
    return f"{v:.3g}"


def _text(s: str) -> np.ndarray:
    """Boolean bitmap of ``s`` in the 3x5 font, scaled by :data:`FONT_SCALE`, 1 column between glyphs."""
    cols = []
    for ch in s:
        g = np.array([c == "1" for c in _GLYPHS.get(ch, "000000000000000")], bool).reshape(5, 3)
        cols += [g, np.zeros((5, 1), bool)]
    bm = np.concatenate(cols, axis=1) if cols else np.zeros((5, 0), bool)
    return np.kron(bm, np.ones((FONT_SCALE, FONT_SCALE), bool))


@dataclass
class Panel:
    """One image of a figure: real data, colour map, range (default: its finite min/max), title (tEXt)."""

    data: np.ndarray
    cmap: str
    title: str
    vmin: float | None = None
    vmax: float | None = None

    def limits(self) -> tuple[float, float]:
        if self.vmin is not None and self.vmax is not None:
            return float(self.vmin), float(self.vmax)
        finite = self.data[np.isfinite(self.data)]
        if finite.size == 0:
            return 0.0, 1.0
        return float(finite.min()), float(finite.max())


def _view(data: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(image to draw, upscale factor, stride): integer upscale to MIN_SIDE, stride down to MAX_SIDE."""
    h, w = data.shape
    side = max(h, w, 1)
    stride = max(1, math.ceil(side / MAX_SIDE))
    img = data[::stride, ::stride]
    up = max(1, MIN_SIDE // max(img.shape)) if stride == 1 else 1
    return img, up, stride


def render(panel: Panel) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]``: the image, a gap, the colour bar and its max / mid / min labels."""
    lo, hi = panel.limits()
    table = colour_table(panel.cmap)
    img, up, _ = _view(np.asarray(panel.data))
    idx = colour_indices(img, lo, hi)
    rgb = np.where((idx < 0)[..., None], np.uint8(255), table[np.clip(idx, 0, 255)])
    if up > 1:
        rgb = np.repeat(np.repeat(rgb, up, axis=0), up, axis=1)
    h, w = rgb.shape[:2]
    bar_h = max(h, 32)
    labels = [_text(format_value(v)) for v in (hi, (lo + hi) / 2, lo)]
    label_w = max(t.shape[1] for t in labels)
    out = np.full((MARGIN * 2 + bar_h, MARGIN + w + GAP + BAR_WIDTH + GAP // 2 + label_w + MARGIN, 3), 255, np.uint8)
    out[MARGIN:MARGIN + h, MARGIN:MARGIN + w] = rgb
    ramp = table[np.linspace(255, 0, bar_h).round().astype(np.int64)]  # top = vmax
    x0 = MARGIN + w + GAP
    out[MARGIN:MARGIN + bar_h, x0:x0 + BAR_WIDTH] = ramp[:, None, :]
    lx = x0 + BAR_WIDTH + GAP // 2
    th = labels[0].shape[0]
    for t, y in zip(labels, (MARGIN, MARGIN + (bar_h - th) // 2, MARGIN + bar_h - th)):
        out[y:y + th, lx:lx + t.shape[1]][t] = 0
    return out


def grid(images: Sequence[np.ndarray], cols: int) -> np.ndarray:
    """Rendered panels on a white grid, row-major, each cell the largest panel's size."""
    ch, cw = max(i.shape[0] for i in images), max(i.shape[1] for i in images)
    rows = math.ceil(len(images) / cols)
    out = np.full((rows * ch, cols * cw, 3), 255, np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        out[r * ch:r * ch + im.shape[0], c * cw:c * cw + im.shape[1]] = im
    return out


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(rgb: np.ndarray, text: Mapping[str, str] | None = None) -> bytes:
    """8-bit RGB PNG bytes of ``rgb`` ``[H, W, 3]`` uint8, with Latin-1 ``tEXt`` entries."""
    a = np.ascontiguousarray(rgb, dtype=np.uint8)
    if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"expected [H, W, 3] uint8, got {list(a.shape)}")
    h, w = a.shape[:2]
    raw = np.zeros((h, 1 + 3 * w), np.uint8)  # filter byte 0 (None) per row
    raw[:, 1:] = a.reshape(h, 3 * w)
    parts = [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))]
    for key, value in (text or {}).items():
        parts.append(_chunk(b"tEXt", key.encode("latin-1")[:79] + b"\0" + value.encode("latin-1", "replace")))
    parts += [_chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)), _chunk(b"IEND", b"")]
    return b"".join(parts)


def figure_png(panels: Sequence[Panel], cols: int = 1, *, title: str = "") -> bytes:
    """The PNG of ``panels`` in a grid; titles, colour maps, ranges and scales go into ``tEXt``."""
    text = {"Software": "ptycho-bridge", "Title": title or "; ".join(p.title for p in panels)}
    # each panel's range resolved once (a finite min/max pass over the data), for the text and the drawing
    panels = [replace(p, vmin=lo, vmax=hi) for p in panels for lo, hi in [p.limits()]]
    for k, p in enumerate(panels):
        lo, hi = p.limits()
        _, up, stride = _view(np.asarray(p.data))
        text[f"Panel{k + 1}"] = (f"{p.title}; cmap {p.cmap}; colour bar {lo:.9g} .. {hi:.9g}; "
                                 f"{p.data.shape[1]}x{p.data.shape[0]} px, drawn x{up}, stride {stride}")
    return encode_png(grid([render(p) for p in panels], cols), text)
