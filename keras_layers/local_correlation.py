"""Local correlation (LCNet eq. 3-4) and the LCBlock built on it.

Reference:
    Su, Yuan, Wang, "Deep image deblurring using local correlation block", ICASSP 2020,
    sec. 2.2 and Fig. 2 (``../shared/papers/lcnet_local_correlation_block.txt``).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_layers.initializers import fresh_initializer

METHODS = ("slices", "patches")


def _validate(window_size: int, method: str) -> None:
    if not isinstance(window_size, int) or window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"window_size must be a positive odd integer, got {window_size!r}.")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")


def _masked_softmax(logits: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """Softmax over the last axis where ``valid`` is False entries take no part."""
    floor = tf.constant(logits.dtype.min, dtype=logits.dtype)
    return tf.nn.softmax(tf.where(valid, logits, floor), axis=-1)


def _local_correlation_slices(pattern, content, window_size):
    """Formulation on pad + k*k shifted slices: TFLite builtins only, dynamic H, W in ONNX."""
    r = window_size // 2
    height, width = tf.shape(pattern)[1], tf.shape(pattern)[2]
    paddings = [[0, 0], [r, r], [r, r], [0, 0]]
    pattern_pad = tf.pad(pattern, paddings)
    content_pad = tf.pad(content, paddings)
    # 1 where a padded position is a real pixel; its shifted slices say which neighbours exist.
    inside = tf.pad(tf.ones(tf.stack([1, height, width, 1]), dtype=pattern.dtype), paddings) > 0.5

    def window(t, dy, dx):
        return t[:, dy : dy + height, dx : dx + width, :]

    offsets = [(dy, dx) for dy in range(window_size) for dx in range(window_size)]
    logits = tf.concat(
        [
            tf.reduce_sum(pattern * window(pattern_pad, dy, dx), -1, keepdims=True)
            for dy, dx in offsets
        ],
        axis=-1,
    )
    valid = tf.concat([window(inside, dy, dx) for dy, dx in offsets], axis=-1)
    # Masked softmax as softmax, mask, renormalise: the same numbers as _masked_softmax,
    # but every tensor keeps a small range, so full-integer int8 TFLite can quantize it
    # (a dtype.min fill gives the logits a 1e36 quantization step: uniform weights).
    # Outside positions have logit 0 (zero-padded pattern) and the centre's logit is
    # |x_i|^2 >= 0, so the valid mass is at least 1/k^2 and never underflows.
    weights = tf.nn.softmax(logits, axis=-1) * tf.cast(valid, logits.dtype)
    weights = weights / tf.reduce_sum(weights, axis=-1, keepdims=True)
    out = 0.0
    for n, (dy, dx) in enumerate(offsets):
        out += weights[..., n : n + 1] * window(content_pad, dy, dx)
    return out


def _local_correlation_patches(pattern, content, window_size):
    """Formulation on ``tf.image.extract_patches`` (the design card's); needs Flex in TFLite."""
    k = window_size
    n = k * k
    shape = tf.shape(pattern)
    batch, height, width = shape[0], shape[1], shape[2]
    sizes, strides, rates = [1, k, k, 1], [1, 1, 1, 1], [1, 1, 1, 1]

    def patches(t):
        # (B, H, W, k*k*C) in (row, col, channel) order -> (B, H, W, k*k, C); SAME pads zeros.
        p = tf.image.extract_patches(t, sizes, strides, rates, padding="SAME")
        return tf.reshape(p, tf.stack([batch, height, width, n, tf.shape(t)[-1]]))

    logits = tf.einsum("bhwc,bhwnc->bhwn", pattern, patches(pattern))
    ones = tf.ones(tf.stack([1, height, width, 1]), dtype=pattern.dtype)
    valid = tf.image.extract_patches(ones, sizes, strides, rates, padding="SAME") > 0.5
    weights = _masked_softmax(logits, valid)
    return tf.einsum("bhwn,bhwnc->bhwc", weights, patches(content))


def local_correlation(pattern, content, window_size: int = 5, method: str = "patches"):
    """Local correlation of LCNet, eq. (3)-(4).

    For every pixel i with pattern feature x_i, the weights over its ``k x k`` window
    Omega_i are ``w_j = softmax_j(x_i . x_j)`` (eq. 3) and the output is
    ``y_i = sum_j w_j c_j`` over the content features c (eq. 4). Window positions that
    fall outside the image do not exist: they take no part in the softmax (they are not
    zero-padded features, which would add ``exp(0)`` terms to the denominator).

    Args:
        pattern: ``(B, H, W, Cp)`` blur-pattern features x.
        content: ``(B, H, W, Cc)`` content features c.
        window_size: odd window side k. Default 5.
        method: ``"patches"`` builds on ``tf.image.extract_patches``; ``"slices"`` builds
            on padding and k*k shifted slices, which converts to TFLite with builtin ops
            only and to ONNX with dynamic H and W. Both give the same numbers.
            Default ``"patches"``, the faster to train: one Adam step of the LCNet paper
            preset on 128x128 crops, batch 4, on a 2-core CPU took 199 ms vs 251 ms
            (``tfdeblur bench``, which measures it on your machine; earlier interleaved
            runs on a busier machine: 0.55 s vs 0.76 s, and 1.14 s vs 1.51 s at batch 8).
            The exporters switch to ``"slices"``.

    Returns:
        ``(B, H, W, Cc)`` tensor.
    """
    _validate(window_size, method)
    pattern = tf.convert_to_tensor(pattern)
    content = tf.convert_to_tensor(content, dtype=pattern.dtype)
    if method == "patches":
        return _local_correlation_patches(pattern, content, window_size)
    return _local_correlation_slices(pattern, content, window_size)


@keras.saving.register_keras_serializable(package="tfdeblur")
class LCBlock(keras.layers.Layer):
    """Local correlation block (LCNet sec. 2.2, Fig. 2).

    ``y = x + restore(local_correlation(pattern_conv(x), content_conv(x)))``: two
    convolutions squeeze the ``C`` input channels to ``C / squeeze_ratio`` content and
    blur-pattern features, eq. (3)-(4) re-weights the content in each ``k x k`` window
    by its softmax-normalised dot-product similarity to the centre pattern feature, a
    third convolution restores ``C`` channels, and the identity shortcut ("similar to
    [17]", the non-local block) makes the block insertable anywhere.

    Readings of the paper (Fig. 2's numbers did not survive): all three convolutions
    are 3x3 ("kernel size is set to 3 for all convolution layers") with bias and no
    activation, as in the non-local block it follows; the squeeze ratio is 2 and the
    window 5x5 by default.

    Args:
        squeeze_ratio: int, channel reduction of the content/pattern features. Default 2.
        window_size: odd int, side of the correlation window. Default 5.
        kernel_size: int, kernel of the three convolutions. Default 3.
        method: ``"patches"`` (faster to train) or ``"slices"`` (TFLite builtins; see
            :func:`local_correlation`); the exporters switch ``"patches"`` to
            ``"slices"``. Default ``"patches"``.
        kernel_initializer: initializer of the convolutions. Default Xavier uniform
            (sec. 3.1).
    """

    EXPORT_OVERRIDES = {"method": "slices"}  # read by export.prepare_for_export

    def __init__(
        self,
        squeeze_ratio=2,
        window_size=5,
        kernel_size=3,
        method="patches",
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        _validate(window_size, method)
        if not isinstance(squeeze_ratio, int) or squeeze_ratio < 1:
            raise ValueError(f"squeeze_ratio must be a positive integer, got {squeeze_ratio!r}.")
        self.squeeze_ratio = squeeze_ratio
        self.window_size = window_size
        self.kernel_size = kernel_size
        self.method = method
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None or channels % self.squeeze_ratio:
            raise ValueError(
                f"LCBlock needs a known channel count divisible by squeeze_ratio="
                f"{self.squeeze_ratio}, got input shape {input_shape}."
            )
        inner = channels // self.squeeze_ratio

        def conv(filters, name):
            layer = keras.layers.Conv2D(
                filters,
                self.kernel_size,
                padding="same",
                kernel_initializer=fresh_initializer(self.kernel_initializer),
                dtype=self.dtype_policy,
                name=name,
            )
            return layer

        self.content_conv = conv(inner, "content_conv")
        self.pattern_conv = conv(inner, "pattern_conv")
        self.restore_conv = conv(channels, "restore_conv")
        self.content_conv.build(input_shape)
        self.pattern_conv.build(input_shape)
        self.restore_conv.build(tuple(input_shape[:-1]) + (inner,))

    def call(self, inputs):
        content = self.content_conv(inputs)
        pattern = self.pattern_conv(inputs)
        correlated = local_correlation(pattern, content, self.window_size, self.method)
        return inputs + self.restore_conv(correlated)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "squeeze_ratio": self.squeeze_ratio,
                "window_size": self.window_size,
                "kernel_size": self.kernel_size,
                "method": self.method,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config
