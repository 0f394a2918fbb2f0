"""``.keras`` export: the model file itself, loadable with ``safe_mode=True``.

The ``.keras`` archive holds the architecture (every tfdeblur layer's config) and the
weights; loading needs ``import tfdeblur`` first (it registers the custom layers)::

    import keras, tfdeblur
    model = keras.models.load_model("lcnet.keras", safe_mode=True)

Layers keep their training formulation (a ``.keras`` file is for Keras, where it is
the fastest).
"""

from __future__ import annotations

from export.result import ExportResult, check_output_path, write_verified


def keras_file(
    model,
    path,
    *,
    verify: bool = True,
    images=None,
    crop=None,
    verbose: bool = True,
) -> ExportResult:
    """Save ``model`` as a ``.keras`` file and verify the reloaded model.

    Args:
        model: a Keras model.
        path: output file, ending with ``.keras`` (lower case: Keras refuses other
            suffixes); an existing file is replaced once the new one is verified.
        verify: reload it with ``keras.models.load_model(path, safe_mode=True)``, run it on
            ``images`` and raise :class:`export.ExportVerificationError` if it disagrees
            (an existing file at ``path`` is then left as it was).
        images: verification images (see :func:`export.verify.load_image_pairs`).
        crop: ``(H, W)`` centre crop of the verification images.
        verbose: print what was written and the verification summary.

    Returns:
        :class:`export.ExportResult`.
    """
    path = check_output_path(path, "keras")
    return write_verified(
        model, path, model.save, "keras",
        verify_images=images, do_verify=verify, verbose=verbose, crop=crop,
    )  # fmt: skip
