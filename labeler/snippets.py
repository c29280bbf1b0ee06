"""CDUL's snippets: an image cut into a ``grid × grid`` tiling, and the view that turns it into model inputs.

Pure Python on sizes (:func:`snippet_boxes`, also ``labeler.methods.cdul.snippet_boxes``) and a picklable
transform (:class:`SnippetView`) that :func:`labeler.features.compute_snippet_features` runs in its
DataLoader; kept apart from :mod:`labeler.methods.cdul` so that the feature code needs nothing of the method
registry.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

from .errors import InvalidInputError

#: Snippet grid of the paper and the reproduction (3 × 3 crops).
DEFAULT_GRID = 3
#: The largest grid accepted (a 16 × 16 grid is already 256 forwards per image).
MAX_GRID = 16


def snippet_boxes(width: int, height: int, grid: int = DEFAULT_GRID) -> list[tuple[int, int, int, int]]:
    """The ``grid × grid`` crops of a ``width × height`` image, row by row: (left, top, right, bottom).

    The boxes tile the image exactly once (no gap, no overlap): column ``j`` spans
    ``[j·⌊W/grid⌋, (j+1)·⌊W/grid⌋)``, the last column ending at ``W`` (it takes the remainder); rows alike.
    (The reproduction cuts ⌊W/3⌋ × ⌊H/3⌋ tiles and drops the remainder.)

    Parameters
    ----------
    width, height : int
        Image size in pixels, each at least ``grid`` (every crop must hold a pixel).
    grid : int
        Crops per side (>= 1).

    Returns
    -------
    list of grid² tuples (left, top, right, bottom), right/bottom exclusive.

    Raises
    ------
    InvalidInputError
        A non-integer or too small size or grid.
    """
    for name, value in (("width", width), ("height", height), ("grid", grid)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
            raise InvalidInputError(f"snippet {name} must be a positive integer, got {value!r}")
    w, h, g = int(width), int(height), int(grid)
    if w < g or h < g:
        raise InvalidInputError(
            f"an image of {w}×{h} pixels cannot be cut into {g}×{g} snippets (each side needs at least {g} pixels)"
        )

    def cuts(n: int) -> list[int]:
        step = n // g
        return [k * step for k in range(g)] + [n]

    xs, ys = cuts(w), cuts(h)
    return [(xs[j], ys[i], xs[j + 1], ys[i + 1]) for i in range(g) for j in range(g)]


def check_grid(grid) -> int:
    """``grid`` as an int in 1..:data:`MAX_GRID`; InvalidInputError naming the field otherwise."""
    if isinstance(grid, bool) or not isinstance(grid, numbers.Integral) or not 1 <= int(grid) <= MAX_GRID:
        raise InvalidInputError(f"snippet grid must be an integer from 1 to {MAX_GRID}, got {grid!r}")
    return int(grid)


def forwards_per_image(grid: int) -> int:
    """Model forwards CDUL needs per image: the whole image plus ``grid²`` snippets."""
    return check_grid(grid) ** 2 + 1


def snippet_cost(n_images: int, grid: int = DEFAULT_GRID) -> str:
    """What a snippet run costs, in words (said before one starts, by the CLI and the app)."""
    g = check_grid(grid)
    s = g * g
    return (
        f"CDUL: {s + 1} forwards per image (the whole image + {g}×{g} = {s} snippets); "
        f"{n_images} images → {n_images * s} snippet forwards (the whole-image features are the CLIP features)"
    )


class SnippetView:
    """PIL image → tensor (grid², 3, H, W): each crop of :func:`snippet_boxes` through ``preprocess``.

    An image smaller than ``grid`` pixels on a side is first enlarged (nearest neighbour) to ``grid`` pixels on
    that side, so that every crop holds at least one pixel. Picklable (runs in DataLoader workers).
    """

    def __init__(self, preprocess: Callable[[Any], Any], grid: int = DEFAULT_GRID):
        self.preprocess = preprocess
        self.grid = check_grid(grid)

    def __call__(self, image):
        import torch
        from PIL import Image

        w, h = image.size
        if w < self.grid or h < self.grid:
            image = image.resize((max(w, self.grid), max(h, self.grid)), Image.NEAREST)
            w, h = image.size
        return torch.stack([self.preprocess(image.crop(box)) for box in snippet_boxes(w, h, self.grid)])
