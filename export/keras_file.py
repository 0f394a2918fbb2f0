"""``.keras`` export: the model file itself, loadable with ``safe_mode=True``.

The ``.keras`` archive holds the architecture (every tfdeblur layer's config) and the
weights; loading needs ``import tfdeblur`` first (it registers the custom layers)::

    import keras, tfdeblur
    model = keras.models.load_model("lcnet.keras", safe_mode=True)

Layers keep their training formulation (a ``.keras`` file is for Keras, where it is
the fastest).
"""

from __future__ import annotations

from export.result import ExportResult, check_output_path, finish_export


def keras_file(model, path, **verification) -> ExportResult:
    """Save ``model`` as a ``.keras`` file and verify the reloaded model.

    Args:
        model: a Keras model.
        path: output file, ending with ``.keras`` (lower case: Keras refuses other
            suffixes); an existing file is replaced once the new one is verified.
        **verification: ``verify``, ``images``, ``crop`` and ``verbose``, as
            :func:`export.result.finish_export` takes them: reload the file with
            ``keras.models.load_model(path, safe_mode=True)`` and check it on the
            verification images (default True), centre-cropped, and print a summary.

    Returns:
        :class:`export.ExportResult`.
    """
    path = check_output_path(path, "keras")
    return finish_export(model, path, model.save, "keras", **verification)
