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
  cannot write (TIFF, WebP, ...) become PNG.
* Videos go through :func:`tfdeblur.video.deblur_video` (reading, codecs, the streaming of
  recurrent video networks such as ``sarn_video``; see :mod:`tfdeblur.video`): audio is
  dropped, the frame rate kept.
* Every file is written atomically (temporary file + ``os.replace``) and an input is never
  overwritten.
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

from tfdeblur.image_io import WRITE_FORMATS, read_image, read_image_info, write_image
from tfdeblur.video import VIDEO_EXTENSIONS, deblur_video, is_video_file

#: File extensions treated as images when scanning folders (videos:
#: :data:`tfdeblur.video.VIDEO_EXTENSIONS`).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


# ---------------------------------------------------------------------------------------
# Arrays
# ---------------------------------------------------------------------------------------


def _get_runner(model, preset=None):
    from tfdeblur.inference import Runner, load_runner

    if isinstance(model, Runner):
        return model
    if isinstance(model, (str, os.PathLike)):
        path = pathlib.Path(model).expanduser()
        stamp = path.stat().st_mtime_ns if path.is_file() else None
        return _cached_runner(str(path.resolve()) if stamp else str(model), stamp, preset)
    return load_runner(model, preset)


@functools.lru_cache(maxsize=2)
def _cached_runner(spec: str, stamp, preset):
    from tfdeblur.inference import load_runner

    del stamp  # part of the cache key only: a rewritten model file is loaded again
    return load_runner(spec, preset)


def _resolve_tile(runner, shape, tile):
    if tile is None:
        return None
    if isinstance(tile, str):
        if tile.lower() != "auto":
            raise ValueError(f"tile must be None, a positive integer or 'auto', got {tile!r}.")
        from tfdeblur.tiling import auto_tile_size

        return auto_tile_size(runner, shape)
    return tile


def _check_tiling(tile, overlap) -> None:
    from tfdeblur.tiling import check_tile_args

    if tile is not None and not isinstance(tile, str):
        check_tile_args(tile, overlap)
    elif isinstance(overlap, bool) or not isinstance(overlap, (int, np.integer)) or overlap < 0:
        raise ValueError(f"overlap must be a non-negative integer, got {overlap!r}.")


def run_image(runner, image: np.ndarray, tile=None, overlap: int = 32) -> np.ndarray:
    """Run ``runner`` on a float32 ``(H, W, 3)`` image, tiled or not; unclamped output."""
    _check_tiling(tile, overlap)
    tile = _resolve_tile(runner, image.shape, tile)
    if tile is None or (image.shape[0] <= tile and image.shape[1] <= tile):
        return np.asarray(runner(image), dtype=np.float32)
    from tfdeblur.tiling import deblur_tiled

    return deblur_tiled(runner, image, tile, overlap)


def _to_float_rgb(array: np.ndarray) -> tuple[np.ndarray, int | None, bool]:
    """(float32 (H, W, 3) in [0, 1], integer bit depth or None, was grayscale)."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    gray = array.ndim == 2
    if gray:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(
            f"deblur: image must be (H, W), (H, W, 1) or (H, W, 3), got shape {array.shape}."
        )
    if min(array.shape[:2]) < 1:
        raise ValueError(f"deblur: empty image of shape {array.shape}.")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255), 8, gray
    if array.dtype == np.uint16:
        return array.astype(np.float32) / np.float32(65535), 16, gray
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"deblur: image dtype must be float, uint8 or uint16, got {array.dtype}.")
    if not np.isfinite(array).all():
        raise ValueError("deblur: the image contains NaN or infinite values.")
    return array.astype(np.float32), None, gray


def _finish(output: np.ndarray, bit_depth: int | None, gray: bool) -> np.ndarray:
    output = np.clip(output, 0.0, 1.0)
    if gray:
        output = output.mean(axis=-1)
    if bit_depth is None:
        return output.astype(np.float32)
    max_value = 255 if bit_depth == 8 else 65535
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    return np.rint(output.astype(np.float64) * max_value).astype(dtype)


def deblur(
    image,
    model,
    tile: int | str | None = None,
    overlap: int = 32,
    *,
    preset: str | None = None,
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
            free memory, see :func:`tfdeblur.tiling.auto_tile_size`).
        overlap: minimum overlap between tiles, at most ``tile / 2``. Default 32.
        preset: model preset for registry names.

    Returns:
        The deblurred image, clamped to ``[0, 1]``: for a path, float32 ``(H, W, 3)``; for
        an array, the input's layout (grayscale stays ``(H, W)``, the mean of the output
        channels) and dtype (``uint8``/``uint16`` rounded once; floats as float32).

    Raises:
        FileNotFoundError: the image or model file does not exist.
        ValueError: unreadable image, bad shape/dtype, bad ``tile``/``overlap``.
    """
    runner = _get_runner(model, preset)
    if isinstance(image, (str, os.PathLike)):
        return _finish(run_image(runner, read_image(image), tile, overlap), None, False)
    rgb, bit_depth, gray = _to_float_rgb(image)
    return _finish(run_image(runner, rgb, tile, overlap), bit_depth, gray)


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
    inputs: Iterable[str | os.PathLike], output: str | os.PathLike, image_format: str | None = None
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

    Raises:
        FileNotFoundError: an input does not exist.
        ValueError: no inputs, an empty folder, two inputs mapped to one output, or an
            output that is one of the inputs.
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
    sources = {job.source.resolve() for job in jobs}
    seen = {}
    for job in jobs:
        target = job.target.resolve()
        if target in sources:
            raise ValueError(
                f"Output {str(job.target)!r} is an input file; refusing to overwrite it "
                "(choose another -o)."
            )
        if target in seen:
            raise ValueError(
                f"Inputs {str(seen[target])!r} and {str(job.source)!r} would both be "
                f"written to {str(job.target)!r}; pass them separately or rename one."
            )
        seen[target] = job.source
    return jobs


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
        ``{"seconds": model time, "tile": tile used or None}``.
    """
    source, target = pathlib.Path(source), pathlib.Path(target)
    info = read_image_info(source)
    image = read_image(source)
    tile = _resolve_tile(runner, image.shape, tile)
    start = time.perf_counter()
    output = np.clip(run_image(runner, image, tile, overlap), 0.0, 1.0)
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
                tiled = f", tiles of {info['tile']}" if info["tile"] else ""
                message = f"{job.source} -> {job.target} ({info['seconds']:.2f} s{tiled})"
        except Exception as err:  # noqa: BLE001 - one bad file must not stop the rest
            failures.append((job, str(err) or type(err).__name__))
            message = f"FAILED {job.source}: {err}"
        bar.finished(index + 1, message)
    return failures
