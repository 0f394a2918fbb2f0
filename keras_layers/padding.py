"""Pad-to-multiple and crop-back, so every model (and every exported artifact) takes any H x W.

Encoder-decoders need H and W divisible by their total down-sampling factor. Like
NAFNet's ``check_image_size`` the model pads at the bottom and right inside itself and
crops its output back to the input size, so neither the caller nor an exported
TFLite/ONNX file has to know the multiple.

Padding is with zeros (``PAD`` in TFLite, constant ``Pad`` in ONNX): it works for any
input size, including inputs smaller than the multiple, where reflection would fail.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfdeblur")
class PadToMultiple(keras.layers.Layer):
    """Zero-pads ``(B, H, W, C)`` at the bottom/right so that H and W divide by ``multiple``.

    Args:
        multiple: int >= 1.
    """

    def __init__(self, multiple, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(multiple, int) or multiple < 1:
            raise ValueError(f"multiple must be a positive integer, got {multiple!r}.")
        self.multiple = multiple

    def call(self, inputs):
        if self.multiple == 1:
            return inputs
        shape = tf.shape(inputs)
        # (m - n % m) % m rather than (-n) % m: tf2onnx lowers FloorMod on integers to a
        # truncating Div, which gets negative operands wrong (ONNX pads by -1 instead of 7).
        pad_h = (self.multiple - shape[1] % self.multiple) % self.multiple
        pad_w = (self.multiple - shape[2] % self.multiple) % self.multiple
        padded = tf.pad(inputs, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
        # tf.pad with dynamic paddings loses every static dim; the TFLite converter then
        # cannot lower the next Conv2D (unknown input channels) with dynamic H, W. A
        # reshape to (B, H', W', C) with C static restores it (RESHAPE is a builtin).
        if inputs.shape[-1] is not None:
            padded = tf.reshape(
                padded, tf.stack([shape[0], shape[1] + pad_h, shape[2] + pad_w, inputs.shape[-1]])
            )
        return padded

    def compute_output_shape(self, input_shape):
        def up(n):
            return None if n is None else -(-n // self.multiple) * self.multiple

        return (input_shape[0], up(input_shape[1]), up(input_shape[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


@keras.saving.register_keras_serializable(package="tfdeblur")
class CropToReference(keras.layers.Layer):
    """Crops ``inputs[0]`` to the spatial size of ``inputs[1]`` (top-left aligned)."""

    def call(self, inputs):
        tensor, reference = inputs
        shape = tf.shape(reference)
        return tensor[:, : shape[1], : shape[2], :]

    def compute_output_shape(self, input_shape):
        tensor_shape, reference_shape = input_shape
        return (tensor_shape[0], reference_shape[1], reference_shape[2], tensor_shape[3])
