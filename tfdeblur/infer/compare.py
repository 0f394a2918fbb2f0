"""Before/after comparison images: the two side by side, and a zoomed crop of each below.

Layout (``tfdeblur deblur --compare``)::

    +---------------------+---+---------------------+
    | blurry (scaled)     |   | deblurred (scaled)  |   the crop is outlined on both
    +---------------------+---+---------------------+
    | blurry crop, zoomed |   | deblurred crop, ... |   nearest-neighbour zoom: pixels stay visible
    +---------------------+---+---------------------+

The crop is, unless given, the square where the network changed the image most (largest
summed absolute difference between before and after), which is where a reader wants to
look.
"""

from __future__ import annotations

import numpy as np

#: Outline colour of the crop and the gap between panels (RGB in [0, 1]).
OUTLINE = (1.0, 0.15, 0.1)
GAP = 8


def pick_crop(before: np.ndarray, after: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size x size`` window where ``after`` differs most from ``before``.

    The score of a window is the sum of ``|after - before|`` over its pixels and channels
    (computed with an integral image, every position considered); ties go to the first
    window in row-major order.

    Args:
        before: ``(H, W, C)`` image.
        after: same shape.
        size: window side, at most ``min(H, W)``.

    Returns:
        ``(top, left)``.
    """
    before = np.asarray(before, dtype=np.float64)
    after = np.asarray(after, dtype=np.float64)
    if before.shape != after.shape:
        raise ValueError(f"pick_crop: shapes differ, {before.shape} vs {after.shape}.")
    height, width = before.shape[:2]
    if not 1 <= size <= min(height, width):
        raise ValueError(f"pick_crop: size must be in [1, {min(height, width)}], got {size}.")
    diff = np.abs(after - before)
    if diff.ndim == 3:
        diff = diff.sum(axis=-1)
    integral = np.pad(diff.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    scores = (
        integral[size:, size:]
        - integral[:-size, size:]
        - integral[size:, :-size]
        + integral[:-size, :-size]
    )
    top, left = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return int(top), int(left)


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-style downscale with Pillow (per channel, float32, values preserved in range)."""
    if image.shape[:2] == (height, width):
        return image
    from PIL import Image

    channels = [
        np.asarray(
            Image.fromarray(image[..., c].astype(np.float32), mode="F").resize(
                (width, height), Image.Resampling.BOX
            )
        )
        for c in range(image.shape[-1])
    ]
    return np.stack(channels, axis=-1)


def _outline(image: np.ndarray, top: int, left: int, height: int, width: int, thick: int) -> None:
    bottom, right = top + height, left + width
    color = np.asarray(OUTLINE, dtype=image.dtype)
    image[max(top - thick, 0) : top, max(left - thick, 0) : right + thick] = color
    image[bottom : bottom + thick, max(left - thick, 0) : right + thick] = color
    image[max(top - thick, 0) : bottom + thick, max(left - thick, 0) : left] = color
    image[max(top - thick, 0) : bottom + thick, right : right + thick] = color


def _label(image: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` in the top-left corner on a dark box (Pillow's default font)."""
    from PIL import Image, ImageDraw, ImageFont

    pil = Image.fromarray(np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    try:  # scalable default font (Pillow >= 10.1), about 1/25 of the panel height
        font = ImageFont.load_default(size=max(10, image.shape[0] // 25))
    except TypeError:  # pragma: no cover - older Pillow: the fixed bitmap font
        font = ImageFont.load_default()
    box = draw.textbbox((4, 2), text, font=font)
    draw.rectangle((0, 0, box[2] + 4, box[3] + 3), fill=(0, 0, 0))
    draw.text((4, 2), text, fill=(255, 255, 255), font=font)
    return np.asarray(pil, dtype=np.float32) / 255.0


def comparison_image(
    before: np.ndarray,
    after: np.ndarray,
    *,
    crop: tuple[int, int, int] | None = None,
    max_width: int = 1600,
    labels: tuple[str, str] | None = ("blurry", "deblurred"),
) -> np.ndarray:
    """A side-by-side comparison with zoomed crops, as float32 ``(H', W', 3)`` in ``[0, 1]``.

    Args:
        before: ``(H, W, 3)`` (or ``(H, W)``) float image in ``[0, 1]``, the input.
        after: the output, same shape (clamped here).
        crop: ``(top, left, size)`` of the square to zoom into; default: a square of side
            ``clip(min(H, W) // 4, 16, 256)`` (the whole image when smaller) chosen by
            :func:`pick_crop`.
        max_width: width of the top row at most (panels are downscaled to fit, never
            upscaled). Default 1600.
        labels: captions of the two columns, or None for none.

    Returns:
        The comparison image. The top row holds the two images, each scaled by
        ``s = min(1, (max_width - GAP) / (2 W))``; the bottom row the two crops, each
        zoomed by the integer ``z = max(1, floor(panel width / size))`` with
        nearest-neighbour (every source pixel becomes a ``z x z`` block). Each column is
        ``max(panel width, z * size)`` wide with its panel and its crop centred in it, so
        the two crops are the same size at the same place under their panels.
    """
    before = np.asarray(before, dtype=np.float32)
    after = np.clip(np.asarray(after, dtype=np.float32), 0.0, 1.0)
    if before.ndim == 2:
        before = np.repeat(before[..., None], 3, axis=-1)
    if after.ndim == 2:
        after = np.repeat(after[..., None], 3, axis=-1)
    if before.shape != after.shape or before.ndim != 3:
        raise ValueError(
            f"comparison_image: before {before.shape} and after {after.shape} must be "
            "the same (H, W, 3) shape."
        )
    height, width = before.shape[:2]
    if crop is None:
        size = min(max(min(height, width) // 4, 16), 256, height, width)
        top, left = pick_crop(before, after, size)
    else:
        top, left, size = (int(v) for v in crop)
        if size < 1 or top < 0 or left < 0 or top + size > height or left + size > width:
            raise ValueError(
                f"comparison_image: crop {crop} is outside the {height}x{width} image."
            )

    scale = min(1.0, (max_width - GAP) / (2 * width))
    panel_h, panel_w = max(1, round(height * scale)), max(1, round(width * scale))
    zoom = max(1, panel_w // size)
    thick = max(1, round(2 / scale)) if scale < 1 else 2

    panels, zooms = [], []
    for image in (before, after):
        crop_pixels = image[top : top + size, left : left + size]
        zoomed = np.repeat(np.repeat(crop_pixels, zoom, axis=0), zoom, axis=1)
        marked = image.copy()
        _outline(marked, top, left, size, size, thick)
        panels.append(_resize(marked, panel_h, panel_w))
        zooms.append(zoomed)
    if labels is not None:
        panels = [_label(p, text) for p, text in zip(panels, labels, strict=True)]

    # Two equal columns; in each, the panel and the zoomed crop are centred, so both crops
    # have the same size and the same place under their panels.
    zoom_side = size * zoom
    column = max(panel_w, zoom_side)
    canvas = np.ones((panel_h + GAP + zoom_side, 2 * column + GAP, 3), dtype=np.float32)
    panel_x, zoom_x = (column - panel_w) // 2, (column - zoom_side) // 2
    for i in range(2):
        x = i * (column + GAP)
        canvas[:panel_h, x + panel_x : x + panel_x + panel_w] = panels[i]
        canvas[panel_h + GAP :, x + zoom_x : x + zoom_x + zoom_side] = zooms[i]
    return canvas
