"""Names and options the command lines share, importable without TensorFlow.

``train.py`` and the ``tfdeblur`` sub-commands build their parsers from this module (and
:mod:`tfdeblur.models.registry`'s ``CATALOG``), so ``--help`` never loads TensorFlow.
"""

from __future__ import annotations

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")

#: Artifact formats :mod:`tfdeblur.infer.runners` runs.
FORMATS = ("saved_model", "keras", "tflite", "onnx")

#: File suffix of each single-file format, matched exactly (a SavedModel is a directory).
SUFFIXES = {"keras": ".keras", "tflite": ".tflite", "onnx": ".onnx"}


def add_device_arguments(parser) -> None:
    """``--strategy`` and ``--mixed-precision``, shared by ``train.py`` and
    ``tfdeblur bench-data`` (which must time the step ``train.py`` runs)."""
    parser.add_argument(
        "--strategy",
        default="auto",
        choices=STRATEGIES,
        help="auto: MirroredStrategy over all GPUs when there are several, else one device",
    )
    parser.add_argument(
        "--mixed-precision",
        nargs="?",
        const="auto",
        default=False,
        choices=("auto", *MIXED_POLICIES),
        help="mixed precision: auto (the default when given without a value) is "
        "mixed_float16 on GPUs, mixed_bfloat16 otherwise",
    )


def parse_loss_terms(text: str) -> dict[str, float]:
    """``l1=1,perceptual=0.1`` -> ``{"l1": 1.0, "perceptual": 0.1}`` (a bare name weighs 1)."""
    import argparse

    terms = {}
    for item in text.split(","):
        name, _, weight = item.partition("=")
        try:
            terms[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad loss term {item!r} (want NAME=WEIGHT)") from None
    return terms


def add_loss_arguments(parser) -> None:
    """``--loss`` and ``--vgg-weights``, shared by ``train.py`` and ``tfdeblur bench-data``
    (a recipe with a perceptual term needs the VGG-19 weights, or ``--loss`` without it)."""
    parser.add_argument(
        "--loss", type=parse_loss_terms, default=None, help="e.g. l1=1,perceptual=0.1"
    )
    parser.add_argument(
        "--vgg-weights", default="imagenet", help="'imagenet' (Keras cache/download) or a local .h5"
    )
