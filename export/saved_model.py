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

from export.result import ExportResult, finish_export
from export.signature import input_signature, parse_input_size, serving_function


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


def check_replaceable(directory) -> pathlib.Path:
    """``directory`` as a Path, checked to be safe for a SavedModel export to replace.

    An export replaces a SavedModel (a directory with ``saved_model.pb``) or an empty
    directory; anything else at the destination is the user's (``-o deploy/`` holding
    other files), and replacing it would delete it.

    Raises:
        ValueError: ``directory`` is a file, or a non-empty directory without
            ``saved_model.pb``; the message names it.
    """
    directory = pathlib.Path(directory).expanduser()
    if directory.is_dir():
        if (directory / "saved_model.pb").is_file() or not any(directory.iterdir()):
            return directory
        raise ValueError(
            f"SavedModel output {str(directory)!r} is a non-empty directory without "
            "saved_model.pb; refusing to replace it (and delete its files). Choose a new "
            "directory, e.g. -o deploy/lcnet_savedmodel."
        )
    if directory.exists() or directory.is_symlink():
        raise ValueError(
            f"SavedModel output {str(directory)!r} is a file, not a directory; refusing to "
            "replace it. Choose a directory path."
        )
    return directory


def saved_model(model, directory, *, input_size=None, **verification) -> ExportResult:
    """Export ``model`` as a SavedModel and verify it with ``tf.saved_model.load``.

    Args:
        model: a Keras model (one float32 image or clip input).
        directory: output directory. An existing SavedModel (or empty directory) there
            is replaced once the new one is verified; any other existing file or
            non-empty directory is refused (see :func:`check_replaceable`).
        input_size: ``(H, W)`` to fix the spatial size; None (default) keeps batch, H and
            W dynamic.
        **verification: ``verify``, ``images``, ``crop`` (``input_size`` if None) and
            ``verbose``, as :func:`export.result.finish_export` takes them: verify the
            artifact in its runtime (default True) on the verification images (default
            the demo dataset's test split), centre-cropped, and print a summary.

    Returns:
        :class:`export.ExportResult`.

    Raises:
        ValueError: the destination is not replaceable (see :func:`check_replaceable`).
    """
    input_size = parse_input_size(input_size)
    directory = check_replaceable(directory)
    spec = input_signature(model, batch_size=None, input_size=input_size)
    module = _Serving(model, spec)

    def write(tmp):
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})

    return finish_export(
        model, directory, write, "saved_model", directory=True, input_size=input_size,
        **verification,
    )  # fmt: skip
