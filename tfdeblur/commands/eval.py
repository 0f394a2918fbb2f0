"""``tfdeblur eval --model MODEL --data PATH``: the reproducible GOPRO protocol.

Writes, next to ``--csv`` (default ``eval.csv``):

* ``eval.csv``: one row per image (``name, sequence, psnr, ssim, ssim_matlab, seconds,
  psnr_blurry``);
* ``eval_sequences.csv``: means per sequence and over all images;
* ``eval.json``: settings, software versions and results (to reproduce the run);
* ``eval_table.md``: this run beside the papers' numbers (also printed).

Example::

    tfdeblur eval --model runs/lcnet/final.keras --data /data/GOPRO_Large --blur-key blur
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from tfdeblur.commands.deblur import add_precision_argument, tile_argument


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a model on a GOPRO-layout or paired dataset",
        description="Per-image PSNR (RGB, no crop), SSIM (scikit-image Gaussian; and "
        "MATLAB ssim_index.m on Y), seconds per frame without I/O; per-sequence means; "
        "a table beside the papers' numbers.",
    )
    p.add_argument(
        "--model", required=True, help="a .keras/.tflite/.onnx file or a registered network name"
    )
    p.add_argument("--preset", default=None, help="preset for a registered network name")
    p.add_argument(
        "--data", required=True, help="dataset root (GOPRO_Large or paired folder) or 'demo'"
    )
    p.add_argument("--split", default="test")
    p.add_argument("--blur-key", default="blur", choices=["blur", "blur_gamma"])
    p.add_argument("--csv", default="eval.csv", help="per-image CSV (default: eval.csv)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N pairs only")
    p.add_argument(
        "--tile", type=tile_argument, default=None,
        help="tiled inference: pixels or 'auto' (default: one pass)",
    )  # fmt: skip
    p.add_argument("--overlap", type=int, default=32, help="tile overlap (default 32)")
    p.add_argument(
        "--quantize", action="store_true",
        help="round outputs to 8 bits before scoring (score what a saved PNG holds)",
    )  # fmt: skip
    p.add_argument(
        "--network", default=None,
        help="network name for the papers table (default: the model's name)",
    )  # fmt: skip
    add_precision_argument(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no per-image progress")
    p.set_defaults(func=run)


def _outputs(csv_path: pathlib.Path) -> dict[str, pathlib.Path]:
    stem = csv_path.with_suffix("")
    return {
        "sequences": stem.with_name(stem.name + "_sequences.csv"),
        "record": stem.with_name(stem.name + ".json"),
        "table": stem.with_name(stem.name + "_table.md"),
    }


def run(args: argparse.Namespace) -> int:
    from tfdeblur import data
    from tfdeblur.evaluate.protocol import (
        evaluate,
        paper_table,
        write_record,
        write_sequence_csv,
        write_text,
    )
    from tfdeblur.infer.runners import load_runner
    from tfdeblur.infer.tiling import check_tiling
    from tfdeblur.models.registry import list_models

    tile, _ = check_tiling(args.tile, args.overlap)  # before the data and model are read
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be positive, got {args.limit}.")
    root = data.resolve_data(args.data)
    pairs = data.find_pairs(root, args.split, args.blur_key)
    data.validate_pairs(pairs)
    runner = load_runner(args.model, args.preset, precision=args.precision)
    csv_path = pathlib.Path(args.csv)

    def progress(done, total, row):
        if not args.quiet:
            print(
                f"[{done}/{total}] {row['name']}: PSNR {row['psnr']:.2f} dB, "
                f"SSIM {row['ssim']:.4f}, {row['seconds']:.3f} s",
                file=sys.stderr,
            )

    results = evaluate(
        runner, pairs, csv_path=csv_path, limit=args.limit, tile=tile,
        overlap=args.overlap, quantize=args.quantize, progress=progress,
        precision=args.precision,
    )  # fmt: skip
    network = args.network or (runner.name if runner.name in list_models() else None)
    files = _outputs(csv_path)
    write_sequence_csv(files["sequences"], results)
    settings = {
        "model": str(args.model),
        "model_format": runner.kind,
        "preset": args.preset,
        "network": network,
        "data": str(root),
        "split": args.split,
        "blur_key": args.blur_key,
        "limit": args.limit,
        "tile": tile,
        "overlap": args.overlap,
        "quantize": args.quantize,
        "precision": runner.precision,
        "psnr": "RGB in [0, 1], no border crop",
        "ssim": "skimage structural_similarity(channel_axis=-1, gaussian_weights=True, "
        "sigma=1.5, use_sample_covariance=False, data_range=1)",
        "ssim_matlab": "ssim_index.m (11x11 Gaussian 1.5, K=[0.01 0.03], L=255, 'valid') "
        "on Y of rgb2ycbcr of the 8-bit images",
        "seconds": "network call only (graph mode for Keras), after two warm-up calls",
    }
    write_record(files["record"], results, settings)
    table = paper_table(results, network, args.blur_key)
    write_text(files["table"], table)
    print("per sequence:")
    for seq, means in sorted(results["sequences"].items()):
        print(
            f"  {seq or '(all)'}: {means['count']} images, PSNR {means['psnr']:.2f} dB, "
            f"SSIM {means['ssim']:.4f}, SSIM-MATLAB {means['ssim_matlab']:.4f}"
        )
    print(table)
    print(
        f"{results['count']} images: PSNR {results['psnr']:.2f} dB (blurry "
        f"{results['psnr_blurry']:.2f} dB), SSIM {results['ssim']:.4f}, SSIM-MATLAB "
        f"{results['ssim_matlab']:.4f}, {results['seconds']:.3f} s/frame. Per-image rows: "
        f"{csv_path}; per sequence: {files['sequences']}; record: {files['record']}"
    )
    return 0
