"""tfdeblur: dynamic-scene motion deblurring networks in TensorFlow 2 / Keras 3.

Importing the package registers every custom layer (``keras_layers``) with Keras, so
``keras.models.load_model(path, safe_mode=True)`` loads any saved tfdeblur model.
"""

import keras_layers  # noqa: F401  (registers the custom layers)
from tfdeblur.deblurring import deblur
from tfdeblur.registry import (
    build_model,
    get_model_config,
    get_spec,
    get_train_preset,
    list_models,
    register_model,
)

__version__ = "0.1.0"

__all__ = [
    "build_model",
    "deblur",
    "get_model_config",
    "get_spec",
    "get_train_preset",
    "list_models",
    "register_model",
]
