"""Custom Keras layers of tfdeblur, one layer family per module.

Every layer is registered with ``keras.saving.register_keras_serializable(package="tfdeblur")``
so that models saved as ``.keras`` load with ``safe_mode=True`` once this package is imported.
"""

from keras_layers.local_correlation import LCBlock, local_correlation
from keras_layers.padding import CropToReference, PadToMultiple
from keras_layers.pixel_shuffle import PixelShuffle
from keras_layers.res_block import ResBlock

__all__ = [
    "CropToReference",
    "LCBlock",
    "PadToMultiple",
    "PixelShuffle",
    "ResBlock",
    "local_correlation",
]
