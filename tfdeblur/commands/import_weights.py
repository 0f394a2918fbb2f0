"""``tfdeblur import-weights``: convert official pretrained weights into a ``.keras`` model.

Example::

    tfdeblur import-weights deepdeblur model-1000.pt -o deepdeblur_gopro.keras
"""

from __future__ import annotations

import argparse
import pathlib
import sys

# network -> (name of the importer in tfdeblur.models.weights, what it reads)
IMPORTERS = {
    "deepdeblur": (
        "load_deepdeblur_torch",
        "official DeepDeblur-PyTorch checkpoint (model-<epoch>.pt)",
    ),
}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "import-weights",
        help="convert official pretrained weights into a .keras model",
        description="Convert official pretrained weights into a .keras model that "
        "keras.models.load_model(path, safe_mode=True) loads after `import tfdeblur`. "
        + " ".join(f"{name}: {what}." for name, (_, what) in IMPORTERS.items()),
    )
    parser.add_argument("network", choices=sorted(IMPORTERS), help="which network's weights")
    parser.add_argument("source", help="the official checkpoint file")
    parser.add_argument(
        "-o", "--output", required=True, help="the .keras file to write (written atomically)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    source = pathlib.Path(args.source)
    output = pathlib.Path(args.output)
    if not source.is_file():
        raise FileNotFoundError(f"source checkpoint not found: {source}")
    if output.suffix != ".keras":
        raise ValueError(f"--output must end in .keras, got {output}")
    if output.resolve() == source.resolve():
        raise ValueError(f"--output {output} is the input checkpoint; refusing to write over it.")
    if not output.parent.resolve().is_dir():
        raise FileNotFoundError(f"--output folder does not exist: {output.parent}")

    import tfdeblur.models.weights as weights
    from tfdeblur.fileio import atomic_path

    loader = getattr(weights, IMPORTERS[args.network][0])
    try:
        model = loader(source)
    except ImportError as err:
        print(f"tfdeblur import-weights: error: {err}", file=sys.stderr)
        return 2

    with atomic_path(output) as tmp:  # a crash never leaves a partial file
        model.save(tmp)
    print(f"Wrote {output}: {args.network} ({model.count_params():,} parameters).")
    return 0
