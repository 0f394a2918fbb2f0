"""SARN's self-attention (SA) module: non-local attention over all spatial positions.

Reference:
    Purohit, Rajagopalan, SARN (``../shared/papers/sarn_spatially_adaptive_residual.txt``),
    sec. 2 and 4: "a self-attentive module which captures non-local relationships among the
    intermediate features and enhances the receptive field", "feature attention over
    spatial domain", "the SA module non-locally connects spatially distributed blurred
    regions". The equations are those of SAGAN (Zhang et al., "Self-Attention Generative
    Adversarial Networks", ICML 2019, sec. 3), the self-attention layer of that time.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_layers.initializers import sublayer_conv


@keras.saving.register_keras_serializable(package="tfdeblur")
class SelfAttention2D(keras.layers.Layer):
    """Self-attention over spatial positions with pooled keys and values.

    For the ``N = H*W`` positions ``x_i`` of the input and the ``M`` positions ``x'_j`` of
    a ``pool x pool`` max-pooled copy of the key/value features::

        q_i = W_q x_i,   k_j = maxpool(W_k x)_j,   v_j = maxpool(W_v x)_j   (1x1 convs, C -> C/r)
        beta_ij = softmax_j(q_i . k_j)
        o_i = W_o sum_j beta_ij v_j                                           (1x1 conv, C/r -> C)
        y_i = x_i + gamma * o_i,   gamma a learned scalar initialised to 0

    Readings of the paper, which names the module but gives no equation (Fig. 1 did not
    survive the extraction):

    * The equations are SAGAN's (query/key/value 1x1 projections to ``C/8`` channels,
      ``W_o`` back to ``C``, unscaled dot products, a zero-initialised residual scale
      ``gamma`` so that the module starts as the identity). They add 8,369 parameters
      (0.03 MB) at SARN's 128 channels. Table 3 has "6 DRMs" and "6 DRMs + SA" both at
      11.2 MB: two sizes that round to 11.2 differ by less than 0.1 MB, so the table
      bounds the SA module at ~0.1 MB (25,000 parameters). A full-width value
      projection (``C x C``, 0.08 MB) fits that bound too: the ``C/8`` projections are
      SAGAN's choice, not a reading of the table.
    * Memory. SARN's SA sits at 1/4 resolution: a 1280x720 frame gives ``N = 320*180 =
      57,600`` positions, and a dense ``N x N`` float32 attention map is ``57,600^2 * 4 B =
      13.3 GB`` -- with the softmax's second copy 26.5 GB, which no 16 GB GPU holds. The
      paper asks only that every position attend to the whole frame ("non-local"), so the
      keys and values are max-pooled by ``pool`` (BigGAN's SAGAN layer pools them by 2):
      with ``pool = 4`` the map is ``57,600 x (80*45 = 3,600)`` = 829 MB (1.7 GB with the
      softmax output), and each query still sees the whole frame. ``pool = 1`` gives the
      dense layer; ``pool = 2`` would need 3.3 GB per copy.
    * Max pooling uses ``'same'`` padding (TensorFlow's: the missing rows and columns split
      before/after, padding never the maximum; ``keras.ops.max_pool`` computes the same
      windows on every backend), so any H and W works
      (``M = ceil(H/pool) * ceil(W/pool)``); TFLite's MAX_POOL_2D and ONNX MaxPool
      compute the same windows.

    Args:
        reduction: int r, channel reduction of the query/key/value projections.
            Default 8 (SAGAN).
        pool: int, side of the max pooling of keys and values. Default 4.
        kernel_initializer: initializer of the 1x1 projections. Default Xavier uniform.
    """

    def __init__(self, reduction=8, pool=4, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"reduction must be a positive integer, got {reduction!r}.")
        if not isinstance(pool, int) or pool < 1:
            raise ValueError(f"pool must be a positive integer, got {pool!r}.")
        self.reduction = reduction
        self.pool = pool
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None or channels % self.reduction:
            raise ValueError(
                f"SelfAttention2D needs a known channel count divisible by reduction="
                f"{self.reduction}, got input shape {input_shape}."
            )
        inner = channels // self.reduction

        self.query_conv = sublayer_conv(self, inner, 1, "query_conv")
        self.key_conv = sublayer_conv(self, inner, 1, "key_conv")
        self.value_conv = sublayer_conv(self, inner, 1, "value_conv")
        self.output_conv = sublayer_conv(self, channels, 1, "output_conv")
        for layer in (self.query_conv, self.key_conv, self.value_conv):
            layer.build(input_shape)
        self.output_conv.build(tuple(input_shape[:-1]) + (inner,))
        self.gamma = self.add_weight(name="gamma", shape=(), initializer="zeros")

    def _pooled(self, t):
        if self.pool == 1:
            return t
        return ops.max_pool(t, self.pool, self.pool, padding="same")

    def call(self, inputs):
        shape = ops.shape(inputs)
        batch, height, width = shape[0], shape[1], shape[2]
        query = self.query_conv(inputs)
        key = self._pooled(self.key_conv(inputs))
        value = self._pooled(self.value_conv(inputs))
        inner = query.shape[-1]
        query = ops.reshape(query, (batch, height * width, inner))
        key = ops.reshape(key, (batch, -1, inner))
        value = ops.reshape(value, (batch, -1, inner))
        # Softmax in float32 even under mixed precision (exp of large logits overflows fp16).
        logits = ops.matmul(
            ops.cast(query, "float32"), ops.swapaxes(ops.cast(key, "float32"), 1, 2)
        )
        attention = ops.softmax(logits, axis=-1)
        attended = ops.matmul(attention, ops.cast(value, "float32"))
        attended = ops.reshape(ops.cast(attended, inputs.dtype), (batch, height, width, inner))
        return inputs + ops.cast(self.gamma, inputs.dtype) * self.output_conv(attended)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "reduction": self.reduction,
            "pool": self.pool,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
