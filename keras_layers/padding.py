"""Pad-to-multiple and crop-back, so every model (and every exported artifact) takes any H x W.

Encoder-decoders need H and W divisible by their total down-sampling factor. Like
NAFNet's ``check_image_size`` the model pads at the bottom and right inside itself and
crops its output back to the input size, so neither the caller nor an exported
TFLite/ONNX file has to know the multiple.

Padding is with zeros (``PAD`` in TFLite, constant ``Pad`` in ONNX): it works for any
input size, including inputs smaller than the multiple, where reflection would fail.

Backends: written with ``keras.ops``. Under JAX and PyTorch every shape is concrete when
the layer runs, so the pads are Python ints. Under TensorFlow H and W may be unknown
(any-size exports), and the pads are computed in the graph with two TFLite/tf2onnx
workarounds (see :meth:`PadToMultiple.call`); both paths give the same numbers (zeros
at the bottom/right), tested in ``tests/keras_layers/test_basic_layers.py`` and by the
cross-backend reload tests.
"""

from __future__ import annotations

import keras
from keras import ops


def _pad_amount(n, multiple):
    # (m - n % m) % m rather than (-n) % m: tf2onnx lowers FloorMod on integers to a
    # truncating Div, which gets negative operands wrong (ONNX pads by -1 instead of 7).
    return (multiple - n % multiple) % multiple


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
        shape = ops.shape(inputs)
        pad_h = _pad_amount(shape[1], self.multiple)
        pad_w = _pad_amount(shape[2], self.multiple)
        if isinstance(pad_h, int) and isinstance(pad_w, int):
            # Static H, W (every JAX/PyTorch call, fixed-size exports): constant pads.
            return ops.pad(inputs, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
        # Unknown H or W: only a TensorFlow graph has them (any-size exports).
        import tensorflow as tf

        padded = tf.pad(inputs, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
        # tf.pad with dynamic paddings loses every static dim; the TFLite converter then
        # cannot lower the next Conv2D (unknown input channels) with dynamic H, W. A
        # reshape to (B, H', W', C) with C static restores it (RESHAPE is a builtin); its
        # shape is stacked from scalars, so the converter also keeps a static batch (a
        # vector form lost it inside SARN video's while loop and broke its int8 file).
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
        shape = ops.shape(reference)
        return tensor[:, : shape[1], : shape[2], :]

    def compute_output_shape(self, input_shape):
        tensor_shape, reference_shape = input_shape
        return (tensor_shape[0], reference_shape[1], reference_shape[2], tensor_shape[3])
