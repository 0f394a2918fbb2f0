"""``.keras`` export: the model file itself, loadable with ``safe_mode=True``.

The ``.keras`` archive holds the architecture (every tfdeblur layer's config) and the
weights; loading needs ``import tfdeblur`` first (it registers the custom layers)::

    import keras, tfdeblur
    model = keras.models.load_model("lcnet.keras", safe_mode=True)

Layers keep their training formulation (a ``.keras`` file is for Keras, where it is
the fastest).
"""

from __future__ import annotations

import pathlib

from export.result import ExportResult, check_output_path, finish
from tfdeblur.fileio import atomic_path


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
        path: output file, ending with ``.keras`` (replaced if it exists).
        verify: reload it with ``keras.models.load_model(path, safe_mode=True)``, run it on
            ``images`` and raise :class:`export.ExportVerificationError` if it disagrees.
        images: verification images (see :func:`export.verify.load_image_pairs`).
        crop: ``(H, W)`` centre crop of the verification images.
        verbose: print what was written and the verification summary.

    Returns:
        :class:`export.ExportResult`.
    """
    path = check_output_path(path, ".keras")
    with atomic_path(path) as tmp:
        model.save(tmp)
    return finish(
        model, pathlib.Path(path), "keras", "none", [],
        verify_images=images, do_verify=verify, verbose=verbose, crop=crop,
    )  # fmt: skip
