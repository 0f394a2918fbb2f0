"""The --compare image: both zoomed crops the same size, at the same place under their panels."""

import numpy as np
import pytest

from tfdeblur.data.image_io import read_image
from tfdeblur.infer.compare import GAP, comparison_image


def _bottom_row_boxes(canvas, panel_h, column):
    """Per column: (first, last) x of the non-white pixels of the crop row, relative to
    the column, and their height."""
    bottom = canvas[panel_h + GAP :]
    boxes = []
    for i in range(2):
        part = bottom[:, i * (column + GAP) : i * (column + GAP) + column]
        cols = np.flatnonzero((part < 1.0).any(axis=(0, 2)))
        rows = np.flatnonzero((part < 1.0).any(axis=(1, 2)))
        boxes.append((cols[0], cols[-1], rows[-1] - rows[0] + 1))
    return boxes


@pytest.mark.parametrize("crop", [(300, 200, 180), None])
def test_zoomed_crops_are_equal_and_aligned_on_a_real_pair(gopro_samples, crop):
    blurry = read_image(gopro_samples / "Istanbul_blur1.png")
    sharp = read_image(gopro_samples / "Istanbul_sharp1.png")
    height, width = blurry.shape[:2]
    canvas = comparison_image(blurry, sharp, crop=crop, labels=None)

    # The layout from the docstring: panels scaled to fit 1600 px, crop zoomed by an integer.
    scale = min(1.0, (1600 - GAP) / (2 * width))
    panel_w, panel_h = round(width * scale), round(height * scale)
    size = crop[2] if crop else min(max(min(height, width) // 4, 16), 256)
    zoom = max(1, panel_w // size)
    side = size * zoom
    column = max(panel_w, side)
    assert canvas.shape == (panel_h + GAP + side, 2 * column + GAP, 3)

    (l0, l1, lh), (r0, r1, rh) = _bottom_row_boxes(canvas, panel_h, column)
    assert (l0, l1, lh) == (r0, r1, rh)  # same size, same offset in its column
    assert l1 - l0 + 1 == side and lh == side
    assert l0 == (column - side) // 2  # centred under the panel: no one-sided white band

    if crop:  # by value: each crop is the nearest-neighbour zoom of its source square
        top, left, size = crop
        x = (column - side) // 2
        bottom = canvas[panel_h + GAP :]
        for i, image in enumerate((blurry, np.clip(sharp, 0, 1))):
            expected = np.kron(
                image[top : top + size, left : left + size], np.ones((zoom, zoom, 1))
            )
            got = bottom[:, i * (column + GAP) + x : i * (column + GAP) + x + side]
            np.testing.assert_array_equal(got, expected.astype(np.float32))
