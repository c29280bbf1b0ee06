"""Synthetic test images: class-distinguishable, deterministic per seed, no downloads.

Every class gets its own style — a background colour, a foreground colour and a shape or texture
(disc, square, triangle, stripes, checkerboard, ring, cross, dots, diamond, gradient) — and every image
of a class jitters position, size and colours and adds a little noise, so all images differ (distinct
sha256 and features) while a class stays recognisable (its coarse colour histogram alone separates the ten
classes).
The same (class, index, seed) always gives the same pixels and, saved here, the same bytes.

:func:`image_folder` writes ``<dst>/<class>/NNNN.jpg`` (32×32 RGB JPEGs, like the CIFAR-10 test folder the
end-to-end tests were written against); :func:`edge_cases` writes files that stress decoding: grayscale,
RGBA and palette PNGs, 16-bit grayscale, CMYK, odd sizes, an EXIF-rotated JPEG.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image

#: The CIFAR-10 class names, in CIFAR's order: the default classes of :func:`image_folder`.
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SHAPES = ["disc", "square", "triangle", "stripes", "checker", "ring", "cross", "dots", "diamond", "gradient"]
#: (background, foreground) per style: 20 colours, each in its own cell of a 4×4×4 colour grid (at the cell's
#: centre), so a coarse colour histogram alone tells the ten styles apart.
PALETTE = [
    ((224, 32, 32), (224, 160, 32)),
    ((32, 160, 32), (96, 224, 96)),
    ((32, 32, 224), (96, 96, 224)),
    ((224, 224, 32), (32, 32, 96)),
    ((160, 32, 160), (96, 224, 224)),
    ((32, 32, 32), (224, 32, 160)),
    ((224, 224, 224), (160, 160, 160)),
    ((32, 160, 160), (96, 32, 32)),
    ((224, 96, 160), (32, 96, 96)),
    ((96, 96, 32), (160, 224, 224)),
]


def _seed(*parts: object) -> int:
    return zlib.crc32("\x1f".join(map(str, parts)).encode())


def style(cls: str, classes: list[str] | None = None) -> int:
    """The style index of ``cls``: its position in ``classes`` (mod 10), else a stable hash of the name."""
    if classes and cls in classes:
        return classes.index(cls) % len(SHAPES)
    if cls in CLASSES:
        return CLASSES.index(cls)
    return _seed(cls) % len(SHAPES)


def _mask(shape: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A boolean (h, w) mask of the foreground for ``shape``, jittered by ``rng``."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = h * rng.uniform(0.35, 0.65), w * rng.uniform(0.35, 0.65)
    r = min(h, w) * rng.uniform(0.22, 0.34)
    dy, dx = yy - cy, xx - cx
    period = max(3.0, min(h, w) / rng.uniform(3.5, 5.5))
    if shape == "disc":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if shape == "triangle":
        return (dy <= r) & (dy >= -r) & (np.abs(dx) <= (dy + r) / 2)
    if shape == "stripes":
        return ((xx + rng.uniform(0, period)) % period) < period / 2
    if shape == "checker":
        return (((xx // period) + (yy // period)) % 2) == 0
    if shape == "ring":
        d = np.sqrt(dx**2 + dy**2)
        return (d <= r) & (d >= r * 0.55)
    if shape == "cross":
        return ((np.abs(dx) <= r * 0.3) & (np.abs(dy) <= r)) | ((np.abs(dy) <= r * 0.3) & (np.abs(dx) <= r))
    if shape == "dots":
        return (((xx % period) - period / 2) ** 2 + ((yy % period) - period / 2) ** 2) <= (period / 3.2) ** 2
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    return (xx + yy) / (h + w) > rng.uniform(0.4, 0.6)  # gradient: a diagonal split


def make_image(
    cls: str, index: int, seed: int = 0, size: tuple[int, int] = (32, 32), classes: list[str] | None = None
) -> Image.Image:
    """The ``index``-th RGB image of class ``cls``, ``size`` = (width, height); same arguments, same pixels."""
    rng = np.random.default_rng(_seed("labeler-synth", cls, index, seed))
    k = style(cls, classes)
    w, h = size
    bg, fg = (np.array(c, np.float32) for c in PALETTE[k])
    bg = bg + rng.normal(0, 10, 3)
    fg = fg + rng.normal(0, 10, 3)
    mask = _mask(SHAPES[k], h, w, rng)[..., None]
    pixels = np.where(mask, fg, bg) + rng.normal(0, 8, (h, w, 3))
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")


def image_folder(
    dst: str | Path,
    per_class: int,
    classes: list[str] | None = None,
    seed: int = 0,
    size: tuple[int, int] = (32, 32),
    ext: str = "jpg",
) -> Path:
    """Write ``per_class`` images of each class as ``dst/<class>/NNNN.<ext>`` (JPEG quality 95 or PNG); return dst."""
    dst = Path(dst)
    classes = list(classes or CLASSES)
    for cls in classes:
        (dst / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = make_image(cls, i, seed=seed, size=size, classes=classes)
            path = dst / cls / f"{i:04d}.{ext}"
            if ext.lower() in ("jpg", "jpeg"):
                img.save(path, "JPEG", quality=95)
            else:
                img.save(path, "PNG")
    return dst


#: What :func:`edge_cases` writes: file name → (Pillow format, size after EXIF orientation as (w, h)).
EDGE_CASES = {
    "gray.jpg": ("JPEG", (40, 30)),
    "rgba.png": ("PNG", (33, 47)),
    "palette.png": ("PNG", (64, 20)),
    "gray16.png": ("PNG", (24, 24)),
    "cmyk.jpg": ("JPEG", (30, 30)),
    "tall.png": ("PNG", (3, 201)),
    "wide.jpg": ("JPEG", (257, 5)),
    "one-pixel.png": ("PNG", (1, 1)),
    "exif-rotated.jpg": ("JPEG", (30, 50)),  # stored 50×30 with orientation 6 (rotate 90° clockwise to show)
}


def edge_cases(dst: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write the :data:`EDGE_CASES` files into ``dst``; return name → path."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    out = {name: dst / name for name in EDGE_CASES}
    make_image("cat", 0, seed, (40, 30)).convert("L").save(out["gray.jpg"], "JPEG", quality=90)
    rgba = make_image("dog", 0, seed, (33, 47)).convert("RGBA")
    alpha = np.full((47, 33), 255, np.uint8)
    alpha[:, :11] = 0  # a transparent left third
    rgba.putalpha(Image.fromarray(alpha, "L"))
    rgba.save(out["rgba.png"], "PNG")
    make_image("ship", 0, seed, (64, 20)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(
        out["palette.png"], "PNG"
    )
    ramp = (np.arange(24 * 24, dtype=np.uint16).reshape(24, 24) * 113).astype(np.uint16)
    Image.fromarray(ramp, "I;16").save(out["gray16.png"], "PNG")
    make_image("frog", 0, seed, (30, 30)).convert("CMYK").save(out["cmyk.jpg"], "JPEG", quality=90)
    make_image("bird", 0, seed, (3, 201)).save(out["tall.png"], "PNG")
    make_image("truck", 0, seed, (257, 5)).save(out["wide.jpg"], "JPEG", quality=90)
    make_image("deer", 0, seed, (1, 1)).save(out["one-pixel.png"], "PNG")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned; viewers rotate 90° clockwise
    make_image("horse", 0, seed, (50, 30)).save(out["exif-rotated.jpg"], "JPEG", quality=90, exif=exif.tobytes())
    return out
