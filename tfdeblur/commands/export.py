"""``tfdeblur export``: write a SavedModel, .keras, TFLite or ONNX artifact and verify it.

Examples::

    tfdeblur export --model lcnet.keras --format tflite --quantization int8 \\
        --calibration-data demo --verify-images photos/
    tfdeblur export --model lcnet.keras --format onnx --output deploy/lcnet.onnx
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from tfdeblur.options import FORMATS, SUFFIXES


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a model to SavedModel, .keras, TFLite or ONNX and verify the artifact",
        description="Export a model and run the artifact on real images: prints its PSNR "
        "against the Keras output (and against the sharp images where there are any) and "
        "fails when it disagrees beyond the tolerance of its format.",
    )
    p.add_argument("--model", required=True, help="a .keras file or a registered network name")
    p.add_argument("--preset", default=None, help="model preset when --model is a registry name")
    p.add_argument("--format", required=True, choices=sorted(FORMATS), help="artifact format")
    p.add_argument(
        "--quantization",
        default="none",
        choices=["none", "float16", "dynamic", "int8"],
        help="TFLite quantization (default: none)",
    )
    p.add_argument(
        "--io-type",
        default="uint8",
        choices=["uint8", "int8", "float32"],
        help="input/output type of int8 TFLite models (default: uint8)",
    )
    p.add_argument("--input-size", default=None, help="fix the input size, HxW (e.g. 720x1280)")
    p.add_argument(
        "--calibration-data",
        default="demo",
        help="int8 calibration data: 'demo' or a GOPRO/paired dataset folder (default: demo)",
    )
    p.add_argument("--calibration-samples", type=int, default=32, help="int8 calibration crops")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    p.add_argument(
        "--verify-images",
        nargs="+",
        default=None,
        help="images or folders to verify the artifact on (default: the demo test split); "
        "'*blur*' images find their '*sharp*' twins",
    )
    p.add_argument("--no-verify", action="store_true", help="skip the verification")
    p.add_argument(
        "--output",
        "-o",
        default=None,
        help="artifact path (default: <model>[_<quantization>].<ext> in the current folder)",
    )
    p.add_argument("--report", default=None, help="also write the result as JSON here")
    p.set_defaults(func=run)


def default_output(model_spec: str, fmt: str, quantization: str) -> pathlib.Path:
    stem = pathlib.Path(model_spec).stem if model_spec.endswith(".keras") else model_spec
    if fmt == "tflite" and quantization != "none":
        stem += f"_{quantization}"
    if fmt == "saved_model":
        stem += "_savedmodel"
    return pathlib.Path(stem + SUFFIXES.get(fmt, ""))  # a SavedModel is a directory


def run(args: argparse.Namespace) -> int:
    import export
    from tfdeblur.fileio import check_output_path, write_text_atomic
    from tfdeblur.infer.runners import load_model

    if args.quantization != "none" and args.format != "tflite":
        raise ValueError(f"--quantization applies to --format tflite, not {args.format!r}.")
    input_size = export.parse_input_size(args.input_size)
    output = (
        pathlib.Path(args.output)
        if args.output
        else default_output(args.model, args.format, args.quantization)
    )
    # Before the model is read: an output that cannot be written is a bad argument.
    check_output_path(output, "--output", directory=args.format == "saved_model")
    if args.report:
        check_output_path(args.report, "--report")
    model = load_model(args.model, args.preset)
    common = dict(verify=not args.no_verify, images=args.verify_images, verbose=True)
    try:
        result = _export(args, model, output, input_size, common)
    except export.ExportVerificationError as err:
        print(f"tfdeblur export: VERIFICATION FAILED: {err}", file=sys.stderr)
        return 1
    if args.report:
        write_text_atomic(args.report, json.dumps(result.to_dict(), indent=1))
    print(f"exported {result.path} ({result.size_bytes:,} bytes)")
    return 0


def _export(args, model, output, input_size, common):
    import export

    if args.format == "saved_model":
        result = export.saved_model(model, output, input_size=input_size, **common)
    elif args.format == "keras":
        if input_size is not None:
            raise ValueError("--input-size does not apply to --format keras.")
        result = export.keras_file(model, output, **common)
    elif args.format == "onnx":
        result = export.onnx(model, output, args.opset, input_size=input_size, **common)
    else:
        result = export.tflite(
            model,
            output,
            args.quantization,
            args.calibration_data if args.quantization == "int8" else None,
            input_size,
            io_type=args.io_type,
            num_calibration_samples=args.calibration_samples,
            **common,
        )
    return result
