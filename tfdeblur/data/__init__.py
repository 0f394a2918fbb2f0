"""Data: GOPRO / paired-folder discovery and validation, tf.data pipelines, the demo dataset.

Typical use::

    from tfdeblur import data

    root = data.resolve_data("demo")              # or a GOPRO_Large / paired folder
    pairs = data.find_pairs(root, "train", blur_key="blur")
    data.validate_pairs(pairs, min_size=256)      # errors name the bad files
    ds = data.train_dataset(pairs, batch_size=16, patch_size=256, seed=0)
"""

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
from tfdeblur.data.pipeline import decode_image, eval_dataset, train_dataset
from tfdeblur.data.video import clip_dataset, find_clips

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
