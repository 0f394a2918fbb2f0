"""Video in tfdeblur: reading, streaming deblurring and writing, in one place.

Python::

    import tfdeblur.video as video
    video.deblur_video("runs/sarn_video/final.keras", "shaky.mp4", "steady.mp4")
    video.deblur_video(model, "frames/", "sharp_frames/")            # folders of frames

Command line: ``tfdeblur deblur-video IN -o OUT --model sarn_video.keras``
(:mod:`tfdeblur.commands.deblur_video`), and the videos among the inputs of
``tfdeblur deblur`` (:mod:`tfdeblur.commands.deblur`, :func:`tfdeblur.deblurring.deblur_files`):
both call :func:`deblur_video`.

A recurrent video network (one with a :class:`keras_layers.FrameRecurrence` layer, i.e.
``sarn_video``) runs as a stream (:func:`stream_video_model`): its step network is called
once per frame, carrying the ConvLSTM state and the previous estimates, with a look-ahead
of ``num_future`` frames, under the rules of the clip model (zero initial state, the first
frame standing in for missing past estimates, the last frame for missing future frames),
so the outputs are the clip model's outputs on the whole video while only
``num_future + 1`` input frames and ``num_past`` estimates are held. An image network runs
on each frame, tiled when asked (:func:`tfdeblur.deblurring.run_image`), from a ``.keras``,
``.tflite`` or ``.onnx`` file; a video network streams from its ``.keras`` file only.

Conventions:

* Frames are float32 RGB in ``[0, 1]``: a video's 8-bit frames ``v / 255`` (read with
  ``imageio``'s ffmpeg plugin, audio ignored), a folder's images as
  :func:`tfdeblur.image_io.read_image` reads them (files ordered by name, digit runs
  compared as numbers).
* Outputs are clamped and rounded once, when written. A folder gets 8-bit PNGs named after
  the input frames (``frame_000001.png``... for a video input). A video file keeps the
  input's frame rate (``fps`` for a folder input, default 24): H.264 (``libx264``, CRF 16;
  4:2:0 when both sides are even, 4:4:4 otherwise, since 4:2:0 needs even sizes), VP9 for
  ``.webm``; ``codec="lossless"`` writes RGB H.264 at CRF 0 (``libx264rgb``).
* Every file is written atomically (:func:`tfdeblur.fileio.atomic_path`: a temporary file
  beside it, moved into place only when complete) and an input is never overwritten.
"""

from __future__ import annotations

import collections
import contextlib
import pathlib
import time
import weakref
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from tfdeblur.data.video import natural_key
from tfdeblur.fileio import atomic_path, check_output_path
from tfdeblur.image_io import READ_EXTENSIONS, read_image, write_image

#: Extensions treated as video files.
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
#: Extensions of frames in a folder: every image :func:`tfdeblur.image_io.read_image`
#: reads (:data:`tfdeblur.image_io.READ_EXTENSIONS`).
FRAME_EXTENSIONS = READ_EXTENSIONS
#: Frame rate of a video made from a folder of frames, unless one is given.
DEFAULT_FPS = 24.0
#: Default H.264 constant rate factor (visually lossless for most content).
VIDEO_CRF = 16


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------


def is_video_file(path) -> bool:
    """True when ``path``'s extension is a video container's (:data:`VIDEO_EXTENSIONS`)."""
    return pathlib.Path(path).suffix.lower() in VIDEO_EXTENSIONS


def list_frames(folder) -> list[pathlib.Path]:
    """The frame files of a folder in order (natural sort of the names).

    Raises:
        FileNotFoundError: ``folder`` is not a directory.
        ValueError: it holds no frames.
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Frame folder {str(folder)!r} is not a directory.")
    frames = [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in FRAME_EXTENSIONS
    ]
    if not frames:
        raise ValueError(
            f"Frame folder {str(folder)!r} holds no frames ({', '.join(FRAME_EXTENSIONS)})."
        )
    return sorted(frames, key=lambda p: natural_key(p.name))


class TruncatedVideoError(ValueError):
    """A video gave fewer frames than its header declares (a cut or damaged file)."""


_FFMPEG_BANNER = ("ffmpeg version", "built with", "configuration:", "lib", "=== stderr ===")


def _ffmpeg_reason(err: BaseException) -> str:
    """imageio-ffmpeg's error without ffmpeg's version banner (which it quotes in full):
    its first line, and the last line ffmpeg printed about the file."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    details = [line for line in lines[1:] if not line.startswith(_FFMPEG_BANNER)]
    return lines[0] + (f" ({details[-1]})" if details else "")


def _video_header(path) -> tuple[float, int | None]:
    """(frame rate, declared frame count or None) of a video file.

    The count is the header's frame count where it has one, else its duration times its
    frame rate (what ffmpeg reports for MP4/MKV), rounded.

    Raises:
        ValueError: unreadable file or no frame rate.
    """
    import imageio.v3 as iio

    try:
        meta = iio.immeta(str(path), plugin="FFMPEG")
    except Exception as err:  # imageio/ffmpeg raise OSError, RuntimeError, IndexError, ...
        raise ValueError(f"Cannot read video {str(path)!r}: {_ffmpeg_reason(err)}") from None
    fps = meta.get("fps")
    if not fps or not np.isfinite(fps):
        raise ValueError(f"Video {str(path)!r} has no frame rate in its header.")
    total = meta.get("nframes")
    duration = meta.get("duration")
    if not (isinstance(total, (int, float)) and np.isfinite(total)):
        valid = isinstance(duration, (int, float)) and np.isfinite(duration) and duration > 0
        total = round(duration * fps) if valid else None
    return float(fps), None if total is None else int(total)


def check_frame_count(path, read: int, declared: int | None) -> None:
    """Raise :class:`TruncatedVideoError` when ``read`` frames fall short of the
    ``declared`` count by more than rounding (one frame, or 1% of long videos)."""
    if declared and declared - read > max(1, declared // 100):
        raise TruncatedVideoError(
            f"Video {str(path)!r} is truncated or damaged: its header declares {declared} "
            f"frames but only {read} could be decoded"
        )


def iter_frames(source) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, frame)`` for every frame of a video file or a folder of frames.

    Frames are float32 ``(H, W, 3)`` in ``[0, 1]``; names are the file names for a folder
    and ``frame_NNNNNN.png`` (from 1) for a video.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: unreadable video or image, or a folder without frames.
    """
    source = pathlib.Path(source)
    if source.is_dir():
        for path in list_frames(source):
            yield path.name, read_image(path)
        return
    if not source.is_file():
        raise FileNotFoundError(f"Video input {str(source)!r} does not exist.")
    import imageio.v3 as iio

    try:
        for index, frame in enumerate(iio.imiter(str(source), plugin="FFMPEG"), start=1):
            frame = np.asarray(frame)
            if frame.ndim == 2:
                frame = np.repeat(frame[..., None], 3, axis=-1)
            yield f"frame_{index:06d}.png", frame[..., :3].astype(np.float32) / np.float32(255)
    except Exception as err:  # imageio/ffmpeg raise OSError, RuntimeError, IndexError, ...
        raise ValueError(f"Cannot decode video {str(source)!r}: {_ffmpeg_reason(err)}") from None


# ---------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------


def _frame_recurrence(model):
    """The :class:`keras_layers.FrameRecurrence` layer of a video model, or None."""
    from keras_layers import FrameRecurrence

    for layer in getattr(model, "layers", []):
        if isinstance(layer, FrameRecurrence):
            return layer
    return None


_GRAPH_STEPS = weakref.WeakKeyDictionary()


def _graph_step(layer):
    """The layer's step network as one ``tf.function`` (cached per layer).

    All frames of a video share one shape, so one trace serves them all; eager calls
    would pay Python overhead on every layer of every frame.
    """
    import tensorflow as tf

    if layer not in _GRAPH_STEPS:
        step_model = layer.step_model
        _GRAPH_STEPS[layer] = tf.function(
            lambda inputs: step_model(inputs, training=False),
            reduce_retracing=True,
            autograph=False,
        )
    return _GRAPH_STEPS[layer]


def stream_video_model(model, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Run a recurrent video network over a stream of frames, one output per frame.

    Follows :class:`keras_layers.FrameRecurrence`'s rules with a look-ahead buffer of
    ``num_future`` frames: zero initial state, missing past estimates replaced by the
    first frame, missing future frames by the last frame, estimates fed back unclamped.
    Only ``num_future + 1`` input frames and ``num_past`` estimates are held at once.

    Args:
        model: a Keras video model containing a ``FrameRecurrence`` layer (``sarn_video``).
        frames: float32 ``(H, W, 3)`` frames, all of one size.

    Yields:
        Unclamped float32 ``(H, W, 3)`` estimates.

    Raises:
        ValueError: the model has no ``FrameRecurrence`` layer.
    """
    import tensorflow as tf

    layer = _frame_recurrence(model)
    if layer is None:
        raise ValueError(f"Model {model.name!r} has no FrameRecurrence layer to stream with.")
    step = _graph_step(layer)
    iterator = iter(frames)
    buffer = collections.deque()
    exhausted = False

    def fill():
        nonlocal exhausted
        while not exhausted and len(buffer) < layer.num_future + 1:
            try:
                buffer.append(np.asarray(next(iterator), dtype=np.float32)[None])
            except StopIteration:
                exhausted = True

    fill()
    if not buffer:
        return
    height, width = buffer[0].shape[1:3]
    states = layer.initial_states(1, height, width)
    past = [buffer[0]] * layer.num_past
    while buffer:
        future = [buffer[min(k, len(buffer) - 1)] for k in range(1, layer.num_future + 1)]
        stacked = np.concatenate(past + [buffer[0]] + future, axis=-1)
        estimate, *states = step([tf.constant(stacked), *states])
        estimate = np.asarray(estimate, dtype=np.float32)
        if layer.num_past:
            past = (past + [estimate])[1:]
        yield estimate[0]
        buffer.popleft()
        fill()


def _as_runner(model, precision: str | None = None):
    """``model`` (a Runner, ``keras.Model``, model file or registry name) as a Runner that
    can deblur a video, in ``precision`` (see :mod:`tfdeblur.precision`): a video network
    must be a Keras model to stream."""
    from tfdeblur.inference import load_runner

    runner = load_runner(model, precision=precision)
    if runner.is_video and runner.kind != "keras":
        raise ValueError(
            f"Video network {runner.name!r} from a {runner.kind} file cannot stream; "
            "use its .keras model."
        )
    return runner


def _checked_frames(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    size = None
    for frame in frames:
        frame = np.asarray(frame, dtype=np.float32)
        if frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(f"frames must be (H, W, 3), got shape {frame.shape}.")
        if size is None:
            size = frame.shape[:2]
        if frame.shape[:2] != size:
            raise ValueError(
                f"All frames must have one size: the first is {size}, a later one "
                f"{frame.shape[:2]} (H, W)."
            )
        yield frame


def stream_deblur(
    model,
    frames: Iterable[np.ndarray],
    *,
    tile: int | str | None = None,
    overlap: int = 32,
    precision: str | None = None,
) -> Iterator[np.ndarray]:
    """Deblur a stream of frames, one unclamped float32 ``(H, W, 3)`` output per frame.

    A recurrent video network streams with its recurrence (:func:`stream_video_model`,
    equal to its clip model on the whole sequence); an image network runs on each frame
    (:func:`tfdeblur.deblurring.run_image`, tiled when ``tile`` is set). Every frame must
    have the size of the first.

    Args:
        model: ``sarn_video`` (or any Keras model with a
            :class:`keras_layers.FrameRecurrence` layer), or an image network: a
            ``keras.Model``, a :class:`tfdeblur.inference.Runner`, or what
            :func:`tfdeblur.inference.load_runner` loads.
        frames: float32 ``(H, W, 3)`` frames in ``[0, 1]``.
        tile: tile side for image networks (None, int or ``"auto"``); video networks run
            on whole frames.
        overlap: tile overlap.
        precision: ``"float32"``, ``"bfloat16"`` or ``"auto"`` for Keras models (see
            :mod:`tfdeblur.precision`); None (default): a given Runner as it is, anything
            else in float32.

    Raises:
        ValueError: frames of different sizes or not ``(H, W, 3)``; a video network from a
            ``.tflite``/``.onnx`` file, or without a ``FrameRecurrence`` layer.
    """
    runner = _as_runner(model, precision)
    if runner.is_video:
        yield from stream_video_model(runner.model, _checked_frames(frames))
        return
    from tfdeblur.deblurring import run_image

    for frame in _checked_frames(frames):
        yield run_image(runner, frame, tile, overlap)


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------


def _writer_options(path, codec: str | None, height: int, width: int) -> dict:
    """imageio-ffmpeg writer options: codec, pixel format, quality (module docstring)."""
    if codec == "lossless":
        return {"codec": "libx264rgb", "pixelformat": "rgb24", "output_params": ["-crf", "0"]}
    # 4:2:0 chroma needs even sides; odd-sized frames are written 4:4:4 instead.
    chroma = "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"
    if codec is None and pathlib.Path(path).suffix.lower() == ".webm":
        return {
            "codec": "libvpx-vp9",
            "pixelformat": chroma,
            "output_params": ["-crf", "24", "-b:v", "0"],
        }
    codec = codec or "libx264"
    if codec != "libx264":
        return {"codec": codec}
    return {"codec": codec, "pixelformat": chroma, "output_params": ["-crf", str(VIDEO_CRF)]}


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


@contextlib.contextmanager
def _frame_writer(target: pathlib.Path, fps: float, codec: str | None, height: int, width: int):
    """A ``write(image, name)`` function for the frames of one output, as a context.

    A video file is encoded into a temporary file of :func:`tfdeblur.fileio.atomic_path`
    (same suffix, so ffmpeg picks the container) that becomes ``target`` only when the
    context exits without an error; after an error ffmpeg is stopped and nothing is left.
    A folder (created here) gets one atomic 8-bit PNG per frame, named after the input
    frame.
    """
    if not is_video_file(target):
        target.mkdir(parents=True, exist_ok=True)
        yield lambda image, name: write_image(target / (pathlib.Path(name).stem + ".png"), image)
        return
    import imageio.v2 as imageio

    with atomic_path(target) as tmp:
        writer = imageio.get_writer(
            str(tmp),
            format="FFMPEG",
            fps=fps,
            quality=None,
            macro_block_size=1,
            ffmpeg_log_level="error",
            **_writer_options(target, codec, height, width),
        )
        try:
            yield lambda image, name: writer.append_data(_to_uint8(image))
        except BaseException:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - already failing; keep the first error
                pass
            raise
        writer.close()  # flushes the file before atomic_path moves it into place


def deblur_video(
    model,
    source,
    target,
    *,
    fps: float | None = None,
    codec: str | None = None,
    tile: int | str | None = None,
    overlap: int = 32,
    compare: bool = False,
    on_frame: Callable[[int, int | None], None] | None = None,
    precision: str | None = None,
) -> dict:
    """Deblur a video file or a folder of frames into a video file or a folder of PNGs.

    ``target`` is a video file when its extension is a video container's
    (:data:`VIDEO_EXTENSIONS`), else a folder (created if missing).

    Args:
        model: a Keras model, a :class:`tfdeblur.inference.Runner`, a model file or a
            registry name (see :func:`stream_deblur`).
        source: video file or folder of frames.
        target: output video file or folder; never the input itself.
        fps: frame rate of an output video. Default: the input video's, 24 for a folder.
        codec: ffmpeg codec of an output video: None (H.264 CRF 16, VP9 for ``.webm``),
            ``"lossless"`` (RGB H.264, CRF 0) or an ffmpeg codec name.
        tile: tile for image networks (None, int or ``"auto"``).
        overlap: tile overlap.
        compare: also write the comparison image of the middle frame
            (:func:`tfdeblur.deblurring.compare_path` of ``target``).
        on_frame: called as ``on_frame(done, total_or_None)`` after each frame.
        precision: ``"float32"``, ``"bfloat16"`` or ``"auto"`` for Keras models (see
            :mod:`tfdeblur.precision`); None (default): a given Runner as it is, anything
            else in float32.

    Returns:
        ``{"frames": n, "fps": fps, "seconds": model time, "target": path}``.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        TruncatedVideoError: a video file gave fewer frames than its header declares
            (:func:`check_frame_count`); an output video is then not written.
        ValueError: ``target`` is ``source``, bad ``fps``, unreadable input, no frames,
            frames of different sizes, a video network given as ``.tflite``/``.onnx``,
            two frames that would be written to one PNG, or a comparison image that would
            overwrite an input.
    """
    source, target = pathlib.Path(source), pathlib.Path(target)
    if not source.exists():
        raise FileNotFoundError(f"Video input {str(source)!r} does not exist.")
    if source.resolve() == target.resolve():
        raise ValueError(f"Output {str(target)!r} is the input; choose another path.")
    check_output_path(target, "output", directory=not is_video_file(target))
    if fps is not None and (not np.isfinite(fps) or fps <= 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}.")
    inputs = list_frames(source) if source.is_dir() else [source]
    if source.is_dir() and not is_video_file(target):
        stems = [p.stem for p in inputs]
        twins = sorted({stem for stem in stems if stems.count(stem) > 1})
        if twins:
            raise ValueError(
                f"Frames {twins[:3]} of {str(source)!r} exist with several extensions and "
                f"would all be written to one PNG in {str(target)!r}; rename them."
            )
    if compare:
        from tfdeblur.deblurring import compare_path

        if compare_path(target).resolve() in {p.resolve() for p in inputs}:
            raise ValueError(
                f"The comparison image {str(compare_path(target))!r} would overwrite an "
                "input; choose another output."
            )
    runner = _as_runner(model, precision)
    if source.is_dir():
        total = len(inputs)
        fps = DEFAULT_FPS if fps is None else fps
    else:
        header_fps, total = _video_header(source)
        fps = header_fps if fps is None else fps

    # Inputs wait here until their output comes (the stream looks ahead); decoding time
    # is kept apart from the model's.
    pending = collections.deque()
    reading = {"seconds": 0.0}

    def frames() -> Iterator[np.ndarray]:
        stream = iter_frames(source)
        while True:
            start = time.perf_counter()
            item = next(stream, None)
            reading["seconds"] += time.perf_counter() - start
            if item is None:
                return
            pending.append(item)
            yield item[1]

    outputs = stream_deblur(runner, frames(), tile=tile, overlap=overlap)
    seconds = 0.0

    def next_output():
        # The model's time: the wait for the next output less the decoding inside it.
        nonlocal seconds
        start, read_before = time.perf_counter(), reading["seconds"]
        out = next(outputs, None)
        seconds += time.perf_counter() - start - (reading["seconds"] - read_before)
        return out

    out = next_output()
    if out is None:
        raise ValueError(f"Video input {str(source)!r} has no frames.")
    count, middle = 0, None
    with _frame_writer(target, fps, codec, *out.shape[:2]) as write:
        while out is not None:
            name, frame = pending.popleft()
            write(out, name)
            if compare and count == (total or 1) // 2:
                middle = frame, np.clip(out, 0.0, 1.0)
            count += 1
            if on_frame is not None:
                on_frame(count, total)
            out = next_output()
        if not source.is_dir():
            try:
                check_frame_count(source, count, total)
            except TruncatedVideoError as err:
                kept = (
                    f"; the {count} frames before the damage were written to {str(target)!r}"
                    if not is_video_file(target)
                    else f"; nothing was written to {str(target)!r}"
                )
                raise TruncatedVideoError(f"{err}{kept}.") from None
    if compare and middle is not None:
        from tfdeblur.compare import comparison_image
        from tfdeblur.deblurring import compare_path

        write_image(compare_path(target), comparison_image(*middle))
    return {"frames": count, "fps": float(fps), "seconds": seconds, "target": str(target)}
