"""Loading a model from a file or a registry name, and running it on one image."""

from __future__ import annotations

import os
import pathlib
import warnings

import keras
import numpy as np


def load_model(spec: str | os.PathLike, preset: str | None = None) -> keras.Model:
    """A Keras model from a ``.keras`` file, or a freshly initialised registered network.

    Args:
        spec: path of a ``.keras`` file (loaded with ``safe_mode=True``), or a registry
            name such as ``"lcnet"`` (untrained weights: a warning says so).
        preset: model preset when ``spec`` is a registry name.

    Raises:
        FileNotFoundError: ``spec`` looks like a file path but does not exist.
        KeyError: ``spec`` is neither a file nor a registered network.
    """
    import tfdeblur  # noqa: F401  (registers the custom layers)
    from tfdeblur import registry

    path = pathlib.Path(spec)
    if path.suffix == ".keras" or os.sep in str(spec):
        if not path.is_file():
            raise FileNotFoundError(f"Model file not found: {path}")
        return keras.models.load_model(path, safe_mode=True)
    model = registry.build_model(str(spec), preset)
    warnings.warn(
        f"--model {spec}: built from the registry with untrained weights; pass a trained "
        ".keras file for real results.",
        stacklevel=2,
    )
    return model


def run_model(model: keras.Model, image: np.ndarray) -> np.ndarray:
    """Deblur one ``(H, W, 3)`` float image; returns the unclamped ``(H, W, 3)`` output."""
    out = model(image[None].astype(np.float32), training=False)
    if isinstance(out, (list, tuple)):
        out = out[0]
    return np.asarray(out, dtype=np.float32)[0]
