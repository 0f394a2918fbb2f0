"""``tfdeblur bench``: size, GFLOPs and latency of every export format, as a table and JSON.

Examples::

    tfdeblur bench --models lcnet --preset paper --output bench.json
    tfdeblur bench --models lcnet.keras --formats keras,tflite,tflite_int8 --sizes 256x256
"""

from __future__ import annotations

import argparse
import json

from tfdeblur.commands.deblur import add_precision_argument


def _sizes(text: str) -> list[tuple[int, int]]:
    from export.signature import parse_input_size

    sizes = [parse_input_size(part) for part in text.split(",") if part.strip()]
    if not sizes:
        raise ValueError(f"--sizes needs at least one HxW, got {text!r}.")
    return sizes


def register(subparsers) -> None:
    from tfdeblur.evaluate.bench import FORMATS

    p = subparsers.add_parser(
        "bench",
        help="benchmark export formats: parameters, file size, GFLOPs, latency",
        description="For each model and format: parameters, file size, GFLOPs per frame, "
        "median latency (after warm-up, synchronised) per input size on this machine, and "
        "PSNR against the Keras output and the sharp images; also the train step of "
        "LCBlock's two local-correlation formulations. Prints a table, writes JSON.",
    )
    p.add_argument(
        "--models",
        nargs="+",
        default=["lcnet"],
        help="registered network names and/or .keras files (default: lcnet)",
    )
    p.add_argument("--preset", default="paper", help="preset of registry models (default: paper)")
    p.add_argument(
        "--formats",
        default=",".join(FORMATS),
        help=f"comma-separated, from {','.join(FORMATS)} (default: all)",
    )
    p.add_argument("--sizes", default="256x256,720x1280", help="latency sizes, HxW,HxW,...")
    p.add_argument("--flops-size", default="720x1280", help="GFLOPs input size HxW")
    p.add_argument("--warmup", type=int, default=3, help="warm-up calls (default: 3)")
    p.add_argument("--runs", type=int, default=10, help="timed calls (default: 10)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument("--calibration-data", default="demo", help="int8 calibration: 'demo' or folder")
    p.add_argument("--calibration-samples", type=int, default=16)
    p.add_argument(
        "--verify-images", nargs="+", default=None, help="images/folders for PSNR (default: demo)"
    )
    p.add_argument("--verify-crop", default=None, help="centre-crop verification images, HxW")
    p.add_argument(
        "--no-lc", action="store_true", help="skip the LCBlock cost (LCNet vs num_lc_blocks=0)"
    )
    p.add_argument("--lc-batch-size", type=int, default=1)
    p.add_argument("--lc-patch-size", type=int, default=256)
    p.add_argument("--lc-steps", type=int, default=5)
    add_precision_argument(p)
    p.add_argument(
        "--network-ratios", action="store_true",
        help="also time LCNet vs LCNet without LCBlocks vs DeepDeblur (paper presets, Keras)",
    )  # fmt: skip
    p.add_argument("--ratio-size", default="256x256", help="size of --network-ratios, HxW")
    p.add_argument("--artifacts-dir", default=None, help="keep the artifacts here")
    p.add_argument("--output", default="bench.json", help="JSON results (default: bench.json)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from export.signature import parse_input_size
    from tfdeblur.evaluate.bench import BenchConfig, format_table, run_bench
    from tfdeblur.fileio import write_text_atomic

    for name in ("warmup", "runs", "calibration_samples", "lc_steps"):
        value = getattr(args, name)
        if value < (0 if name == "warmup" else 1):
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}.")
    config = BenchConfig(
        models=list(args.models),
        preset=args.preset,
        formats=[f.strip() for f in args.formats.split(",") if f.strip()],
        sizes=_sizes(args.sizes),
        flops_size=parse_input_size(args.flops_size),
        warmup=args.warmup,
        runs=args.runs,
        threads=args.threads,
        calibration_data=args.calibration_data,
        calibration_samples=args.calibration_samples,
        verify_images=args.verify_images,
        verify_crop=parse_input_size(args.verify_crop),
        lc_train_step=not args.no_lc,
        lc_batch_size=args.lc_batch_size,
        lc_patch_size=args.lc_patch_size,
        lc_steps=args.lc_steps,
        precision=args.precision,
        network_ratios=args.network_ratios,
        ratio_size=parse_input_size(args.ratio_size),
    )
    results = run_bench(config, args.artifacts_dir)
    output = write_text_atomic(args.output, json.dumps(results, indent=1))
    print(format_table(results))
    print(f"results: {output}")
    return 0
