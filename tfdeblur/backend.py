"""Which Keras backend runs, and one clear error for the parts that need TensorFlow.

The networks (``keras_layers``, :mod:`tfdeblur.models`, :func:`tfdeblur.build_model`) are
written with ``keras.ops`` and run on TensorFlow, JAX and PyTorch; a ``.keras`` file saved
under one backend loads under the others. Training (``train.py``, :mod:`tfdeblur.train.loop`),
the ``tf.data`` pipelines, ``tf.distribute``, the exporters and the ``tfdeblur`` commands
are TensorFlow programs: they call :func:`require_tensorflow` first, so that under another
backend they stop with one message saying what to do instead of failing deep inside.
"""

from __future__ import annotations

import keras

TENSORFLOW_ONLY = (
    "training (train.py, tfdeblur.train.loop), the tf.data pipelines (tfdeblur.data), "
    "tf.distribute, the exporters (export), tfdeblur.deblur, tfdeblur.infer.video and every "
    "`tfdeblur` command"
)


class BackendError(ValueError):
    """A TensorFlow-only part of tfdeblur was called under another Keras backend.

    A ``ValueError`` (the ``KERAS_BACKEND`` setting is the bad input), so the command line
    reports it as one line like every other bad argument.
    """


def require_tensorflow(what: str) -> None:
    """Raises :class:`BackendError` naming ``what`` unless Keras runs on TensorFlow.

    Args:
        what: the command or function that was called, e.g. ``"tfdeblur export"``.
    """
    backend = keras.config.backend()
    if backend == "tensorflow":
        return
    raise BackendError(
        f"{what} needs the TensorFlow backend, but Keras runs on {backend!r}. Run it with "
        f"KERAS_BACKEND=tensorflow. TensorFlow-only: {TENSORFLOW_ONLY}. Under {backend}, "
        "tfdeblur builds (tfdeblur.build_model), loads (keras.models.load_model after "
        "`import tfdeblur`), runs (model(x), model.predict) and fits (model.fit on arrays) "
        "every network."
    )
