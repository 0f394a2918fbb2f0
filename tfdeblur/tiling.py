"""Tiled inference for images larger than the accelerator takes in one pass.

The image is cut into overlapping tiles of one size, each tile is run through the network
on its own, and the outputs are blended back with a window that is a partition of unity,
so the result is a convex combination of tile outputs and no seam appears.

The window, along each axis, for two neighbouring tiles that overlap on ``[s, e)``
(``e - s >= overlap``, centre ``c = (s + e) / 2``):

* pixels closer than ``overlap / 4`` to a tile's *inner* edge (an edge that is not the
  image border) get weight 0 from that tile: their output saw the zero padding of the
  tile border instead of the real neighbourhood;
* across the middle half of the overlap, ``[c - overlap/4, c + overlap/4)``, one tile's
  weight falls from 1 to 0 along a raised cosine while its neighbour's rises from 0 to 1;
* elsewhere the weight is 1.

The 2-D weight of a tile is the product of its two 1-D windows, and the accumulated output
is divided by the accumulated weight (which is 1 up to rounding, since the windows along
each axis sum to 1). Hence: with an identity network tiling returns the input; and for a
network whose receptive field reaches at most ``overlap / 4`` pixels from the output
pixel (e.g. four stacked 3x3 convolutions for ``overlap = 16``), the tiled output equals
the untiled one (up to float rounding). Real deblurring networks see much further
(multi-scale, attention, pooling); for them tiles differ slightly from a single pass and
the cross-fade hides the difference.

Tiles are placed evenly: ``n = ceil((L - T) / (T - overlap)) + 1`` tiles along an axis of
length ``L`` for tile size ``T``, the first flush with the start, the last flush with the
end, so every tile has the same shape (one TFLite allocation, no re-tracing) and every
overlap is at least ``overlap``. ``overlap <= tile / 2`` keeps the cross-fades of a
tile's two sides apart.

Memory: the network sees one ``T x T`` tile at a time; besides it, the output
accumulator (``H x W x C`` float32) and two 1-D weight sums are kept. ``tile="auto"``
(:func:`auto_tile_size`) picks the largest tile whose estimated working memory fits half
the free memory.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from collections.abc import Callable

import numpy as np

#: Bytes of working memory per input pixel assumed when a runner has no estimate of its
#: own (TFLite and ONNX runners without a probe): 4 bytes x 2048 floats, the order of
#: magnitude of the paper networks (see :func:`estimate_bytes_per_pixel`).
DEFAULT_BYTES_PER_PIXEL = 4 * 2048

#: Fraction of the free memory ``tile="auto"`` allows itself to use.
AUTO_MEMORY_FRACTION = 0.5

#: ``tile="auto"`` rounds the tile side down to a multiple of this, and never goes below
#: :data:`AUTO_MIN_TILE`.
AUTO_TILE_MULTIPLE = 32
AUTO_MIN_TILE = 128


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Evenly spaced tile start offsets along one axis.

    Args:
        length: image size along the axis.
        tile: tile size (clipped to ``length``).
        overlap: minimum overlap between neighbouring tiles.

    Returns:
        Increasing starts; the first is 0, the last ``length - min(tile, length)``.
    """
    tile = min(tile, length)
    if tile >= length:
        return [0]
    stride = tile - overlap
    count = math.ceil((length - tile) / stride) + 1
    span = length - tile
    return [round(i * span / (count - 1)) for i in range(count)]


def _ramp(x: np.ndarray, center: float, half_width: float) -> np.ndarray:
    """Raised cosine from 1 (``x <= center - half_width``) to 0 (``x >= center + half_width``)."""
    if half_width <= 0:
        return (x < center).astype(np.float64)
    t = np.clip((x - (center - half_width)) / (2 * half_width), 0.0, 1.0)
    return 0.5 + 0.5 * np.cos(np.pi * t)


def axis_windows(length: int, tile: int, overlap: int) -> list[tuple[int, np.ndarray]]:
    """``(start, weights)`` of every tile along one axis; the weights sum to 1 at each pixel.

    See the module docstring for the window. Weights are evaluated at pixel centres
    (``x + 0.5``).
    """
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    half = overlap / 4.0
    windows = []
    for i, start in enumerate(starts):
        x = np.arange(start, start + size, dtype=np.float64) + 0.5
        w = np.ones(size, dtype=np.float64)
        if i > 0:  # overlap with the previous tile: [start, previous end)
            center = (start + starts[i - 1] + size) / 2.0
            w *= 1.0 - _ramp(x, center, half)
        if i + 1 < len(starts):  # overlap with the next tile: [next start, end)
            center = (starts[i + 1] + start + size) / 2.0
            w *= _ramp(x, center, half)
        windows.append((start, w))
    return windows


def check_tile_args(tile, overlap) -> tuple[int, int]:
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1:
        raise ValueError(f"tile must be a positive integer, None or 'auto', got {tile!r}.")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, np.integer)) or overlap < 0:
        raise ValueError(f"overlap must be a non-negative integer, got {overlap!r}.")
    if 2 * overlap > tile:
        raise ValueError(
            f"overlap ({overlap}) must be at most half the tile ({tile}); "
            "use a larger --tile or a smaller --overlap."
        )
    return int(tile), int(overlap)


def deblur_tiled(
    runner: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    tile: int,
    overlap: int = 32,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Run ``runner`` over overlapping tiles of ``image`` and blend the outputs.

    Args:
        runner: ``(h, w, C)`` float32 -> ``(h, w, C_out)`` (e.g. from
            :func:`tfdeblur.inference.load_runner`); it is always called with tiles of
            one shape, ``(min(tile, H), min(tile, W), C)``.
        image: ``(H, W, C)`` float image.
        tile: tile side in pixels.
        overlap: minimum overlap between neighbouring tiles, at most ``tile / 2``.
            Default 32.
        progress: called as ``progress(done, total)`` after each tile; optional.

    Returns:
        ``(H, W, C_out)`` float32, unclamped: per pixel a convex combination of the tile
        outputs covering it.

    Raises:
        ValueError: bad ``tile``/``overlap``, or a runner output of the wrong size.
    """
    tile, overlap = check_tile_args(tile, overlap)
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"deblur_tiled: image must be (H, W, C), got shape {image.shape}.")
    height, width = image.shape[:2]
    rows = axis_windows(height, tile, overlap)
    cols = axis_windows(width, tile, overlap)
    out = None
    total, done = len(rows) * len(cols), 0
    for top, wy in rows:
        for left, wx in cols:
            patch = image[top : top + wy.size, left : left + wx.size]
            result = np.asarray(runner(patch), dtype=np.float32)
            if result.shape[:2] != patch.shape[:2]:
                raise ValueError(
                    f"deblur_tiled: the model returned {result.shape} for a tile of shape "
                    f"{patch.shape}; tiling needs an output of the input's size."
                )
            if out is None:
                out = np.zeros((height, width, result.shape[-1]), dtype=np.float32)
            weight = (wy[:, None] * wx[None, :]).astype(np.float32)[..., None]
            out[top : top + wy.size, left : left + wx.size] += weight * result
            done += 1
            if progress is not None:
                progress(done, total)
    # The windows sum to one along each axis, so the 2-D weight sum is an outer product.
    norm_y = np.zeros(height, dtype=np.float64)
    for top, wy in rows:
        norm_y[top : top + wy.size] += wy
    norm_x = np.zeros(width, dtype=np.float64)
    for left, wx in cols:
        norm_x[left : left + wx.size] += wx
    out /= np.outer(norm_y, norm_x).astype(np.float32)[..., None]
    return out


# ---------------------------------------------------------------------------------------
# tile="auto"
# ---------------------------------------------------------------------------------------


def available_memory_bytes() -> tuple[int, str]:
    """Free memory of the device the network runs on, and where the number came from.

    GPU (TensorFlow sees one): the free memory of GPU 0 from ``nvidia-smi`` (TensorFlow
    itself only reports what it has allocated), minus what this process already holds.
    CPU: ``MemAvailable`` of ``/proc/meminfo``, else ``sysconf`` available pages,
    else 4 GiB.
    """
    try:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
    except Exception:  # pragma: no cover - TensorFlow missing or broken
        gpus = []
    if gpus:
        smi = shutil.which("nvidia-smi")
        if smi:
            try:
                text = subprocess.run(
                    [smi, "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                    check=True,
                ).stdout
                return int(text.split()[0]) * 2**20, "GPU 0 (nvidia-smi memory.free)"
            except (OSError, subprocess.SubprocessError, ValueError, IndexError):
                pass
        return 4 * 2**30, "GPU (free memory unknown: assumed 4 GiB)"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "CPU (/proc/meminfo MemAvailable)"
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "CPU (sysconf)"
    except (AttributeError, ValueError, OSError):
        return 4 * 2**30, "CPU (free memory unknown: assumed 4 GiB)"


def estimate_bytes_per_pixel(runner) -> int:
    """Working memory per input pixel of one network call, in bytes.

    The runner's own estimate (``runner.bytes_per_pixel``, see
    :func:`tfdeblur.inference.load_runner`) when it has one, else
    :data:`DEFAULT_BYTES_PER_PIXEL`. For Keras models the estimate is
    ``2 x 4 bytes x`` the number of float32 activation values per input pixel summed over
    every layer output (measured symbolically at 64 x 64): all activations alive at once,
    doubled for the convolution workspace and the input/output copies. This errs on the
    large side; eager execution frees activations as it goes.
    """
    value = getattr(runner, "bytes_per_pixel", None)
    return int(value) if value else DEFAULT_BYTES_PER_PIXEL


def auto_tile_size(
    runner,
    image_shape: tuple[int, ...],
    *,
    memory_bytes: int | None = None,
    fraction: float = AUTO_MEMORY_FRACTION,
) -> int | None:
    """The tile ``tile="auto"`` uses for an image, or None when it fits in one pass.

    ``budget = fraction x free memory`` (:func:`available_memory_bytes`), ``pixels =
    budget / bytes_per_pixel`` (:func:`estimate_bytes_per_pixel`); None when ``H x W <=
    pixels``, else ``floor(sqrt(pixels))`` rounded down to a multiple of
    :data:`AUTO_TILE_MULTIPLE`, at least :data:`AUTO_MIN_TILE`.

    Args:
        runner: the network runner.
        image_shape: ``(H, W, ...)``.
        memory_bytes: free memory; measured when None.
        fraction: share of it to use. Default 0.5.
    """
    if memory_bytes is None:
        memory_bytes, _ = available_memory_bytes()
    pixels = fraction * memory_bytes / estimate_bytes_per_pixel(runner)
    height, width = image_shape[:2]
    if height * width <= pixels:
        return None
    side = int(math.sqrt(pixels)) // AUTO_TILE_MULTIPLE * AUTO_TILE_MULTIPLE
    return max(side, AUTO_MIN_TILE)
