"""Import images into a project: folders, single files and zip archives.

:func:`import_sources` walks its sources as a stream (one folder at a time, one
zip entry at a time), hashes every image file (sha256 of the bytes, the
project-wide identity of an image), skips the ones the project already has,
decodes the new ones once with Pillow to validate them and to write their
thumbnail, and commits the rows batch by batch inside an ``import`` job. A file
that cannot be read is recorded in ``skipped_files`` with a short reason and
never stops the import.

:func:`load_rgb` is the one place that opens an image as RGB (EXIF orientation
applied, any mode converted); the feature extractors reuse it.

Example
-------
>>> report = import_sources(project, ["~/photos", "more.zip"])   # doctest: +SKIP
>>> report.added, report.duplicates, len(report.skipped)          # doctest: +SKIP
(1200, 3, 2)
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import struct
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageOps

from store import now

from .errors import InvalidInputError
from .jobs import Job, ProgressCallback
from .project import Project

#: File extensions (lower case, with the dot) that are imported as images.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
#: Zip entries larger than this once uncompressed are refused (zip-bomb guard).
ZIP_MAX_ENTRY_BYTES = 512 * 1024 * 1024
#: Environment variable: the most bytes one import (or one project-archive import) may write.
MAX_IMPORT_BYTES_ENV = "LABELER_MAX_IMPORT_BYTES"
#: Default cap on what one import writes into the project (zip contents, copied uploads).
DEFAULT_MAX_IMPORT_BYTES = 20 * 10**9
#: The default in uploads-only mode (a shared server such as a Hugging Face Space).
UPLOADS_ONLY_MAX_IMPORT_BYTES = 2 * 10**9
#: Free disk space an import always leaves.
DISK_RESERVE_BYTES = 256 * 1024**2
#: Bytes after the end of the image data that are always allowed (trailing metadata and the like).
PAD_SLACK_BYTES = 1024**2
#: Beyond that slack, trailing bytes may be up to this many times the image data (motion photos append a video).
PAD_RATIO = 4
#: Longest side of a thumbnail, in pixels.
THUMB_SIZE = 128
THUMB_QUALITY = 85
#: Sub-folder of ``project.files_dir`` that receives files imported with ``copy=True``.
UPLOADS_DIRNAME = "uploads"

_CHUNK = 1 << 20
_EXIF_ORIENTATION = 0x0112
_BOMB_RE = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+) pixels")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_EXT_LIST = ", ".join(sorted(e[1:] for e in IMAGE_EXTENSIONS))


class BadImageError(InvalidInputError):
    """A file is not a readable image; ``reason`` is a short sentence saying why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{os.fspath(path)}: {reason}")
        self.path = os.fspath(path)
        self.reason = reason


@dataclass
class ImportReport:
    """What one :func:`import_sources` call did.

    Attributes
    ----------
    added : int
        New images added to the project.
    duplicates : int
        Image files whose bytes (sha256) the project already had, or that
        appeared twice in this import; nothing was added for them.
    restored : int
        Images the project had marked ``missing`` (their file vanished) that this
        import found again: their row (labels, features) is kept and points at the new file.
    skipped : list of dict
        ``{"path", "reason"}`` for each file that could not be imported.
    run_id : int
        The ``runs`` row of the import job.
    """

    added: int = 0
    duplicates: int = 0
    restored: int = 0
    skipped: list[dict] = field(default_factory=list)
    run_id: int = 0

    def to_dict(self) -> dict:
        """Plain JSON-ready dict of the report."""
        return asdict(self)


# --- size limits ------------------------------------------------------------------

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_bytes(text: str) -> int:
    """``"20000000"``, ``"500MB"``, ``"2G"``, ``"1.5GB"`` → bytes (decimal units); ValueError if unreadable."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ValueError(f"not a size: {text!r}")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def max_import_bytes(uploads_only: bool = False) -> int:
    """The most bytes one import may write into a project: ``$LABELER_MAX_IMPORT_BYTES`` when set.

    Parameters
    ----------
    uploads_only : bool
        The app runs in uploads-only mode (a shared server such as a Space): the default is
        :data:`UPLOADS_ONLY_MAX_IMPORT_BYTES` (2 GB) instead of :data:`DEFAULT_MAX_IMPORT_BYTES` (20 GB).

    Raises
    ------
    InvalidInputError
        The environment variable is set to something that is not a positive size.
    """
    text = os.environ.get(MAX_IMPORT_BYTES_ENV, "").strip()
    if not text:
        return UPLOADS_ONLY_MAX_IMPORT_BYTES if uploads_only else DEFAULT_MAX_IMPORT_BYTES
    try:
        value = parse_bytes(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise InvalidInputError(
            f"{MAX_IMPORT_BYTES_ENV}={text!r} is not a size: give a number of bytes, e.g. 20000000000 or 20GB"
        )
    return value


def fmt_bytes(n: float) -> str:
    """A byte count for messages: ``1.9 GB``, ``480.0 MB``, ``12.0 kB``, ``300 bytes``."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{int(n)} bytes"


def over_cap_message(what: str, total: int, cap: int) -> str:
    """Why ``what`` is refused: the import would write ``total`` bytes, over ``cap`` (names the env var)."""
    return (
        f"{what}: this import would write {fmt_bytes(total)} into the project, more than the {fmt_bytes(cap)} "
        f"allowed for one import (set {MAX_IMPORT_BYTES_ENV} to change the limit)"
    )


def check_free_disk(folder: str | os.PathLike, needed: int, what: str) -> None:
    """Raise InvalidInputError if writing ``needed`` bytes under ``folder`` would leave too little disk free.

    ``what`` (a file name) starts the message; :data:`DISK_RESERVE_BYTES` are always kept free.
    """
    message = _disk_short(folder, needed)
    if message:
        raise InvalidInputError(f"{what}: {message}; free some space and try again")


def _disk_short(folder: str | os.PathLike, needed: int) -> str | None:
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed + DISK_RESERVE_BYTES <= free:
        return None
    return (
        f"not enough free disk space: needs {fmt_bytes(needed)}, {fmt_bytes(free)} free on {probe} "
        f"({fmt_bytes(DISK_RESERVE_BYTES)} are always kept free)"
    )


class _Budget:
    """Bytes one import may still write into the project."""

    def __init__(self, cap: int):
        self.cap = int(cap)
        self.used = 0

    @property
    def left(self) -> int:
        return max(0, self.cap - self.used)


# --- padded images ------------------------------------------------------------------


class _Stream:
    """Forward-only buffered reads with an absolute offset; works on zip entry streams as well as files."""

    def __init__(self, fp):
        self.fp, self.buf, self.i, self.base = fp, b"", 0, 0

    @property
    def pos(self) -> int:
        return self.base + self.i

    def fill(self, n: int) -> bool:
        """Make ``n`` bytes available at the current position; False at the end of the data."""
        while len(self.buf) - self.i < n:
            more = self.fp.read(max(_CHUNK, n))
            if not more:
                return False
            self.base += self.i
            self.buf, self.i = self.buf[self.i :] + more, 0
        return True

    def exact(self, n: int) -> bytes:
        if not self.fill(n):
            raise EOFError
        data = self.buf[self.i : self.i + n]
        self.i += n
        return data

    def skip(self, n: int) -> None:
        avail = len(self.buf) - self.i
        if n <= avail:
            self.i += n
            return
        n -= avail
        self.base, self.buf, self.i = self.base + len(self.buf), b"", 0
        while n > 0:
            chunk = self.fp.read(min(n, _CHUNK))
            if not chunk:
                raise EOFError
            self.base += len(chunk)
            n -= len(chunk)

    def next_jpeg_marker(self) -> bool:
        """Skip entropy-coded data up to the next real marker (not a stuffed ``FF00`` or a restart marker)."""
        while True:
            j = self.buf.find(b"\xff", self.i)
            if j < 0:
                self.base, self.buf, self.i = self.base + len(self.buf), b"", 0
                if not self.fill(2):
                    return False
                continue
            self.i = j
            if not self.fill(2):
                return False
            nxt = self.buf[self.i + 1]
            if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
                self.i += 2
            elif nxt == 0xFF:
                self.i += 1
            else:
                return True


def _png_end(s: _Stream) -> int | None:
    s.skip(8)
    while True:
        length, kind = struct.unpack(">I4s", s.exact(8))
        s.skip(length + 4)  # data and CRC
        if kind == b"IEND":
            return s.pos


def _jpeg_end(s: _Stream) -> int | None:
    s.skip(2)  # SOI
    while True:
        if s.exact(1) != b"\xff":
            return None
        m = s.exact(1)[0]
        while m == 0xFF:  # fill bytes
            m = s.exact(1)[0]
        if m == 0xD9:  # EOI
            return s.pos
        if m == 0x01 or 0xD0 <= m <= 0xD7:
            continue
        (length,) = struct.unpack(">H", s.exact(2))
        if length < 2:
            return None
        s.skip(length - 2)
        if m == 0xDA and not s.next_jpeg_marker():  # SOS: a scan's entropy-coded data follows
            return None


def _gif_end(s: _Stream) -> int | None:
    def sub_blocks() -> None:
        while n := s.exact(1)[0]:
            s.skip(n)

    flags = s.exact(13)[10]
    if flags & 0x80:  # global colour table
        s.skip(3 * 2 ** ((flags & 7) + 1))
    while True:
        kind = s.exact(1)[0]
        if kind == 0x3B:  # trailer
            return s.pos
        if kind == 0x21:  # extension
            s.skip(1)
            sub_blocks()
        elif kind == 0x2C:  # image descriptor
            flags = s.exact(9)[8]
            if flags & 0x80:
                s.skip(3 * 2 ** ((flags & 7) + 1))
            s.skip(1)  # LZW minimum code size
            sub_blocks()
        else:
            return None


def image_data_end(fp) -> int | None:
    """Where the image data of an open file ends (bytes from its start), or None if not known.

    Read forward only (``fp`` may be a zip entry stream): the PNG ``IEND`` chunk, the JPEG ``EOI``
    marker (scans walked), the GIF trailer, the RIFF size of a WebP, the header size of a BMP. TIFF
    and anything unrecognised or cut short give None (Pillow judges those when it decodes them).
    """
    s = _Stream(fp)
    try:
        if not s.fill(12):
            return None
        head = s.buf[:12]
        if head.startswith(b"\x89PNG\r\n\x1a\n"):
            return _png_end(s)
        if head.startswith(b"\xff\xd8"):
            return _jpeg_end(s)
        if head.startswith((b"GIF87a", b"GIF89a")):
            return _gif_end(s)
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            size = struct.unpack("<I", head[4:8])[0]
            return 8 + size + (size & 1)
        if head[:2] == b"BM":
            size = struct.unpack("<I", head[2:6])[0]
            return size if size >= 26 else None
    except (EOFError, struct.error, IndexError):
        return None
    return None


def padding_reason(fp, size: int) -> str | None:
    """Why a file of ``size`` bytes is refused as padded (far more bytes than its image data), or None.

    Allowed after the image data: :data:`PAD_SLACK_BYTES`, or :data:`PAD_RATIO` times the image data if
    that is more (trailing metadata, a motion photo's video).
    """
    end = image_data_end(fp)
    if end is None or end <= 0:
        return None
    extra = size - end
    if extra <= max(PAD_SLACK_BYTES, PAD_RATIO * end):
        return None
    return (
        f"padded image: {fmt_bytes(extra)} of extra bytes after the end of its image data "
        f"(which ends at byte {end:,} of {size:,}); refused (a possible disk-filling file)"
    )


def _file_padding_reason(path: str, size: int) -> str | None:
    with open(path, "rb") as fp:
        return padding_reason(fp, size)


# --- decoding -------------------------------------------------------------------


def is_image_name(name: str | os.PathLike) -> bool:
    """True if the file name has an image extension (any case)."""
    return os.path.splitext(os.fspath(name))[1].lower() in IMAGE_EXTENSIONS


def _bomb_reason(pixels: int | None, limit: int | None, message: str = "") -> str:
    # Pillow's error names twice the limit (where it stops warning and raises); report the limit itself.
    m = _BOMB_RE.search(message)
    if m:
        pixels = int(m.group(1))
        limit = limit or int(m.group(2))
    if pixels is None or limit is None:
        return "image too large: over Pillow's pixel limit (a possible decompression bomb)"
    return f"image too large: {pixels:,} pixels is over the limit of {limit:,} pixels (a possible decompression bomb)"


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _high_bit_depth_to_l(img: Image.Image) -> Image.Image:
    """Scale a 16-bit, 32-bit integer or float single-band image to 8-bit ``L`` (never clipped to white)."""
    a = np.asarray(img)
    if img.mode == "F":
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if lo >= 0.0 and hi <= 1.0:
            a = a * 255.0
        elif not (lo >= 0.0 and hi <= 255.0):
            a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    elif img.mode.startswith("I;16"):
        a = a.astype(np.float64) / 257.0
    else:  # "I": 32-bit signed; usually 16-bit data widened by the decoder
        a = a.astype(np.float64)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if lo >= 0.0 and hi <= 65535.0:
            a = a / 257.0
        else:
            a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a loaded image of any mode to ``RGB``.

    Alpha (``RGBA``, ``LA``, ``PA``, palette or ``RGB``/``L`` with a transparency
    colour) is composited on white; 16-bit, 32-bit and float images are scaled to
    8 bits; grayscale, CMYK, YCbCr, LAB and palette images are converted.
    """
    if img.mode == "RGB" and "transparency" not in img.info:
        return img
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        return _high_bit_depth_to_l(img).convert("RGB")
    has_alpha = "A" in img.getbands() or "a" in img.getbands() or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return img.convert("RGB")


def _orient(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag; an unreadable tag leaves the image as it is."""
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
        if orientation in (2, 3, 4, 5, 6, 7, 8):
            return ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block is not a reason to refuse the pixels
        pass
    return img


def _decode(path: str | os.PathLike, min_side: int | None = None) -> tuple[Image.Image, str | None]:
    """Open, fully decode, orient and convert one image. Returns (RGB image, Pillow format name).

    ``min_side``: a JPEG may be decoded at a reduced scale (DCT scaling) as long as both sides stay at
    least this large — much faster for camera photos that are resized to 224 px anyway.

    Raises
    ------
    BadImageError
        With a short reason: not an image, truncated or corrupt, too many pixels.
    """
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            # Over the limit (but under twice it) Pillow only warns; refuse those too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                fmt = img.format
                w, h = img.size
                if limit and w * h > limit:  # in case the warning was filtered elsewhere
                    raise BadImageError(path, _bomb_reason(w * h, int(limit)))
                if min_side and fmt == "JPEG":
                    img.draft("RGB", (min_side, min_side))
                img.load()
                rgb = to_rgb(_orient(img))
                if rgb is img:
                    rgb = img.copy()  # detached from the file we are about to close
    except BadImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImageError(path, _bomb_reason(None, int(limit) if limit else None, str(exc))) from exc
    except Image.UnidentifiedImageError as exc:
        raise BadImageError(path, "not an image: cannot identify image file") from exc
    except FileNotFoundError as exc:
        raise BadImageError(path, "file not found") from exc
    except PermissionError as exc:
        raise BadImageError(path, "cannot read file: permission denied") from exc
    except MemoryError as exc:
        raise BadImageError(path, "not enough memory to decode this image") from exc
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, EOFError... for broken files
        raise BadImageError(path, f"truncated or corrupt image: {_short(exc)}") from exc
    return rgb, fmt


def load_rgb(path: str | os.PathLike, min_side: int | None = None) -> Image.Image:
    """Open an image as ``RGB``: EXIF orientation applied, any mode converted, alpha on white.

    Parameters
    ----------
    path : str or PathLike
        An image file.
    min_side : int, optional
        Allow a JPEG to be decoded at a reduced scale while both sides stay >= this (faster; for models).

    Returns
    -------
    PIL.Image.Image
        A fully loaded ``RGB`` image (the file is closed).

    Raises
    ------
    BadImageError
        (an :class:`~labeler.errors.InvalidInputError`) when the file is missing,
        not an image, truncated, or over ``PIL.Image.MAX_IMAGE_PIXELS``.
    """
    if os.path.exists(path) and os.path.getsize(path) == 0:
        raise BadImageError(path, "empty file")
    return _decode(path, min_side)[0]


# --- thumbnails -----------------------------------------------------------------


def thumbnail_path(project: Project, sha: str) -> Path:
    """Where the thumbnail of the image with this sha256 lives: ``thumbs/<sha[:2]>/<sha>.jpg``."""
    return project.thumbs_dir / sha[:2] / f"{sha}.jpg"


def _write_thumbnail(rgb: Image.Image, dest: Path) -> None:
    """Shrink ``rgb`` in place to at most THUMB_SIZE px and save it atomically as JPEG."""
    rgb.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BICUBIC, reducing_gap=2.0)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
    rgb.save(tmp, "JPEG", quality=THUMB_QUALITY)
    os.replace(tmp, dest)


def ensure_thumbnail(project: Project, image_row: dict) -> Path:
    """Return the thumbnail of an ``images`` row, regenerating it from the image file if missing.

    Raises
    ------
    BadImageError
        When the thumbnail is missing and the image file can no longer be read.
    """
    dest = thumbnail_path(project, image_row["sha256"])
    if not dest.exists():
        _write_thumbnail(load_rgb(image_row["path"]), dest)
    return dest


# --- walking sources --------------------------------------------------------------


@dataclass
class _Candidate:
    """One image file to import (possibly a zip entry already extracted to a temp file)."""

    read_path: str  # the file to hash and decode now
    shown: str  # the path recorded in skipped_files and reports
    root: str  # the import root
    rel_path: str  # posix path below root
    skip_root: str  # root recorded in skipped_files
    sha: str | None = None  # known already (zip entries are hashed while extracted)
    final: str | None = None  # for zip entries: where read_path moves if the image is added
    in_files_dir: bool = False  # already under project.files_dir (no copy needed)


@dataclass
class _Skip:
    shown: str
    root: str
    reason: str


def _abspath(p: str | os.PathLike) -> str:
    """Absolute, normalised path without resolving symlinks."""
    return os.path.abspath(os.path.expanduser(os.fspath(p)))


def _walk(top: str, prune_real: set[str]) -> Iterator[tuple[str, str]]:
    """Stream ``(absolute path, posix path relative to top)`` of the files below ``top``.

    Sorted per folder; follows symlinked folders once (loops are cut); skips the
    folders in ``prune_real`` (real paths), e.g. the project itself.
    """
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen or real in prune_real:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, top)
        for name in sorted(filenames):
            rel = name if rel_dir == "." else os.path.join(rel_dir, name)
            yield os.path.join(dirpath, name), Path(rel).as_posix()


def _safe_member(name: str) -> str | None:
    """The normalised posix path of a zip entry, or None if it would land outside the target."""
    n = name.replace("\\", "/")
    if n.startswith("/") or _DRIVE_RE.match(n) or "\x00" in n:
        return None
    parts: list[str] = []
    for part in n.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    if not parts:
        return None
    rel = "/".join(parts)
    if os.path.isabs(rel) or os.path.splitdrive(rel)[0]:
        return None
    return rel


def _zip_image_members(zf: zipfile.ZipFile) -> Iterator[zipfile.ZipInfo]:
    for info in zf.infolist():
        if info.is_dir() or not is_image_name(info.filename):
            continue
        if info.filename.replace("\\", "/").split("/")[0] == "__MACOSX":  # macOS resource forks
            continue
        yield info


def _count_zip(path: str) -> tuple[int, int]:
    """(image entries, their bytes once unpacked) of one zip archive."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = list(_zip_image_members(zf))
            return len(members), sum(i.file_size for i in members)
    except (OSError, zipfile.BadZipFile, ValueError, RuntimeError):
        return 1, 0


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _iter_zip(project: Project, zip_path: str, budget: _Budget) -> Iterator[_Candidate | _Skip]:
    """Extract the safe image entries of one archive, one at a time, into ``files/<stem>-<sha8>/``.

    Each entry is streamed to a ``.part`` file while hashed; the consumer moves it
    into place if the image is added and deletes it otherwise. Before an entry is
    extracted it is checked against the import's byte budget, the free disk and for
    padding (far more bytes than its image data), so a refused entry writes nothing.
    """
    zip_root = os.path.dirname(zip_path)
    try:
        sha8 = _sha256_file(zip_path)[:8]
        zf = zipfile.ZipFile(zip_path)
    except (OSError, zipfile.BadZipFile, ValueError, RuntimeError) as exc:
        yield _Skip(zip_path, zip_root, f"not a readable zip archive: {_short(exc)}")
        return
    target = project.files_dir / f"{Path(zip_path).stem}-{sha8}"
    target_real = os.path.realpath(target)
    with zf:
        for info in _zip_image_members(zf):
            shown = f"{zip_path}/{info.filename}"
            rel = _safe_member(info.filename)
            dest = os.path.join(target, *rel.split("/")) if rel else None
            if dest is None or not os.path.realpath(dest).startswith(target_real + os.sep):
                yield _Skip(
                    shown,
                    zip_path,
                    f"unsafe path in zip archive: {info.filename!r} would land outside the extraction folder",
                )
                continue
            if info.file_size > ZIP_MAX_ENTRY_BYTES:
                yield _Skip(shown, zip_path, _zip_too_large(info.file_size))
                continue
            if info.file_size == 0:
                yield _Skip(shown, zip_path, "empty file")
                continue
            if info.file_size > budget.left:
                yield _Skip(shown, zip_path, over_cap_message(shown, budget.used + info.file_size, budget.cap))
                continue
            short = _disk_short(project.files_dir, info.file_size)
            if short:
                yield _Skip(shown, zip_path, short)
                continue
            padded = _zip_padding_reason(zf, info)
            if padded:
                yield _Skip(shown, zip_path, padded)
                continue
            part = f"{dest}.part"
            try:
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                sha = _extract_entry(zf, info, part, min(ZIP_MAX_ENTRY_BYTES, budget.left))
            except _TooLarge as exc:
                _unlink(part)
                if exc.size > ZIP_MAX_ENTRY_BYTES:
                    reason = _zip_too_large(exc.size)
                else:
                    reason = over_cap_message(shown, budget.used + exc.size, budget.cap)
                yield _Skip(shown, zip_path, reason)
                continue
            except (OSError, zipfile.BadZipFile, ValueError, RuntimeError, EOFError) as exc:
                _unlink(part)
                if info.flag_bits & 0x1:
                    reason = "encrypted zip entry: cannot read it without the password"
                elif isinstance(exc, OSError) and not isinstance(exc, EOFError):
                    reason = f"cannot extract zip entry: {exc.strerror or _short(exc)}"
                else:
                    reason = f"corrupt zip entry: {_short(exc)}"
                yield _Skip(shown, zip_path, reason)
                continue
            yield _Candidate(
                read_path=part,
                shown=shown,
                root=str(target),
                rel_path=rel,
                skip_root=zip_path,
                sha=sha,
                final=dest,
                in_files_dir=True,
            )


class _TooLarge(Exception):
    def __init__(self, size: int):
        self.size = size


def _zip_too_large(size: int) -> str:
    mb = ZIP_MAX_ENTRY_BYTES / (1024 * 1024)
    return (
        f"zip entry too large: {size / (1024 * 1024):,.0f} MB uncompressed is over the {mb:,.0f} MB limit "
        "(a possible zip bomb)"
    )


def _zip_padding_reason(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str | None:
    """:func:`padding_reason` of a zip entry, read from the archive (nothing is written)."""
    try:
        with zf.open(info) as fp:
            return padding_reason(fp, info.file_size)
    except Exception:  # unreadable here: extraction reports why
        return None


def _extract_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, part: str, limit: int = ZIP_MAX_ENTRY_BYTES) -> str:
    """Stream one entry to ``part`` (never more than ``limit`` bytes) and return its sha256."""
    h = hashlib.sha256()
    written = 0
    with zf.open(info) as src, open(part, "wb") as dst:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > limit:
                raise _TooLarge(written)
            h.update(chunk)
            dst.write(chunk)
    return h.hexdigest()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _iter_source(project: Project, source: str, prune_real: set[str], budget: _Budget) -> Iterator[_Candidate | _Skip]:
    """Candidates and skips of one (absolute, existing) source."""
    files_real = os.path.realpath(project.files_dir) + os.sep
    if os.path.isdir(source):
        for path, rel in _walk(source, prune_real):
            ext = os.path.splitext(path)[1].lower()
            if ext == ".zip":
                yield from _iter_zip(project, path, budget)
            elif ext in IMAGE_EXTENSIONS:
                yield _Candidate(
                    path, path, source, rel, source, in_files_dir=os.path.realpath(path).startswith(files_real)
                )
        return
    root = os.path.dirname(source)
    ext = os.path.splitext(source)[1].lower()
    if ext == ".zip":
        yield from _iter_zip(project, source, budget)
    elif ext in IMAGE_EXTENSIONS:
        yield _Candidate(
            source,
            source,
            root,
            os.path.basename(source),
            root,
            in_files_dir=os.path.realpath(source).startswith(files_real),
        )
    else:
        yield _Skip(source, root, f"not an image file: extension {ext or '(none)'!r} is not one of {_EXT_LIST}")


def _count_source(source: str, prune_real: set[str], job: Job, copy: bool, files_real: str) -> tuple[int, int]:
    """(files to look at, bytes the import would write into the project) of one source."""

    def copied(path: str) -> int:
        if not copy or os.path.realpath(path).startswith(files_real):
            return 0
        try:
            return os.path.getsize(path)
        except OSError:
            return 0

    if not os.path.isdir(source):
        if source.lower().endswith(".zip"):
            return _count_zip(source)
        return 1, copied(source) if is_image_name(source) else 0
    n = nbytes = 0
    for i, (path, _rel) in enumerate(_walk(source, prune_real)):
        if i % 10_000 == 9_999:
            job.check_cancel()
        ext = os.path.splitext(path)[1].lower()
        if ext == ".zip":
            k, b = _count_zip(path)
            n, nbytes = n + k, nbytes + b
        elif ext in IMAGE_EXTENSIONS:
            n, nbytes = n + 1, nbytes + copied(path)
    return n, nbytes


# --- the import -------------------------------------------------------------------


def _folder_label(rel_path: str) -> str | None:
    parts = PurePosixPath(rel_path).parts
    return parts[-2] if len(parts) >= 2 else None


def _copy_into_project(project: Project, cand: _Candidate, sha: str) -> tuple[str, str, str]:
    """Copy a file into ``files/uploads/`` keeping its relative path; returns (path, root, rel_path)."""
    root = project.files_dir / UPLOADS_DIRNAME
    rel = PurePosixPath(cand.rel_path)
    dest = root.joinpath(*rel.parts)
    if dest.exists():  # another file had this name: make it unique by content
        rel = rel.with_name(f"{rel.stem}-{sha[:8]}{rel.suffix}")
        dest = root.joinpath(*rel.parts)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")
    shutil.copyfile(cand.read_path, tmp)
    os.replace(tmp, dest)
    return str(dest), str(root), rel.as_posix()


_UPSERT_SKIPPED = (
    "insert into skipped_files (path, root, reason, time) values (?, ?, ?, ?) "
    "on conflict(path) do update set root = excluded.root, reason = excluded.reason, time = excluded.time"
)


def _root_id(project: Project, root: str, kind: str, source: str, run_id: int, known: dict[str, int]) -> int:
    """The ``import_roots`` id of ``root`` (recorded now, with its kind and source, if it is new).

    A root whose images moved with the project (a rename or an archive import rewrites ``images.root``) is
    found by its images, and its recorded path follows them.
    """
    if root in known:
        return known[root]
    row = project.db.execute("select id from import_roots where path = ?", [root]).fetchone()
    if row is None:
        row = project.db.execute(
            "select root_id from images where root = ? and root_id is not null limit 1", [root]
        ).fetchone()
        if row is not None:
            project.db.conn.execute("update import_roots set path = ? where id = ?", [root, row[0]])
    if row is None:
        cur = project.db.conn.execute(
            "insert into import_roots (path, kind, source, run_id, created_at) values (?, ?, ?, ?, ?)",
            [root, kind, source, run_id, now()],
        )
        known[root] = int(cur.lastrowid)
    else:
        known[root] = int(row[0])
    return known[root]


def import_roots(project: Project) -> list[dict]:
    """The project's import roots, oldest first: the folders image ``rel_path`` values are relative to.

    Returns
    -------
    list of dict
        ``{"id", "path", "kind", "source", "run_id", "created_at", "images"}``: ``kind`` is ``folder`` (a folder
        given to import, or the folder of image files given one by one), ``zip`` (the folder a ``.zip`` was
        unpacked into; ``source`` is the archive) or ``uploads`` (files copied into the project); None for
        roots of images imported before roots were recorded. ``images`` counts the images under it (any status).
    """
    sql = (
        "select r.id, r.path, r.kind, r.source, r.run_id, r.created_at, "
        "(select count(*) from images i where i.root_id = r.id) from import_roots r order by r.id"
    )
    keys = ("id", "path", "kind", "source", "run_id", "created_at", "images")
    return [dict(zip(keys, row, strict=True)) for row in project.db.execute(sql)]


def _flush(
    project: Project,
    rows: list[dict],
    skips: list[_Skip],
    ok_paths: list[str],
    report: ImportReport,
    roots: dict[str, tuple[str, str]] | None = None,
    known: dict[str, int] | None = None,
) -> None:
    """Commit one batch: record new import roots, insert new image rows, point restored ones at their new file,
    record skips. ``roots``: root → (kind, source) of the roots this import found."""
    db = project.db
    restores = [r for r in rows if "id" in r]
    new = [r for r in rows if "id" not in r]
    roots = roots or {}
    known = {} if known is None else known
    with db.conn:
        for r in rows:
            kind, source = roots.get(r["root"], ("folder", r["root"]))
            r["root_id"] = _root_id(project, r["root"], kind, source, report.run_id, known)
        if new:
            before = db.conn.total_changes
            # ignore=True: another import may have added the same sha256 meanwhile.
            db["images"].insert_all(new, ignore=True)
            report.added += db.conn.total_changes - before
        for r in restores:
            cur = db.conn.execute(
                "update images set path = ?, rel_path = ?, root = ?, root_id = ?, folder_label = ?, status = 'ok' "
                "where id = ? and status = 'missing'",
                [r["path"], r["rel_path"], r["root"], r["root_id"], r["folder_label"], r["id"]],
            )
            report.restored += cur.rowcount
        if skips:
            t = now()
            db.conn.executemany(_UPSERT_SKIPPED, [(s.shown, s.root, s.reason, t) for s in skips])
        if ok_paths:  # a file that was skipped before and now imports is no longer "skipped"
            db.conn.executemany("delete from skipped_files where path = ?", [(p,) for p in ok_paths])
    rows.clear()
    skips.clear()
    ok_paths.clear()


def import_sources(
    project: Project,
    sources: Sequence[str | os.PathLike],
    *,
    on_progress: ProgressCallback | None = None,
    copy: bool = False,
    batch_size: int = 256,
    max_bytes: int | None = None,
) -> ImportReport:
    """Import image files from folders, single files and zip archives into ``project``.

    Folders are walked recursively (zip archives inside them included); other
    files in folders are ignored. Each image is identified by the sha256 of its
    bytes, so importing the same files again adds nothing. New images are
    decoded once to validate them and to write their thumbnail; files that
    cannot be read are recorded in ``skipped_files`` and skipped. Rows are
    committed every ``batch_size`` files, so a cancelled or killed import keeps
    what it committed and a rerun finishes the rest.

    Parameters
    ----------
    project : Project
        The open project.
    sources : sequence of str or PathLike
        Folders, image files (jpg, jpeg, png, webp, bmp, gif, tif, tiff in any
        case) and ``.zip`` archives. Zip contents are extracted into
        ``project.files_dir``; unsafe entry paths and entries over 512 MB are refused.
        An image file with far more bytes than its image data (padded, e.g. an 8×8 PNG
        followed by 480 MB of zeros) is skipped with the reason "padded image".
    on_progress : callable, optional
        ``on_progress(done, total, message)`` called once per batch.
    copy : bool
        Copy the files into ``project.files_dir/uploads`` (for browser uploads)
        instead of referencing them where they are.
    batch_size : int
        Files handled between commits and progress reports.
    max_bytes : int, optional
        The most bytes this import may write into the project (zip contents and copied files;
        images imported by reference cost nothing). Default: :func:`max_import_bytes` (20 GB, or
        ``$LABELER_MAX_IMPORT_BYTES``). Files past it are skipped with a reason naming the limit.

    Returns
    -------
    ImportReport
        Counts of added and duplicate images, the skipped files with reasons, and the run id.

    Raises
    ------
    InvalidInputError
        When no source is given or a source does not exist (before any work is done); when the
        sources would write more than ``max_bytes`` or than the free disk allows (before any file is written).
    JobCancelled
        When the job was cancelled; committed batches are kept.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if not sources:
        raise InvalidInputError("no sources to import: give one or more folders, image files or .zip archives")
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be at least 1, not {batch_size}")
    abs_sources = [_abspath(s) for s in sources]
    for given, path in zip(sources, abs_sources, strict=True):
        if not os.path.exists(path):
            raise InvalidInputError(
                f"import source {os.fspath(given)!r} does not exist ({path}): check the path and try again"
            )
    cap = max_import_bytes() if max_bytes is None else int(max_bytes)
    if cap <= 0:
        raise InvalidInputError(f"max_bytes must be more than 0, not {max_bytes}")
    budget = _Budget(cap)
    # Never import the project's own files (thumbnails!) when a parent folder is given.
    prune_real = {os.path.realpath(project.root)}
    files_real = os.path.realpath(project.files_dir) + os.sep

    report = ImportReport()
    with Job.start(project, "import", params={"sources": abs_sources, "copy": copy}, on_progress=on_progress) as job:
        report.run_id = job.id
        counted = [_count_source(s, prune_real, job, copy, files_real) for s in abs_sources]
        total = sum(n for n, _ in counted)
        planned = sum(b for _, b in counted)
        if planned > cap:  # refused before anything is written
            biggest = max(zip(abs_sources, counted, strict=True), key=lambda sc: sc[1][1])[0]
            raise InvalidInputError(over_cap_message(biggest, planned, cap))
        if planned:
            check_free_disk(project.files_dir, planned, abs_sources[0] if len(abs_sources) == 1 else "this import")
        job.progress(0, total, f"importing {total} files", force=True)
        rows: list[dict] = []
        skips: list[_Skip] = []
        ok_paths: list[str] = []
        pending: set[str] = set()  # sha256 of the rows not committed yet
        roots: dict[str, tuple[str, str]] = {}  # import root → (kind, source), recorded with the first image
        known: dict[str, int] = {}  # import root → its import_roots id
        uploads = str(project.files_dir / UPLOADS_DIRNAME)
        done = 0

        def end_batch() -> None:
            _flush(project, rows, skips, ok_paths, report, roots, known)
            pending.clear()
            job.progress(done, max(total, done), _message(report))

        for source in abs_sources:
            for item in _iter_source(project, source, prune_real, budget):
                if isinstance(item, _Skip):
                    skips.append(item)
                    report.skipped.append({"path": item.shown, "reason": item.reason})
                else:
                    try:
                        outcome = _import_one(project, item, pending, copy, budget)
                    finally:
                        if item.final is not None:
                            _unlink(item.read_path)  # a zip entry's .part file, if not moved into place
                    if isinstance(outcome, _Skip):
                        skips.append(outcome)
                        report.skipped.append({"path": outcome.shown, "reason": outcome.reason})
                    elif outcome is None:
                        report.duplicates += 1
                        ok_paths.append(item.shown)
                    else:
                        if outcome["root"] not in roots:
                            if outcome["root"] == uploads:
                                roots[outcome["root"]] = ("uploads", item.root)
                            elif item.final is not None:
                                roots[outcome["root"]] = ("zip", item.skip_root)
                            else:
                                roots[outcome["root"]] = ("folder", source)
                        rows.append(outcome)
                        pending.add(outcome["sha256"])
                        ok_paths.append(item.shown)
                done += 1
                if done % batch_size == 0:
                    end_batch()
        _flush(project, rows, skips, ok_paths, report, roots, known)
        job.update_metrics(added=report.added, duplicates=report.duplicates, skipped=len(report.skipped))
        job.progress(max(total, done), max(total, done), _message(report), force=True)
    return report


def _message(report: ImportReport) -> str:
    restored = f", {report.restored} missing files found again" if report.restored else ""
    return f"{report.added} added, {report.duplicates} duplicates, {len(report.skipped)} skipped{restored}"


def _import_one(
    project: Project, cand: _Candidate, pending: set[str], copy: bool, budget: _Budget
) -> dict | _Skip | None:
    """Hash, dedupe, validate and thumbnail one file. Returns its images row, a skip, or None for a duplicate."""
    try:
        size = os.path.getsize(cand.read_path)
        if size == 0:
            return _Skip(cand.shown, cand.skip_root, "empty file")
        if cand.final is None:  # zip entries were checked before they were extracted
            padded = _file_padding_reason(cand.read_path, size)
            if padded:
                return _Skip(cand.shown, cand.skip_root, padded)
        sha = cand.sha or _sha256_file(cand.read_path)
    except OSError as exc:
        return _Skip(cand.shown, cand.skip_root, f"cannot read file: {exc.strerror or _short(exc)}")
    existing = project.db.execute("select id, status from images where sha256 = ?", [sha]).fetchone()
    if sha in pending or (existing is not None and existing[1] != "missing"):
        return None
    try:
        rgb, fmt = _decode(cand.read_path)
    except BadImageError as exc:
        return _Skip(cand.shown, cand.skip_root, exc.reason)
    width, height = rgb.size
    copying = cand.final is None and copy and not cand.in_files_dir
    if copying:
        if size > budget.left:
            return _Skip(cand.shown, cand.skip_root, over_cap_message(cand.shown, budget.used + size, budget.cap))
        short = _disk_short(project.files_dir, size)
        if short:
            return _Skip(cand.shown, cand.skip_root, short)
    _write_thumbnail(rgb, thumbnail_path(project, sha))
    del rgb
    path, root, rel_path = cand.read_path, cand.root, cand.rel_path
    try:
        if cand.final is not None:
            os.replace(cand.read_path, cand.final)
            path = cand.final
            budget.used += size
        elif copying:
            path, root, rel_path = _copy_into_project(project, cand, sha)
            budget.used += size
    except OSError as exc:
        return _Skip(cand.shown, cand.skip_root, f"cannot store the file in the project: {exc.strerror or _short(exc)}")
    return {
        "sha256": sha,
        "path": path,
        "rel_path": rel_path,
        "root": root,
        "folder_label": _folder_label(rel_path),
        "width": width,
        "height": height,
        "format": fmt,
        "bytes": size,
        "status": "ok",
        "added_at": now(),
    } | ({"id": existing[0]} if existing is not None else {})


def thumbnail_for(project: Project, image_id: int, sha256: str, path: str | None = None) -> str | None:
    """The cached thumbnail file of an image (made again from the image if it went missing), or None."""

    dest = thumbnail_path(project, sha256)
    if dest.exists():
        return str(dest)
    if path is None:
        row = project.db.execute("select path from images where id = ?", [int(image_id)]).fetchone()
        path = row[0] if row else None
    if path is None:
        return None
    try:
        return str(ensure_thumbnail(project, {"sha256": sha256, "path": path}))
    except (BadImageError, OSError):
        return None
