"""``tfdeblur deblur INPUT... -o OUT --model MODEL``: deblur photos, folders and videos.

Examples::

    tfdeblur deblur photo.jpg -o photo_sharp.jpg --model runs/lcnet/final.keras
    tfdeblur deblur holiday/ -o holiday_sharp/ --model lcnet.tflite --tile auto
    tfdeblur deblur shaky.mp4 -o steady.mp4 --model sarn_video.keras --compare

Exit status: 0 when every file was deblurred, 1 when some failed (each named in the
summary), 2 for bad arguments (nothing is written).
"""

from __future__ import annotations

import argparse
import sys


def tile_argument(value: str):
    """argparse ``type`` of ``--tile`` (here and in ``tfdeblur eval``):
    :func:`tfdeblur.infer.tiling.parse_tile`, the one tile parser."""
    from tfdeblur.infer.tiling import parse_tile

    try:
        return parse_tile(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive number of pixels or 'auto', got {value!r}"
        ) from None


def add_precision_argument(p: argparse.ArgumentParser) -> None:
    """``--precision {auto,float32,bfloat16}`` (``deblur``, ``deblur-video``, ``eval``,
    ``bench``): see :mod:`tfdeblur.infer.precision`."""
    from tfdeblur.infer.precision import PRECISIONS

    p.add_argument(
        "--precision", choices=PRECISIONS, default="float32",
        help="Keras models: float32 (default), bfloat16 (mixed_bfloat16 compute, float32 "
        "outputs; fast on CPUs with AVX512-BF16/AMX) or auto (bfloat16 where the CPU has "
        "bf16 units and the network is faster in it); .tflite/.onnx/SavedModel run as "
        "exported and refuse bfloat16",
    )  # fmt: skip


def add_model_arguments(p: argparse.ArgumentParser, model_help: str) -> None:
    """The options ``tfdeblur deblur`` and ``tfdeblur deblur-video`` share: the model and
    how it runs (``--model``, ``--preset``, ``--tile``, ``--overlap``, ``--threads``), the
    video codec, ``--compare`` and ``-q``; both pass them to the same functions."""
    p.add_argument("--model", required=True, help=model_help)
    p.add_argument("--preset", default=None, help="preset for a registered network name")
    p.add_argument(
        "--tile", type=tile_argument, default=None,
        help="tile side in pixels for images larger than memory allows, or 'auto' "
        "(from the free memory); default: one pass. A model exported with a fixed "
        "--input-size tiles other sizes with that size instead",
    )  # fmt: skip
    p.add_argument("--overlap", type=int, default=32, help="tile overlap in pixels (default 32)")
    p.add_argument(
        "--codec", default=None,
        help="ffmpeg video codec (default libx264, VP9 for .webm), or 'lossless' (RGB H.264, CRF 0)",
    )  # fmt: skip
    p.add_argument(
        "--compare", action="store_true",
        help="also write NAME.compare.png: before/after side by side with a zoomed crop",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="CPU threads for .tflite/.onnx")
    add_precision_argument(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def load_model_runner(args: argparse.Namespace):
    """The :class:`tfdeblur.infer.runners.Runner` of ``--model``, after checking ``--tile`` and
    ``--overlap`` (before the model is loaded); a video network refuses a ``--tile`` (it
    runs on whole frames)."""
    from tfdeblur.infer.runners import load_runner
    from tfdeblur.infer.tiling import check_tiling

    check_tiling(args.tile, args.overlap)
    runner = load_runner(args.model, args.preset, args.threads, precision=args.precision)
    if runner.is_video and isinstance(args.tile, int):
        raise ValueError(
            f"--tile: {runner.name!r} is a recurrent video network, which runs on whole frames."
        )
    return runner


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "deblur",
        help="deblur images, folders (recursively) and videos",
        description="Deblur images (PNG, JPEG, 16-bit PNG kept 16-bit, grayscale kept "
        "grayscale), folders (recursively, mirroring the tree into OUT) and videos (frame "
        "rate kept, audio dropped). Outputs are clamped and rounded once and written "
        "atomically; inputs are never overwritten. A file that cannot be read is reported "
        "and skipped; the exit status is 1 if any failed.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image, video or folder")
    p.add_argument(
        "-o", "--output", required=True,
        help="output file (one input file) or folder (created if missing)",
    )  # fmt: skip
    add_model_arguments(
        p, "a .keras, .tflite or .onnx file, or a registered network name (untrained)"
    )
    p.add_argument(
        "--format", dest="image_format", choices=["png", "jpg"], default=None,
        help="image output format (default: the input's; PNG for formats that cannot be written)",
    )  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tfdeblur.infer.files import deblur_files, plan_jobs

    jobs = plan_jobs(args.inputs, args.output, args.image_format, compare=args.compare)
    runner = load_model_runner(args)
    failures = deblur_files(
        jobs, runner, args.tile, args.overlap, args.compare, args.codec, progress=not args.quiet
    )
    done = len(jobs) - len(failures)
    print(f"tfdeblur deblur: {done} of {len(jobs)} file(s) deblurred into {args.output}")
    if failures:
        print(f"tfdeblur deblur: {len(failures)} failed:", file=sys.stderr)
        for job, message in failures:
            print(f"  {job.source}: {message}", file=sys.stderr)
        return 1
    return 0
