"""Video files and folders of frames: reading (ffmpeg through ``imageio``) and writing.

Conventions:

* Frames are float32 RGB in ``[0, 1]``: a video's 8-bit frames ``v / 255`` (read with
  ``imageio``'s ffmpeg plugin, audio ignored), a folder's images as
  :func:`tfdeblur.data.image_io.read_image` reads them (files ordered by name, digit runs
  compared as numbers).
* Outputs are clamped and rounded once, when written. A folder gets 8-bit PNGs named after
  the input frames. A video file is H.264 (``libx264``, CRF 16; 4:2:0 when both sides are
  even, 4:4:4 otherwise, since 4:2:0 needs even sizes), VP9 for ``.webm``;
  ``codec="lossless"`` writes RGB H.264 at CRF 0 (``libx264rgb``).
* Every file is written atomically (:func:`tfdeblur.fileio.atomic_path`).

Deblurring a video: :mod:`tfdeblur.infer.video`.
"""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Iterator

import numpy as np

from tfdeblur.data.image_io import READ_EXTENSIONS, read_image, write_image
from tfdeblur.data.pairs import natural_key
from tfdeblur.fileio import atomic_path

#: Extensions treated as video files.
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
#: Extensions of frames in a folder: every image :func:`tfdeblur.data.image_io.read_image`
#: reads (:data:`tfdeblur.data.image_io.READ_EXTENSIONS`).
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


def video_header(path) -> tuple[float, int | None]:
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
def frame_writer(target: pathlib.Path, fps: float, codec: str | None, height: int, width: int):
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
