"""Deblurring videos and folders of frames, streaming; reading and writing the files is
:mod:`tfdeblur.data.video_io`.

Python::

    import tfdeblur.infer.video as video
    video.deblur_video("runs/sarn_video/final.keras", "shaky.mp4", "steady.mp4")
    video.deblur_video(model, "frames/", "sharp_frames/")            # folders of frames

Command line: ``tfdeblur deblur-video IN -o OUT --model sarn_video.keras``
(:mod:`tfdeblur.commands.deblur_video`), and the videos among the inputs of
``tfdeblur deblur`` (:mod:`tfdeblur.commands.deblur`, :func:`tfdeblur.infer.files.deblur_files`):
both call :func:`deblur_video`.

A recurrent video network (one with a :class:`keras_layers.FrameRecurrence` layer, i.e.
``sarn_video``) runs as a stream (:func:`stream_video_model`): its step network is called
once per frame, carrying the ConvLSTM state and the previous estimates, with a look-ahead
of ``num_future`` frames, under the rules of the clip model (zero initial state, the first
frame standing in for missing past estimates, the last frame for missing future frames),
so the outputs are the clip model's outputs on the whole video while only
``num_future + 1`` input frames and ``num_past`` estimates are held. An image network runs
on each frame, tiled when asked (:func:`tfdeblur.infer.images.run_image`), from a ``.keras``,
``.tflite`` or ``.onnx`` file; a video network streams from its ``.keras`` file only.

Conventions:

* Frames are float32 RGB in ``[0, 1]``: a video's 8-bit frames ``v / 255`` (read with
  ``imageio``'s ffmpeg plugin, audio ignored), a folder's images as
  :func:`tfdeblur.data.image_io.read_image` reads them (files ordered by name, digit runs
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
import pathlib
import time
import weakref
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from tfdeblur.data.image_io import write_image
from tfdeblur.data.video_io import (
    DEFAULT_FPS,
    TruncatedVideoError,
    check_frame_count,
    frame_writer,
    is_video_file,
    iter_frames,
    list_frames,
    video_header,
)
from tfdeblur.fileio import check_output_path
from tfdeblur.infer.images import compare_path, run_image

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
    can deblur a video, in ``precision`` (see :mod:`tfdeblur.infer.precision`): a video network
    must be a Keras model to stream."""
    from tfdeblur.infer.runners import load_runner

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
    (:func:`tfdeblur.infer.images.run_image`, tiled when ``tile`` is set). Every frame must
    have the size of the first.

    Args:
        model: ``sarn_video`` (or any Keras model with a
            :class:`keras_layers.FrameRecurrence` layer), or an image network: a
            ``keras.Model``, a :class:`tfdeblur.infer.runners.Runner`, or what
            :func:`tfdeblur.infer.runners.load_runner` loads.
        frames: float32 ``(H, W, 3)`` frames in ``[0, 1]``.
        tile: tile side for image networks (None, int or ``"auto"``); video networks run
            on whole frames.
        overlap: tile overlap.
        precision: ``"float32"``, ``"bfloat16"`` or ``"auto"`` for Keras models (see
            :mod:`tfdeblur.infer.precision`); None (default): a given Runner as it is, anything
            else in float32.

    Raises:
        ValueError: frames of different sizes or not ``(H, W, 3)``; a video network from a
            ``.tflite``/``.onnx`` file, or without a ``FrameRecurrence`` layer.
        tfdeblur.backend.BackendError: Keras runs on another backend than TensorFlow.
    """
    from tfdeblur.backend import require_tensorflow

    require_tensorflow("tfdeblur.infer.video.stream_deblur")
    runner = _as_runner(model, precision)
    if runner.is_video:
        yield from stream_video_model(runner.model, _checked_frames(frames))
        return
    for frame in _checked_frames(frames):
        yield run_image(runner, frame, tile, overlap)


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
        model: a Keras model, a :class:`tfdeblur.infer.runners.Runner`, a model file or a
            registry name (see :func:`stream_deblur`).
        source: video file or folder of frames.
        target: output video file or folder; never the input itself.
        fps: frame rate of an output video. Default: the input video's, 24 for a folder.
        codec: ffmpeg codec of an output video: None (H.264 CRF 16, VP9 for ``.webm``),
            ``"lossless"`` (RGB H.264, CRF 0) or an ffmpeg codec name.
        tile: tile for image networks (None, int or ``"auto"``).
        overlap: tile overlap.
        compare: also write the comparison image of the middle frame
            (:func:`tfdeblur.infer.images.compare_path` of ``target``).
        on_frame: called as ``on_frame(done, total_or_None)`` after each frame.
        precision: ``"float32"``, ``"bfloat16"`` or ``"auto"`` for Keras models (see
            :mod:`tfdeblur.infer.precision`); None (default): a given Runner as it is, anything
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
        header_fps, total = video_header(source)
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
    with frame_writer(target, fps, codec, *out.shape[:2]) as write:
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
        from tfdeblur.infer.compare import comparison_image

        write_image(compare_path(target), comparison_image(*middle))
    return {"frames": count, "fps": float(fps), "seconds": seconds, "target": str(target)}
