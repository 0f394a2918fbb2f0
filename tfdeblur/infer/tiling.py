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

**Alignment to the network's down-sampling.** A network with stride-2 layers samples its
coarse feature maps on a grid anchored at the top-left pixel: a tile starting at an odd
column would see the image on another grid than the whole image does, and its output
would differ everywhere, not only near its border. So every tile starts at a multiple of
the network's *multiple* ``m`` (:func:`model_multiple`: the ``multiple`` of its
:class:`keras_layers.PadToMultiple` layers, the ``pad_to_multiple`` of a
:class:`keras_layers.GaussianPyramid`; their least common multiple), and tile sides given
by the caller are rounded up to a multiple of ``m``. For the last tile to start on the
grid too, the image is zero-padded at the bottom and right, as the network itself pads
(``PadToMultiple``), and the output is cropped back: for a Keras network whose
receptive field fits, tiled equals untiled everywhere, borders included. Models that
cannot be inspected (``.tflite``/``.onnx``, plain functions) get
:data:`DEFAULT_MULTIPLE`; there, and for DeepDeblur (whose pyramid edge-pads), the
zero padding can change the last ``receptive field`` pixels before the bottom/right
border slightly.

Tiles are placed evenly: along an axis of (padded) length ``L`` for tile size ``T`` and
multiple ``m``, ``n = ceil((L - T) / (m floor((T - overlap) / m))) + 1`` tiles, the
first flush with the start, the last flush with the end, the starts rounded to multiples
of ``m``; so every tile has the same shape (one TFLite allocation, no re-tracing) and
every overlap is at least ``overlap``. ``overlap <= tile / 2`` keeps the cross-fades of a
tile's two sides apart.

**Fixed-shape models** (exported with ``--input-size HxW``) can only run on that shape:
:func:`tfdeblur.infer.images.run_image` tiles every other image with the fixed shape as the
tile (``pad_to_tile=True`` here: an image smaller than the tile is zero-padded up to it).

Memory: the network sees one ``T x T`` tile at a time; besides it, the (padded) input,
the output accumulator (``H x W x C`` float32) and two 1-D weight sums are kept.
``tile="auto"`` (:func:`auto_tile_size`) picks the largest tile whose estimated working
memory fits half the free memory.
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

#: Tile-start multiple for models whose layers cannot be read (``.tflite``, ``.onnx``,
#: plain functions): 16, twice the largest multiple of the registry networks' presets
#: (LCNet and SAPHN pad to 8, SARN and DeepDeblur to 4), so a deeper variant is covered
#: too; being on a coarser grid than needed costs only up to 15 px of padding.
DEFAULT_MULTIPLE = 16


# ---------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------


def parse_tile(tile) -> int | str | None:
    """The one parser of a tile argument (CLI strings and Python values alike).

    Args:
        tile: None (one pass), a positive int, ``"auto"``, or a string holding a positive
            int (``"512"``) or ``"auto"`` (any case).

    Returns:
        None, the int, or ``"auto"``.

    Raises:
        ValueError: anything else, naming ``tile``.
    """
    if tile is None:
        return None
    if isinstance(tile, str):
        text = tile.strip()
        if text.lower() == "auto":
            return "auto"
        if text.isdigit() and int(text) > 0:
            return int(text)
    elif isinstance(tile, (int, np.integer)) and not isinstance(tile, bool) and tile > 0:
        return int(tile)
    raise ValueError(f"tile must be a positive number of pixels, 'auto' or None, got {tile!r}.")


def check_tiling(tile, overlap) -> tuple[int | str | None, int]:
    """Check and normalise ``(tile, overlap)`` before any model is loaded.

    Args:
        tile: see :func:`parse_tile`.
        overlap: non-negative int; at most half an integer ``tile``.

    Returns:
        ``(parse_tile(tile), int(overlap))``.

    Raises:
        ValueError: a bad tile, a negative or non-integer overlap, or an overlap above
            ``tile / 2``; the message names the argument.
    """
    tile = parse_tile(tile)
    if isinstance(overlap, bool) or not isinstance(overlap, (int, np.integer)) or overlap < 0:
        raise ValueError(f"overlap must be a non-negative integer, got {overlap!r}.")
    if isinstance(tile, int) and 2 * overlap > tile:
        raise ValueError(
            f"overlap ({overlap}) must be at most half the tile ({tile}); "
            "use a larger --tile or a smaller --overlap."
        )
    return tile, int(overlap)


# ---------------------------------------------------------------------------------------
# Placement and windows
# ---------------------------------------------------------------------------------------


def _all_layers(model):
    """Every layer of a Keras model, nested models (e.g. a frame recurrence's step network)
    included."""
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _all_layers(layer)
        step = getattr(layer, "step_model", None)
        if step is not None:
            yield from _all_layers(step)


def model_multiple(runner) -> int:
    """The multiple tile starts must be on for ``runner``'s network (module docstring).

    Args:
        runner: a :class:`tfdeblur.infer.runners.Runner` or any ``image -> image`` callable.

    Returns:
        For a Keras model (``runner.model``): the least common multiple of the
        ``multiple`` of its :class:`keras_layers.PadToMultiple` layers and the
        ``pad_to_multiple`` of its :class:`keras_layers.GaussianPyramid` layers, 1 when
        it has neither (a network that takes any size as it is, like a stack of stride-1
        convolutions). Otherwise :data:`DEFAULT_MULTIPLE`.
    """
    model = getattr(runner, "model", None)
    if model is None or not hasattr(model, "layers"):
        return DEFAULT_MULTIPLE
    from keras_layers import GaussianPyramid, PadToMultiple

    multiple = 1
    for layer in _all_layers(model):
        if isinstance(layer, PadToMultiple):
            multiple = math.lcm(multiple, int(layer.multiple))
        elif isinstance(layer, GaussianPyramid):
            multiple = math.lcm(multiple, int(layer.pad_to_multiple))
    return multiple


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def padded_length(length: int, tile: int, multiple: int = 1) -> int:
    """Length of an axis once zero-padded so that evenly placed tiles of side ``tile``
    starting at multiples of ``multiple`` end flush with it: ``tile`` when one tile covers
    the axis, else ``tile + ceil((length - tile) / multiple) x multiple``."""
    if tile >= length:
        return tile
    return tile + _round_up(length - tile, multiple)


def tile_starts(length: int, tile: int, overlap: int, multiple: int = 1) -> list[int]:
    """Evenly spaced tile start offsets along one axis, on multiples of ``multiple``.

    Args:
        length: image size along the axis.
        tile: tile size (clipped to ``length``).
        overlap: minimum overlap between neighbouring tiles.
        multiple: every start is a multiple of it. Default 1.

    Returns:
        Increasing starts; the first is 0, the last the smallest multiple of ``multiple``
        at or above ``length - min(tile, length)`` (exactly that when ``length`` is a
        :func:`padded_length`, as :func:`deblur_tiled` uses).

    Raises:
        ValueError: ``tile - overlap < multiple`` while more than one tile is needed (the
            tiles could not advance on the grid).
    """
    tile = min(tile, length)
    if tile >= length:
        return [0]
    # Work in grid units: the stride may be at most (tile - overlap) // multiple units, so
    # rounding the evenly spread starts to whole units never shrinks an overlap.
    last = _round_up(length - tile, multiple) // multiple
    stride = (tile - overlap) // multiple
    if stride < 1:
        raise ValueError(
            f"tile {tile} with overlap {overlap} cannot advance on this network's grid: "
            f"tiles start at multiples of {multiple} px, so tile - overlap must be at least "
            f"{multiple}; use a larger --tile or a smaller --overlap."
        )
    count = math.ceil(last / stride) + 1
    return [round(i * last / (count - 1)) * multiple for i in range(count)]


def _ramp(x: np.ndarray, center: float, half_width: float) -> np.ndarray:
    """Raised cosine from 1 (``x <= center - half_width``) to 0 (``x >= center + half_width``)."""
    if half_width <= 0:
        return (x < center).astype(np.float64)
    t = np.clip((x - (center - half_width)) / (2 * half_width), 0.0, 1.0)
    return 0.5 + 0.5 * np.cos(np.pi * t)


def axis_windows(
    length: int, tile: int, overlap: int, multiple: int = 1
) -> list[tuple[int, np.ndarray]]:
    """``(start, weights)`` of every tile along one axis; the weights sum to 1 at each pixel.

    See the module docstring for the window. Weights are evaluated at pixel centres
    (``x + 0.5``). With ``multiple > 1``, ``length`` should be a :func:`padded_length`.
    """
    starts = tile_starts(length, tile, overlap, multiple)
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


# ---------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------


def deblur_tiled(
    runner: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    tile: int | tuple[int, int],
    overlap: int = 32,
    *,
    multiple: int | None = None,
    pad_to_tile: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Run ``runner`` over overlapping tiles of ``image`` and blend the outputs.

    Args:
        runner: ``(h, w, C)`` float32 -> ``(h, w, C_out)`` (e.g. from
            :func:`tfdeblur.infer.runners.load_runner`); it is always called with tiles of
            one shape.
        image: ``(H, W, C)`` float image.
        tile: tile side in pixels, or ``(height, width)``.
        overlap: minimum overlap between neighbouring tiles, at most half the tile.
            Default 32.
        multiple: tile starts are multiples of it; default :func:`model_multiple` of the
            runner. Tile sides are rounded up to it unless ``pad_to_tile``.
        pad_to_tile: the tile is the one shape the model takes (a fixed-shape
            ``.tflite``/``.onnx`` file): it is used exactly as given, and an axis shorter
            than it is zero-padded up to it. Default False: an axis shorter than the tile
            runs as one tile of the axis (rounded up to ``multiple``).
        progress: called as ``progress(done, total)`` after each tile; optional.

    Returns:
        ``(H, W, C_out)`` float32, unclamped: per pixel a convex combination of the tile
        outputs covering it.

    Raises:
        ValueError: bad ``tile``/``overlap``, or a runner output of the wrong size.
    """
    tile_h, tile_w = (tile, tile) if not isinstance(tile, (tuple, list)) else tile
    for side in (tile_h, tile_w):
        check_tiling(side, overlap)
    overlap = int(overlap)
    multiple = model_multiple(runner) if multiple is None else int(multiple)
    if multiple < 1:
        raise ValueError(f"deblur_tiled: multiple must be a positive integer, got {multiple}.")
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"deblur_tiled: image must be (H, W, C), got shape {image.shape}.")
    height, width = image.shape[:2]
    if not pad_to_tile:
        # On the grid: sides rounded up to the multiple, never longer than the (rounded)
        # axis, which then runs as one tile.
        tile_h = min(_round_up(tile_h, multiple), _round_up(height, multiple))
        tile_w = min(_round_up(tile_w, multiple), _round_up(width, multiple))
    canvas_h = padded_length(height, tile_h, multiple)
    canvas_w = padded_length(width, tile_w, multiple)
    rows = axis_windows(canvas_h, tile_h, overlap, multiple)
    cols = axis_windows(canvas_w, tile_w, overlap, multiple)
    # Zero padding at the bottom/right, the padding PadToMultiple applies inside the model.
    padded = np.pad(image, ((0, canvas_h - height), (0, canvas_w - width), (0, 0)))
    out = None
    total, done = len(rows) * len(cols), 0
    for top, wy in rows:
        for left, wx in cols:
            patch = padded[top : top + wy.size, left : left + wx.size]
            result = np.asarray(runner(patch), dtype=np.float32)
            if result.shape[:2] != patch.shape[:2]:
                raise ValueError(
                    f"deblur_tiled: the model returned {result.shape} for a tile of shape "
                    f"{patch.shape}; tiling needs an output of the input's size."
                )
            if out is None:
                out = np.zeros((canvas_h, canvas_w, result.shape[-1]), dtype=np.float32)
            weight = (wy[:, None] * wx[None, :]).astype(np.float32)[..., None]
            out[top : top + wy.size, left : left + wx.size] += weight * result
            done += 1
            if progress is not None:
                progress(done, total)
    # The windows sum to one along each axis, so the 2-D weight sum is an outer product.
    norm_y = np.zeros(canvas_h, dtype=np.float64)
    for top, wy in rows:
        norm_y[top : top + wy.size] += wy
    norm_x = np.zeros(canvas_w, dtype=np.float64)
    for left, wx in cols:
        norm_x[left : left + wx.size] += wx
    norm = np.outer(norm_y[:height], norm_x[:width]).astype(np.float32)[..., None]
    return out[:height, :width] / norm


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
    :func:`tfdeblur.infer.runners.load_runner`) when it has one, else
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
