"""SavedModel export: one ``serving_default`` signature with dynamic batch, H and W.

The SavedModel keeps the model's own formulation of every layer (TensorFlow Serving and
``tf.saved_model.load`` run any TensorFlow op), so it is as fast as the Keras model.
Load and run it without tfdeblur::

    loaded = tf.saved_model.load("lcnet_savedmodel")
    out = loaded.signatures["serving_default"](blurry=images)["deblurred"]
"""

from __future__ import annotations

import pathlib

import tensorflow as tf

from export.result import ExportResult, finish
from export.signature import input_signature, parse_input_size, serving_function
from tfdeblur.fileio import atomic_path


class _Serving(tf.Module):
    """Tracks the model's variables and holds the serving function.

    Only the variables are tracked, not the Keras model object: saving then skips
    Keras' own object graph (half the saving time) and the SavedModel holds what
    serving needs, the signature and its variables.
    """

    def __init__(self, model, spec):
        super().__init__(name="tfdeblur_serving")
        self.model_variables = list(model.variables)
        self.serve = serving_function(model, spec)


def write_saved_model(model, directory, *, input_size=None) -> pathlib.Path:
    """Write ``model`` as a SavedModel without verifying it (see :func:`saved_model`)."""
    directory = pathlib.Path(directory).expanduser()
    spec = input_signature(model, batch_size=None, input_size=input_size)
    module = _Serving(model, spec)
    # Written beside the target and moved into place: no half-written SavedModel.
    with atomic_path(directory, directory=True) as tmp:
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
    return directory


def saved_model(
    model,
    directory,
    *,
    input_size=None,
    verify: bool = True,
    images=None,
    crop=None,
    verbose: bool = True,
) -> ExportResult:
    """Export ``model`` as a SavedModel and verify it.

    Args:
        model: a Keras model (one float32 image or clip input).
        directory: output directory (replaced if it exists).
        input_size: ``(H, W)`` to fix the spatial size; None (default) keeps batch, H and
            W dynamic.
        verify: run the artifact with ``tf.saved_model.load`` on ``images`` and raise
            :class:`export.ExportVerificationError` if it disagrees with Keras.
        images: verification images (see :func:`export.verify.load_image_pairs`; default
            the demo dataset's test split).
        crop: ``(H, W)`` centre crop of the verification images.
        verbose: print what was written and the verification summary.

    Returns:
        :class:`export.ExportResult`.
    """
    input_size = parse_input_size(input_size)
    path = write_saved_model(model, directory, input_size=input_size)
    return finish(
        model, path, "saved_model", "none", [],
        verify_images=images, do_verify=verify, verbose=verbose, crop=crop or input_size,
    )  # fmt: skip
