"""``tfdeblur eval --model FILE_OR_NAME --data PATH``: per-image PSNR/SSIM/seconds to CSV."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a model on a GOPRO-layout or paired dataset",
        description="Per-image PSNR (RGB), SSIM (scikit-image Gaussian) and seconds to CSV; prints the means.",
    )
    p.add_argument("--model", required=True, help="a .keras file or a registered network name")
    p.add_argument("--data", required=True, help="dataset root (GOPRO_Large or paired folder) or 'demo'")
    p.add_argument("--split", default="test")
    p.add_argument("--blur-key", default="blur", choices=["blur", "blur_gamma"])
    p.add_argument("--csv", default="eval.csv", help="output CSV (default: eval.csv)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N pairs only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tfdeblur import data
    from tfdeblur.evaluate import evaluate
    from tfdeblur.inference import load_model

    pairs = data.find_pairs(data.resolve_data(args.data), args.split, args.blur_key)
    data.validate_pairs(pairs)
    model = load_model(args.model)
    means = evaluate(model, pairs, csv_path=args.csv, limit=args.limit)
    print(
        f"{means['count']} images: PSNR {means['psnr']:.2f} dB (blurry {means['psnr_blurry']:.2f} dB), "
        f"SSIM {means['ssim']:.4f}, {means['seconds']:.3f} s/image. Per-image rows: {args.csv}"
    )
    return 0
