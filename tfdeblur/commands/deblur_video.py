"""``tfdeblur deblur-video IN -o OUT --model sarn_video.keras``: streaming video deblurring.

Examples::

    tfdeblur deblur-video shaky.mp4 -o steady.mp4 --model runs/sarn_video/final.keras
    tfdeblur deblur-video frames/ -o sharp_frames/ --model sarn_video.keras
    tfdeblur deblur-video frames/ -o sharp.mp4 --fps 30 --model sarn_video.keras

IN is a video file or a folder of frames; OUT is a video file (by its extension) or a
folder of PNG frames. A front end over :func:`tfdeblur.infer.video.deblur_video`, the function
``tfdeblur deblur`` runs for each video among its inputs, with the same model options
(:func:`tfdeblur.commands.deblur.add_model_arguments`): a recurrent video network carries
its state from frame to frame (see :mod:`tfdeblur.infer.video`); an image network runs on each
frame. Exit status 0 on success, 1 for a video that ends before the frame count its
header declares (truncated or damaged), 2 for bad arguments or input.
"""

from __future__ import annotations

import argparse
import sys

from tfdeblur.commands.deblur import add_model_arguments, load_model_runner


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "deblur-video",
        help="deblur a video or a folder of frames with a (recurrent) video network",
        description="Deblur a video file or a folder of frames as a stream: a recurrent "
        "network (sarn_video) carries its ConvLSTM state and past estimates from frame to "
        "frame and looks two frames ahead, giving its clip model's outputs; an image "
        "network runs per frame. OUT is a video file (.mp4, .mkv, ...) or a folder of PNGs.",
    )
    p.add_argument("input", metavar="IN", help="video file or folder of frames")
    p.add_argument("-o", "--output", required=True, help="output video file or folder")
    add_model_arguments(
        p,
        "a .keras file (e.g. a trained sarn_video), a .tflite/.onnx image network, or a "
        "registered network name (untrained)",
    )
    p.add_argument(
        "--fps", type=float, default=None,
        help="frame rate of an output video (default: the input video's; 24 for a folder "
        "of frames)",
    )  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tfdeblur.data.video_io import TruncatedVideoError
    from tfdeblur.infer.video import deblur_video

    runner = load_model_runner(args)

    def progress(done: int, total: int | None) -> None:
        if not args.quiet:
            of = f"/{total}" if total else ""
            print(f"\rdeblur-video: {done}{of} frames", end="", file=sys.stderr, flush=True)

    try:
        summary = deblur_video(
            runner,
            args.input,
            args.output,
            fps=args.fps,
            codec=args.codec,
            tile=args.tile,
            overlap=args.overlap,
            compare=args.compare,
            on_frame=progress,
            precision=args.precision,
        )
    except TruncatedVideoError as err:  # the input failed part-way: not a bad argument
        if not args.quiet:
            print(file=sys.stderr)
        print(f"tfdeblur deblur-video: error: {err}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(file=sys.stderr)
        print(f"Wrote {summary['frames']} frames to {summary['target']}.")
    return 0
