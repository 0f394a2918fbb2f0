"""Local correlation (LCNet eq. 3-4) and the LCBlock built on it.

Reference:
    Su, Yuan, Wang, "Deep image deblurring using local correlation block", ICASSP 2020,
    sec. 2.2 and Fig. 2 (``../shared/papers/lcnet_local_correlation_block.txt``).
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from keras_layers.initializers import fresh_initializer

# Two formulations of the same numbers, both keras.ops (every backend), TFLite builtins
# and ONNX with dynamic H, W: "depthwise" (training, Keras inference) and "windows" (the
# exporters' choice). Files saved with the former names load; each maps to its successor.
METHODS = ("depthwise", "windows")
LEGACY_METHODS = {"patches": "depthwise", "slices": "windows"}

# Logit gap that takes the out-of-image window positions out of the softmax (see
# local_correlation): their weight is at most exp(-EXCLUSION_GAP) = 2e-9 of the window's
# largest, below float32 rounding (6e-8) even summed over a 5x5 window's 16 outside
# positions. Kept small so that int8 quantization of the logits loses little range.
EXCLUSION_GAP = 20.0


def _method(method: str) -> str:
    """``method`` with the legacy values mapped to the formulation that replaced them."""
    method = LEGACY_METHODS.get(method, method)
    if method not in METHODS:
        raise ValueError(
            f"method must be one of {METHODS} (or the legacy {tuple(LEGACY_METHODS)}), "
            f"got {method!r}."
        )
    return method


def _validate(window_size: int) -> None:
    if not isinstance(window_size, int) or window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"window_size must be a positive odd integer, got {window_size!r}.")


def window_kernel(channels: int, window_size: int) -> np.ndarray:
    """Fixed one-hot depthwise kernel ``(k, k, channels, k*k)`` gathering each k x k window.

    With ``depthwise_conv(x, kernel, padding="same")`` output channel ``c * k*k + n`` at
    pixel ``(i, j)`` is ``x[i + n // k - r, j + n % k - r, c]`` (``r = k // 2``), zero
    where that position is outside the image.
    """
    n = window_size * window_size
    eye = np.eye(n, dtype="float32").reshape(window_size, window_size, 1, n)
    return np.tile(eye, (1, 1, channels, 1))


def _windows(t, window_size):
    """``(B, H, W, C)`` -> ``(B, H, W, C, k*k)``: every pixel's k x k window, zeros outside."""
    shape = ops.shape(t)
    channels = t.shape[-1]
    kernel = ops.cast(window_kernel(channels, window_size), t.dtype)
    gathered = ops.depthwise_conv(t, kernel, 1, "same")
    return ops.reshape(gathered, (shape[0], shape[1], shape[2], channels, window_size**2))


def _shifted_windows(t, window_size):
    """``(B, H, W, C)`` -> ``(B, H, W, k*k, C)`` by padding and 2k shifted slices.

    Slices have constant begin/end (negative ends), so every size follows from the input
    shape; k slices along W and one concatenation, then k along H and one more.
    """
    r = window_size // 2
    padded = ops.expand_dims(ops.pad(t, [[0, 0], [r, r], [r, r], [0, 0]]), -2)

    def cut(d):
        return slice(d, d - 2 * r if d < 2 * r else None)

    rows = ops.concatenate([padded[:, :, cut(dx)] for dx in range(window_size)], axis=-2)
    return ops.concatenate([rows[:, cut(dy)] for dy in range(window_size)], axis=-2)


def correlate_with_validity(pattern, content, window_size: int, method: str = "depthwise"):
    """Eq. (3)-(4) on a pattern whose last channel is the validity channel.

    ``pattern[..., -1]`` must be ``sqrt(EXCLUSION_GAP)`` at every pixel (what
    :func:`local_correlation` appends and :class:`LCBlock` folds into its pattern
    convolution); the other channels are the features x. ``method`` as in
    :func:`local_correlation`.
    """
    if _method(method) == "windows":
        # Windows as (k*k, C): both reductions over the window axis or the channels.
        centre = ops.expand_dims(pattern, -2)
        logits = ops.sum(_shifted_windows(pattern, window_size) * centre, axis=-1)
        weights = ops.expand_dims(ops.softmax(logits, axis=-1), -1)
        return ops.sum(_shifted_windows(content, window_size) * weights, axis=-2)
    # One depthwise convolution with a fixed one-hot kernel gathers every window for all
    # channels at once; zero padding makes the validity channel 0 outside the image.
    centre = ops.expand_dims(pattern, -1)
    logits = ops.sum(_windows(pattern, window_size) * centre, axis=-2)
    weights = ops.expand_dims(ops.softmax(logits, axis=-1), -2)
    return ops.sum(_windows(content, window_size) * weights, axis=-1)


def local_correlation(pattern, content, window_size: int = 5, method: str = "depthwise"):
    """Local correlation of LCNet, eq. (3)-(4).

    For every pixel i with pattern feature x_i, the weights over its ``k x k`` window
    Omega_i are ``w_j = softmax_j(x_i . x_j)`` (eq. 3) and the output is
    ``y_i = sum_j w_j c_j`` over the content features c (eq. 4). Window positions that
    fall outside the image do not exist: they take no part in the softmax (they are not
    zero-padded features, which would add ``exp(0)`` terms to the denominator).

    Formulations (a handful of large operators, ``keras.ops`` only, so they run on every
    Keras backend and convert to TFLite builtins and to ONNX with dynamic H and W): the
    k x k windows of all channels are gathered at once, then one multiply-reduce gives the
    k*k logits, one softmax, one multiply-reduce the output. ``"depthwise"`` gathers with
    one depthwise convolution of a fixed one-hot kernel (1 operator; in TensorFlow as
    fast as the best former formulation, to train and in Keras inference); ``"windows"``
    with padding and 2k shifted slices (2k + 4 operators of plain copies; what the
    exporters use: under LiteRT/XNNPACK the one-hot convolution's k*k-fold multiply-adds,
    1.4 GFLOPs for LCNet at 256x256, ran up to 2.3x slower than the copies, which were
    never slower than the former slice-per-offset file; README "Benchmark"). Exclusion of
    the outside positions: the pattern gets one more channel,
    ``s = sqrt(EXCLUSION_GAP)`` inside the image; the gather's zero padding makes it 0
    outside, so inside logits are ``x_i . x_j + s^2`` and outside ones exactly ``0``. The
    centre's logit ``|x_i|^2 + s^2 >= s^2``, so an outside position weighs at most
    ``exp(-EXCLUSION_GAP)`` (2e-9) of the largest: the masked softmax to float32
    rounding, with no mask tensor, division or renormalisation (which int8 TFLite runs
    slowly or not at all). The constant ``s^2`` on the inside logits cancels in the
    softmax.

    Args:
        pattern: ``(B, H, W, Cp)`` blur-pattern features x.
        content: ``(B, H, W, Cc)`` content features c.
        window_size: odd window side k. Default 5.
        method: ``"depthwise"`` (default) or ``"windows"``, same numbers.

    Returns:
        ``(B, H, W, Cc)`` tensor.
    """
    _validate(window_size)
    method = _method(method)
    pattern = ops.convert_to_tensor(pattern)
    content = ops.cast(ops.convert_to_tensor(content), pattern.dtype)
    validity = ops.ones_like(pattern[..., :1]) * math.sqrt(EXCLUSION_GAP)
    return correlate_with_validity(
        ops.concatenate([pattern, validity], axis=-1), content, window_size, method
    )


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

    The validity channel of :func:`local_correlation` comes out of the pattern
    convolution itself (one more output channel, zero kernel, bias
    ``sqrt(EXCLUSION_GAP)``; the weights stay those of ``pattern_conv``), so the block
    adds no operator and no image-sized constant for it.

    Args:
        squeeze_ratio: int, channel reduction of the content/pattern features. Default 2.
        window_size: odd int, side of the correlation window. Default 5.
        kernel_size: int, kernel of the three convolutions. Default 3.
        method: ``"depthwise"`` (default, training) or ``"windows"`` (the exporters
            switch to it), same numbers and weights (see :func:`local_correlation`).
            Files saved with the former ``"patches"`` / ``"slices"`` load as
            ``"depthwise"`` / ``"windows"`` and give the same numbers.
        kernel_initializer: initializer of the convolutions. Default Xavier uniform
            (sec. 3.1).
    """

    EXPORT_OVERRIDES = {"method": "windows"}  # read by export.prepare_for_export

    def __init__(
        self,
        squeeze_ratio=2,
        window_size=5,
        kernel_size=3,
        method="depthwise",
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        _validate(window_size)
        if not isinstance(squeeze_ratio, int) or squeeze_ratio < 1:
            raise ValueError(f"squeeze_ratio must be a positive integer, got {squeeze_ratio!r}.")
        self.squeeze_ratio = squeeze_ratio
        self.window_size = window_size
        self.kernel_size = kernel_size
        self.method = _method(method)
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

    def _pattern_with_validity(self, inputs):
        """``pattern_conv(inputs)`` plus the validity channel, in one convolution."""
        kernel = ops.cast(self.pattern_conv.kernel, inputs.dtype)
        bias = ops.cast(self.pattern_conv.bias, inputs.dtype)
        kernel = ops.concatenate([kernel, ops.zeros_like(kernel[..., :1])], axis=-1)
        gap = ops.full((1,), math.sqrt(EXCLUSION_GAP), dtype=inputs.dtype)
        bias = ops.concatenate([bias, gap], axis=0)
        return ops.conv(inputs, kernel, 1, "same") + bias

    def call(self, inputs):
        content = self.content_conv(inputs)
        pattern = self._pattern_with_validity(inputs)
        correlated = correlate_with_validity(pattern, content, self.window_size, self.method)
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
