"""Deblurring for people: one photo, a folder of them, or a shaky video.

Python::

    import tfdeblur

    sharp = tfdeblur.deblur("photo.jpg", model="runs/lcnet/final.keras")   # float32 (H, W, 3)
    sharp = tfdeblur.deblur(uint8_array, model="lcnet.tflite", tile=512)   # uint8, like the input

Command line (:mod:`tfdeblur.commands.deblur`)::

    tfdeblur deblur photo.jpg holiday/ clip.mp4 -o deblurred/ --model lcnet.keras --tile auto

Conventions:

* Pixel values: 8-bit ``v -> v / 255``, 16-bit ``v -> v / 65535`` (:mod:`tfdeblur.data.image_io`);
  the network's output is clamped to ``[0, 1]`` and rounded once, when it is written (or
  returned as integers).
* Files keep their kind: a 16-bit PNG gives a 16-bit PNG, a grayscale image a grayscale
  image (the network sees the gray value in all three channels; the output is the mean of
  its three channels), a JPEG a JPEG (quality 95). Formats :func:`tfdeblur.data.image_io.write_image`
  cannot write (TIFF, WebP, ...) become PNG. Outputs carry no metadata, so a photo stored
  sideways with an EXIF ``Orientation`` tag is turned upright when read: the output looks
  like the input does in a viewer.
* Any H x W; large images in tiles (:mod:`tfdeblur.infer.tiling`, ``tile=``); a model exported
  with a fixed input size runs any image in tiles of that size (:func:`plan_tile`).
* Videos go through :func:`tfdeblur.infer.video.deblur_video` (reading, codecs, the streaming of
  recurrent video networks such as ``sarn_video``; see :mod:`tfdeblur.infer.video`): audio is
  dropped, the frame rate kept.
* Every file is written atomically (temporary file + ``os.replace``) and an input is never
  overwritten, nor is one output written over another (:func:`plan_jobs`, which checks the
  ``--compare`` images too).
"""

from __future__ import annotations

import functools
import os
import pathlib
import time

import numpy as np

from tfdeblur.data.image_io import read_image, read_image_info, write_image

# ---------------------------------------------------------------------------------------
# Arrays
# ---------------------------------------------------------------------------------------


def _get_runner(model, preset=None, precision: str | None = None):
    from tfdeblur.backend import require_tensorflow
    from tfdeblur.infer.runners import Runner, load_runner, with_precision

    require_tensorflow("tfdeblur.deblur")

    if isinstance(model, Runner):
        return with_precision(model, precision)
    if isinstance(model, (str, os.PathLike)):
        path = pathlib.Path(model).expanduser()
        stamp = path.stat().st_mtime_ns if path.is_file() else None
        spec = str(path.resolve()) if stamp else str(model)
        return _cached_runner(spec, stamp, preset, precision)
    return load_runner(model, preset, precision=precision)


@functools.lru_cache(maxsize=2)
def _cached_runner(spec: str, stamp, preset, precision):
    from tfdeblur.infer.runners import load_runner

    del stamp  # part of the cache key only: a rewritten model file is loaded again
    return load_runner(spec, preset, precision=precision)


def _fixed_size(runner) -> tuple[int, int] | None:
    """``(H, W)`` of a model that runs on that size only (``Runner.input_size``), or None.

    Read with ``getattr``: plain ``image -> image`` functions have no such attribute.
    """
    size = getattr(runner, "input_size", None)
    return None if size is None else (int(size[0]), int(size[1]))


def plan_tile(runner, shape, tile=None, overlap: int = 32) -> int | tuple[int, int] | None:
    """The tile :func:`run_image` uses for an image of ``shape``; None for one pass.

    * A model with a fixed input shape (``runner.input_size``, ``(H, W)``, e.g. a
      ``.tflite`` exported with ``--input-size``) runs an image of exactly that size in one
      pass, and any other image in tiles of that size, whatever ``tile`` says: it cannot
      run anything else. An image smaller than the fixed size is zero-padded up to it at
      the bottom/right (the padding the networks apply inside themselves) and the output
      cropped back, rather than refused.
    * Otherwise ``tile``: None (one pass), an int, or ``"auto"``
      (:func:`tfdeblur.infer.tiling.auto_tile_size`); an image that fits in one tile runs in one
      pass.

    Raises:
        ValueError: bad ``tile``/``overlap`` (:func:`tfdeblur.infer.tiling.check_tiling`), or an
            overlap above half the fixed size.
    """
    from tfdeblur.infer.tiling import auto_tile_size, check_tiling

    tile, overlap = check_tiling(tile, overlap)
    fixed = _fixed_size(runner)
    if fixed is not None:
        if tuple(shape[:2]) == fixed:
            return None
        if 2 * overlap > min(fixed):
            raise ValueError(
                f"overlap ({overlap}) must be at most half the model's fixed input size "
                f"{fixed[0]}x{fixed[1]}, which is its tile; use a smaller --overlap."
            )
        return fixed
    if tile == "auto":
        tile = auto_tile_size(runner, shape)
    if tile is None or (shape[0] <= tile and shape[1] <= tile):
        return None
    return tile


def _run_planned(runner, image: np.ndarray, tile, overlap: int) -> np.ndarray:
    if tile is None:
        return np.asarray(runner(image), dtype=np.float32)
    from tfdeblur.infer.tiling import deblur_tiled

    return deblur_tiled(runner, image, tile, overlap, pad_to_tile=_fixed_size(runner) is not None)


def run_image(runner, image: np.ndarray, tile=None, overlap: int = 32) -> np.ndarray:
    """Run ``runner`` on a float32 ``(H, W, 3)`` image, tiled or not; unclamped output.

    ``tile`` and ``overlap`` as :func:`plan_tile` reads them (a fixed-shape model is tiled
    with its own shape).
    """
    return _run_planned(runner, image, plan_tile(runner, image.shape, tile, overlap), overlap)


def _describe_tile(tile) -> str:
    return f"{tile[0]}x{tile[1]}" if isinstance(tile, tuple) else str(tile)


def _to_float_rgb(array: np.ndarray) -> tuple[np.ndarray, tuple[int, ...], np.dtype]:
    """(float32 (H, W, 3) in [0, 1], the input's shape, the input's dtype)."""
    array = np.asarray(array)
    shape = array.shape
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(
            f"deblur: image must be (H, W), (H, W, 1) or (H, W, 3), got shape {shape}."
        )
    if min(array.shape[:2]) < 1:
        raise ValueError(f"deblur: empty image of shape {shape}.")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255), shape, array.dtype
    if array.dtype == np.uint16:
        return array.astype(np.float32) / np.float32(65535), shape, array.dtype
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"deblur: image dtype must be float, uint8 or uint16, got {array.dtype}.")
    if not np.isfinite(array).all():
        raise ValueError("deblur: the image contains NaN or infinite values.")
    return array.astype(np.float32), shape, array.dtype


def _finish(output: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Clamp once, back to the input's layout (gray: the channel mean) and dtype (integers
    rounded once)."""
    output = np.clip(output, 0.0, 1.0)
    if len(shape) == 2 or shape[-1] == 1:
        output = output.mean(axis=-1).reshape(shape)
    if np.issubdtype(dtype, np.floating):
        return output.astype(dtype)
    max_value = np.iinfo(dtype).max  # uint8 or uint16 (checked by _to_float_rgb)
    return np.rint(output.astype(np.float64) * max_value).astype(dtype)


def deblur(
    image,
    model,
    tile: int | str | None = None,
    overlap: int = 32,
    *,
    preset: str | None = None,
    precision: str | None = None,
) -> np.ndarray:
    """Deblur one image.

    Args:
        image: a file path (anything :func:`tfdeblur.data.image_io.read_image` reads), or an
            array ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)``: float in ``[0, 1]``,
            ``uint8`` or ``uint16``. Any H x W.
        model: a ``.keras`` / ``.tflite`` / ``.onnx`` file, a registry name (untrained
            weights), a ``keras.Model`` or a :class:`tfdeblur.infer.runners.Runner`. Loaded
            models are cached (two most recent, reloaded when the file changes).
        tile: None (one pass, default), a tile side in pixels, or ``"auto"`` (from the
            free memory, see :func:`tfdeblur.infer.tiling.auto_tile_size`). A model with a fixed
            input shape is tiled with that shape instead (:func:`plan_tile`).
        overlap: minimum overlap between tiles, at most ``tile / 2``. Default 32.
        preset: model preset for registry names.
        precision: ``"float32"``, ``"bfloat16"`` or ``"auto"`` for Keras models (see
            :mod:`tfdeblur.infer.precision`); None (default): a given Runner as it is, anything
            else in float32; other formats refuse ``"bfloat16"``.

    Returns:
        The deblurred image, clamped to ``[0, 1]``: for a path, float32 ``(H, W, 3)``
        (upright as its EXIF orientation says); for
        an array, the input's shape (grayscale ``(H, W)`` or ``(H, W, 1)`` stays so, the
        mean of the output channels) and dtype (``uint8``/``uint16`` rounded once; a float
        dtype kept; the network itself runs in float32).

    Raises:
        FileNotFoundError: the image or model file does not exist.
        ValueError: unreadable image, bad shape/dtype, bad ``tile``/``overlap``/``precision``.
    """
    from tfdeblur.infer.precision import check_precision
    from tfdeblur.infer.tiling import check_tiling

    check_tiling(tile, overlap)  # before a model is loaded
    if precision is not None:
        check_precision(precision)
    if isinstance(image, (str, os.PathLike)):
        rgb = read_image(image, exif_orientation=True)
        shape, dtype = rgb.shape, np.dtype(np.float32)
    else:
        rgb, shape, dtype = _to_float_rgb(image)
    runner = _get_runner(model, preset, precision)
    return _finish(run_image(runner, rgb, tile, overlap), shape, dtype)


# ---------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------


def compare_path(target: pathlib.Path) -> pathlib.Path:
    """Where ``--compare`` writes the comparison image of ``target``."""
    return target.with_name(f"{target.stem}.compare.png")


def deblur_image_file(
    runner, source, target, tile=None, overlap: int = 32, compare: bool = False
) -> dict:
    """Deblur one image file into ``target`` (bit depth and grayscale kept, atomic write).

    Returns:
        ``{"seconds": model time, "tile": tile used (int or ``(H, W)``) or None}``.
    """
    source, target = pathlib.Path(source), pathlib.Path(target)
    info = read_image_info(source)
    image = read_image(source, exif_orientation=True)  # the output carries no EXIF
    tile = plan_tile(runner, image.shape, tile, overlap)
    start = time.perf_counter()
    output = np.clip(_run_planned(runner, image, tile, overlap), 0.0, 1.0)
    seconds = time.perf_counter() - start
    gray = info.channels in (1, 2)
    bit_depth = 16 if info.bit_depth == 16 and target.suffix.lower() == ".png" else 8
    write_image(target, output.mean(axis=-1) if gray else output, bit_depth)
    if compare:
        from tfdeblur.infer.compare import comparison_image

        write_image(compare_path(target), comparison_image(image, output))
    return {"seconds": seconds, "tile": tile}
