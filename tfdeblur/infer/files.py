"""Many files at once: where each input goes (:func:`plan_jobs`) and deblurring them all
with a progress bar (:func:`deblur_files`), images through :mod:`tfdeblur.infer.images` and
videos through :mod:`tfdeblur.infer.video`.

Every file is written atomically and an input is never overwritten, nor is one output
written over another (:func:`plan_jobs`, which checks the ``--compare`` images too).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
import time
from collections.abc import Iterable

from tfdeblur.data.image_io import READ_EXTENSIONS, WRITE_FORMATS
from tfdeblur.data.video_io import VIDEO_EXTENSIONS, is_video_file
from tfdeblur.fileio import check_output_path
from tfdeblur.infer.images import _describe_tile, compare_path, deblur_image_file
from tfdeblur.infer.video import deblur_video

#: File extensions treated as images when scanning folders: those
#: :data:`tfdeblur.data.image_io.READ_EXTENSIONS` (videos:
#: :data:`tfdeblur.data.video_io.VIDEO_EXTENSIONS`).
IMAGE_EXTENSIONS = READ_EXTENSIONS


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
      extensions :func:`~tfdeblur.data.image_io.write_image` cannot write become ``.png``.
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
