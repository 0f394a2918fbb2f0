"""tfdeblur: dynamic-scene motion deblurring networks in TensorFlow 2 / Keras 3.

Importing the package registers every custom layer (``keras_layers``) with Keras, so
``keras.models.load_model(path, safe_mode=True)`` loads any saved tfdeblur model: at once
when Keras is already imported, else the moment Keras is (:func:`tfdeblur.startup.when_imported`).
The package itself imports neither, and its functions load on first use, so that
``tfdeblur --help`` and ``train.py --help`` start without TensorFlow.
"""

import importlib
import importlib.util

from tfdeblur.startup import when_imported

__version__ = "0.1.0"

# Public name -> the module that defines it (imported on first access).
_API = {
    "build_model": "tfdeblur.models.registry",
    "deblur": "tfdeblur.infer.images",
    "get_model_config": "tfdeblur.models.registry",
    "get_spec": "tfdeblur.models.registry",
    "get_train_preset": "tfdeblur.models.registry",
    "list_models": "tfdeblur.models.registry",
    "register_model": "tfdeblur.models.registry",
}

__all__ = sorted(_API)

when_imported("keras", lambda: importlib.import_module("keras_layers"))


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}"):
        value = importlib.import_module(f"{__name__}.{name}")  # tfdeblur.data, ...
    else:
        raise AttributeError(f"module 'tfdeblur' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
