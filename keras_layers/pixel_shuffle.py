"""Pixel shuffle (sub-pixel convolution's rearrangement) on ``keras.ops.depth_to_space``.

Reference:
    LCNet sec. 2.3 ("Upsampling with Pixelshuffle"); Shi et al., CVPR 2016.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="tfdeblur")
class PixelShuffle(keras.layers.Layer):
    """Rearranges ``(B, H, W, C*r*r)`` into ``(B, H*r, W*r, C)``.

    Channel order is TensorFlow's ``depth_to_space`` (``keras.ops.depth_to_space`` on every
    backend): output pixel ``(i, j)`` of a
    ``r x r`` cell, channel ``c`` reads input channel ``(i*r + j)*C + c``. PyTorch's
    ``nn.PixelShuffle`` reads ``c*r*r + i*r + j`` instead; importers of PyTorch weights
    permute the preceding convolution's output channels (see ``tfdeblur.models.weights``).

    Args:
        upscale_factor: int r >= 1. Default 2.
    """

    def __init__(self, upscale_factor=2, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(upscale_factor, int) or upscale_factor < 1:
            raise ValueError(f"upscale_factor must be a positive integer, got {upscale_factor!r}.")
        self.upscale_factor = upscale_factor

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is not None and channels % (self.upscale_factor**2):
            raise ValueError(
                f"PixelShuffle(upscale_factor={self.upscale_factor}) needs channels divisible "
                f"by {self.upscale_factor**2}, got input shape {input_shape}."
            )

    def call(self, inputs):
        if self.upscale_factor == 1:
            return inputs
        return keras.ops.depth_to_space(inputs, self.upscale_factor)

    def compute_output_shape(self, input_shape):
        r = self.upscale_factor
        b, h, w, c = input_shape
        return (
            b,
            None if h is None else h * r,
            None if w is None else w * r,
            None if c is None else c // (r * r),
        )

    def get_config(self):
        return {**super().get_config(), "upscale_factor": self.upscale_factor}
