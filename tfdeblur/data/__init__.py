"""Data: GOPRO / paired-folder discovery and validation, tf.data pipelines, the demo dataset.

Typical use::

    from tfdeblur import data

    root = data.resolve_data("demo")              # or a GOPRO_Large / paired folder
    pairs = data.find_pairs(root, "train", blur_key="blur")
    data.validate_pairs(pairs, min_size=256)      # errors name the bad files
    ds = data.train_dataset(pairs, batch_size=16, patch_size=256, seed=0)

Discovery and validation need no TensorFlow; the ``tf.data`` parts (``decode_image``,
``train_dataset``, ``eval_dataset``, ``find_clips``, ``clip_dataset``) import it when first
used, so ``import tfdeblur`` under the JAX or PyTorch backend does not.
"""

import importlib

from tfdeblur.data.demo import ensure_demo_dataset
from tfdeblur.data.pairs import (
    BLUR_KEYS,
    IMAGE_EXTENSIONS,
    DatasetError,
    ImagePair,
    find_pairs,
    load_pair,
    resolve_data,
    validate_pairs,
)

__all__ = [
    "BLUR_KEYS",
    "IMAGE_EXTENSIONS",
    "DatasetError",
    "ImagePair",
    "clip_dataset",
    "decode_image",
    "ensure_demo_dataset",
    "eval_dataset",
    "find_clips",
    "find_pairs",
    "load_pair",
    "resolve_data",
    "train_dataset",
    "validate_pairs",
]

_TF_DATA = {
    "decode_image": "tfdeblur.data.image_io",
    "eval_dataset": "tfdeblur.data.pipeline",
    "train_dataset": "tfdeblur.data.pipeline",
    "clip_dataset": "tfdeblur.data.clips",
    "find_clips": "tfdeblur.data.clips",
}


def __getattr__(name):
    if name in _TF_DATA:
        return getattr(importlib.import_module(_TF_DATA[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
