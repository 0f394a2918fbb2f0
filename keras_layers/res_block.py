"""The modified residual block of deblurring networks (no normalisation, no post-activation).

Reference:
    Nah et al., CVPR 2017, sec. 3.1 / Fig. 3 (conv, ReLU, conv, identity add; batch
    normalisation and the activation after the add removed); LCNet sec. 2.1 uses the same
    block with LeakyReLU(0.2).
"""

from __future__ import annotations

import keras

from keras_layers.initializers import sublayer_conv


def residual_convs(layer, input_shape):
    """The two convolutions of a residual block, ``conv1`` and ``conv2``, built.

    Both keep the channels of ``input_shape`` (the block's ``x``), with the ``"same"``
    padding, ``kernel_size`` and a fresh instance of the ``kernel_initializer`` of
    ``layer`` (the block that owns them, also giving their dtype policy). Shared by
    :class:`ResBlock` and SAPHN's :class:`keras_layers.GlobalLocalResBlock`.

    Raises:
        ValueError: the channel count of ``input_shape`` is unknown.
    """
    channels = input_shape[-1]
    if channels is None:
        raise ValueError(f"{type(layer).__name__} needs a known channel count, got {input_shape}.")
    convs = tuple(
        sublayer_conv(layer, channels, layer.kernel_size, name, padding="same")
        for name in ("conv1", "conv2")
    )
    for conv in convs:
        conv.build(input_shape)
    return convs


@keras.saving.register_keras_serializable(package="tfdeblur")
class ResBlock(keras.layers.Layer):
    """``y = x + conv(act(conv(x)))`` with no normalisation and nothing after the add.

    Args:
        kernel_size: int, kernel of both convolutions. Default 3.
        activation: ``"leaky_relu"`` (LCNet) or ``"relu"`` (DeepDeblur). Default
            ``"leaky_relu"``.
        negative_slope: float, LeakyReLU slope. Default 0.2 (LCNet sec. 2.1).
        kernel_initializer: initializer of the convolutions. Default Xavier uniform.
    """

    def __init__(
        self,
        kernel_size=3,
        activation="leaky_relu",
        negative_slope=0.2,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if activation not in ("leaky_relu", "relu"):
            raise ValueError(f"activation must be 'leaky_relu' or 'relu', got {activation!r}.")
        self.kernel_size = kernel_size
        self.activation = activation
        self.negative_slope = float(negative_slope)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        if activation == "relu":
            self.act = keras.layers.ReLU(dtype=self.dtype_policy, name="act")
        else:
            self.act = keras.layers.LeakyReLU(
                negative_slope=self.negative_slope, dtype=self.dtype_policy, name="act"
            )

    def build(self, input_shape):
        self.conv1, self.conv2 = residual_convs(self, input_shape)

    def call(self, inputs):
        return inputs + self.conv2(self.act(self.conv1(inputs)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_size": self.kernel_size,
            "activation": self.activation,
            "negative_slope": self.negative_slope,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
