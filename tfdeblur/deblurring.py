"""Deblurring for people: one photo, a folder of them, or a shaky video.

Python::

    import tfdeblur

    sharp = tfdeblur.deblur("photo.jpg", model="runs/lcnet/final.keras")   # float32 (H, W, 3)
    sharp = tfdeblur.deblur(uint8_array, model="lcnet.tflite", tile=512)   # uint8, like the input

Command line (:mod:`tfdeblur.commands.deblur`)::

    tfdeblur deblur photo.jpg holiday/ clip.mp4 -o deblurred/ --model lcnet.keras --tile auto

Conventions:

* Pixel values: 8-bit ``v -> v / 255``, 16-bit ``v -> v / 65535`` (:mod:`tfdeblur.image_io`);
  the network's output is clamped to ``[0, 1]`` and rounded once, when it is written (or
  returned as integers).
* Files keep their kind: a 16-bit PNG gives a 16-bit PNG, a grayscale image a grayscale
  image (the network sees the gray value in all three channels; the output is the mean of
  its three channels), a JPEG a JPEG (quality 95). Formats :func:`tfdeblur.image_io.write_image`
  cannot write (TIFF, WebP, ...) become PNG. Outputs carry no metadata, so a photo stored
  sideways with an EXIF ``Orientation`` tag is turned upright when read: the output looks
  like the input does in a viewer.
* Any H x W; large images in tiles (:mod:`tfdeblur.tiling`, ``tile=``); a model exported
  with a fixed input size runs any image in tiles of that size (:func:`plan_tile`).
* Videos go through :func:`tfdeblur.video.deblur_video` (reading, codecs, the streaming of
  recurrent video networks such as ``sarn_video``; see :mod:`tfdeblur.video`): audio is
  dropped, the frame rate kept.
* Every file is written atomically (temporary file + ``os.replace``) and an input is never
  overwritten, nor is one output written over another (:func:`plan_jobs`, which checks the
  ``--compare`` images too).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import sys
import time
from collections.abc import Iterable

import numpy as np

from tfdeblur.fileio import check_output_path
from tfdeblur.image_io import (
    READ_EXTENSIONS,
    WRITE_FORMATS,
    read_image,
    read_image_info,
    write_image,
)
from tfdeblur.video import VIDEO_EXTENSIONS, deblur_video, is_video_file

#: File extensions treated as images when scanning folders: those
#: :data:`tfdeblur.image_io.READ_EXTENSIONS` (kept under this name for compatibility;
#: videos: :data:`tfdeblur.video.VIDEO_EXTENSIONS`).
IMAGE_EXTENSIONS = READ_EXTENSIONS


# ---------------------------------------------------------------------------------------
# Arrays
# ---------------------------------------------------------------------------------------


def _get_runner(model, preset=None, precision: str | None = None):
    from tfdeblur.inference import Runner, load_runner, with_precision

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
    from tfdeblur.inference import load_runner

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
      (:func:`tfdeblur.tiling.auto_tile_size`); an image that fits in one tile runs in one
      pass.

    Raises:
        ValueError: bad ``tile``/``overlap`` (:func:`tfdeblur.tiling.check_tiling`), or an
            overlap above half the fixed size.
    """
    from tfdeblur.tiling import auto_tile_size, check_tiling

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
    from tfdeblur.tiling import deblur_tiled

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
        image: a file path (anything :func:`tfdeblur.image_io.read_image` reads), or an
            array ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)``: float in ``[0, 1]``,
            ``uint8`` or ``uint16``. Any H x W.
        model: a ``.keras`` / ``.tflite`` / ``.onnx`` file, a registry name (untrained
            weights), a ``keras.Model`` or a :class:`tfdeblur.inference.Runner`. Loaded
            models are cached (two most recent, reloaded when the file changes).
        tile: None (one pass, default), a tile side in pixels, or ``"auto"`` (from the
            free memory, see :func:`tfdeblur.tiling.auto_tile_size`). A model with a fixed
            input shape is tiled with that shape instead (:func:`plan_tile`).
        overlap: minimum overlap between tiles, at most ``tile / 2``. Default 32.
        preset: model preset for registry names.
        precision: ``"float32"``, ``"bfloat16"`` or ``"auto"`` for Keras models (see
            :mod:`tfdeblur.precision`); None (default): a given Runner as it is, anything
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
    from tfdeblur.precision import check_precision
    from tfdeblur.tiling import check_tiling

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
# Planning: inputs -> (source, target) jobs
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Job:
    """One file to deblur: ``kind`` is ``"image"`` or ``"video"``."""

    source: pathlib.Path
    target: pathlib.Path
    kind: str


def _kind(path: pathlib.Path) -> str:
    return "video" if is_video_file(path) else "image"


def _target_name(source: pathlib.Path, image_format: str | None) -> str:
    if _kind(source) == "video":
        return source.name
    suffix = source.suffix.lower()
    if image_format:
        suffix = "." + image_format.lower().lstrip(".")
    if suffix not in WRITE_FORMATS:
        suffix = ".png"
    return source.stem + suffix


def _scan(folder: pathlib.Path, exclude: pathlib.Path | None) -> list[pathlib.Path]:
    files = []
    for path in sorted(folder.rglob("*")):
        rel_parts = path.relative_to(folder).parts
        if any(part.startswith(".") for part in rel_parts) or not path.is_file():
            continue
        if exclude is not None and path.resolve().is_relative_to(exclude):
            continue
        if path.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS:
            files.append(path)
    return files


def plan_jobs(
    inputs: Iterable[str | os.PathLike],
    output: str | os.PathLike,
    image_format: str | None = None,
    *,
    compare: bool = False,
) -> list[Job]:
    """Where each input goes.

    * One input file and an ``output`` with a known image/video extension: that file.
    * Otherwise ``output`` is a folder: an input file goes to ``output/<name>``; with one
      input folder its tree is mirrored into ``output``; with several inputs, a folder
      ``F`` is mirrored into ``output/F.name``. Folders are scanned recursively for
      :data:`IMAGE_EXTENSIONS` and :data:`VIDEO_EXTENSIONS` (hidden files and anything
      under ``output`` skipped).
    * Images keep their extension unless ``image_format`` (``"png"``, ``"jpg"``) is given;
      extensions :func:`~tfdeblur.image_io.write_image` cannot write become ``.png``.
    * With ``compare``, every job also writes :func:`compare_path` of its target; those
      files take part in the checks below like the targets.

    Raises:
        FileNotFoundError: an input does not exist.
        ValueError: no inputs, an empty folder, two outputs (targets or comparison images)
            at one path, or an output that is one of the inputs.
    """
    inputs = [pathlib.Path(p).expanduser() for p in inputs]
    output = pathlib.Path(output).expanduser()
    if not inputs:
        raise ValueError("deblur: no INPUT given.")
    for path in inputs:
        if not path.exists():
            raise FileNotFoundError(f"Input {str(path)!r} does not exist.")
    single_file = len(inputs) == 1 and inputs[0].is_file()
    known = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
    jobs = []
    if single_file and output.suffix.lower() in known and not output.is_dir():
        source = inputs[0]
        if _kind(output) != _kind(source):
            raise ValueError(
                f"-o {str(output)!r}: a {_kind(source)} input needs a {_kind(source)} output."
            )
        if _kind(output) == "image" and output.suffix.lower() not in WRITE_FORMATS:
            raise ValueError(
                f"-o {str(output)!r}: cannot write {output.suffix!r}; use one of "
                f"{sorted(WRITE_FORMATS)}."
            )
        jobs.append(Job(source, output, _kind(source)))
    else:
        exclude = output.resolve()
        for path in inputs:
            if path.is_file():
                jobs.append(Job(path, output / _target_name(path, image_format), _kind(path)))
                continue
            base = output if len(inputs) == 1 else output / path.resolve().name
            if base.resolve() == path.resolve():
                raise ValueError(
                    f"Output folder {str(base)!r} is the input folder {str(path)!r}; refusing "
                    "to overwrite the inputs (choose another -o)."
                )
            inside = exclude != path.resolve() and exclude.is_relative_to(path.resolve())
            files = _scan(path, exclude if inside else None)
            if not files:
                raise ValueError(
                    f"Input folder {str(path)!r} holds no images or videos ({', '.join(known)})."
                )
            for file in files:
                rel = file.relative_to(path)
                target = base / rel.parent / _target_name(file, image_format)
                jobs.append(Job(file, target, _kind(file)))
    _check_outputs(jobs, compare)
    return jobs


def _check_outputs(jobs: list[Job], compare: bool) -> None:
    """No output (target, or comparison image with ``compare``) is an input or under an
    existing file (:func:`tfdeblur.fileio.check_output_path`), and no two outputs share a
    path."""
    sources = {job.source.resolve() for job in jobs}
    seen = {}
    for job in jobs:
        outputs = [job.target] + ([compare_path(job.target)] if compare else [])
        for path in outputs:
            check_output_path(path, "-o")
            resolved = path.resolve()
            if resolved in sources:
                raise ValueError(
                    f"Output {str(path)!r} is an input file; refusing to overwrite it "
                    "(choose another -o)."
                )
            if resolved in seen:
                raise ValueError(
                    f"Inputs {str(seen[resolved])!r} and {str(job.source)!r} would both be "
                    f"written to {str(path)!r}; pass them separately or rename one."
                )
            seen[resolved] = job.source


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
        from tfdeblur.compare import comparison_image

        write_image(compare_path(target), comparison_image(image, output))
    return {"seconds": seconds, "tile": tile}


# ---------------------------------------------------------------------------------------
# Many files, with a progress bar and a summary
# ---------------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on a terminal, one line per file otherwise (e.g. CI logs)."""

    def __init__(self, total: int, stream=None, enabled: bool = True):
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()

    def _bar(self, done: float, label: str) -> str:
        width = 24
        filled = int(width * done / max(self.total, 1))
        elapsed = time.perf_counter() - self.start
        return f"\r[{'#' * filled}{'.' * (width - filled)}] {int(done)}/{self.total} {elapsed:6.1f}s {label}"[
            :160
        ]

    def update(self, done: float, label: str) -> None:
        """Redraw the bar (terminal only): ``done`` may be fractional within a file."""
        if self.tty:
            self.stream.write(self._bar(done, label).ljust(160) + "\r")
            self.stream.flush()

    def finished(self, done: int, message: str) -> None:
        """One file is done: ``message`` is printed on its own line."""
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r" + " " * 160 + "\r")
        self.stream.write(f"[{done}/{self.total}] {message}\n")
        self.stream.flush()


def deblur_files(
    jobs: list[Job],
    runner,
    tile=None,
    overlap: int = 32,
    compare: bool = False,
    codec: str | None = None,
    progress: bool = True,
    stream=None,
) -> list[tuple[Job, str]]:
    """Deblur every job; an unreadable file is reported and skipped, not fatal.

    Returns:
        ``(job, error message)`` of every failed job (empty when all succeeded).
    """
    bar = Progress(len(jobs), stream, enabled=progress)
    failures = []
    for index, job in enumerate(jobs):
        label = str(job.source)
        bar.update(index, label)
        try:
            if job.kind == "video":

                def on_frame(done, total, index=index, label=label):
                    fraction = done / total if total else 0.0
                    bar.update(index + min(fraction, 1.0), f"{label} frame {done}")

                info = deblur_video(
                    runner,
                    job.source,
                    job.target,
                    codec=codec,
                    tile=tile,
                    overlap=overlap,
                    compare=compare,
                    on_frame=on_frame,
                )
                message = (
                    f"{job.source} -> {job.target} ({info['frames']} frames at "
                    f"{info['fps']:g} fps, {info['seconds'] / max(info['frames'], 1):.3f} s/frame)"
                )
            else:
                info = deblur_image_file(runner, job.source, job.target, tile, overlap, compare)
                tiled = f", tiles of {_describe_tile(info['tile'])}" if info["tile"] else ""
                message = f"{job.source} -> {job.target} ({info['seconds']:.2f} s{tiled})"
        except Exception as err:  # noqa: BLE001 - one bad file must not stop the rest
            failures.append((job, str(err) or type(err).__name__))
            message = f"FAILED {job.source}: {err}"
        bar.finished(index + 1, message)
    return failures
