"""Pixel-adaptive ("dynamic") filtering: the local branch of SAPHN's global-local module.

Reference:
    Suin, Purohit, Rajagopalan, "Spatially-Attentive Patch-Hierarchical Network for
    Adaptive Motion Deblurring", CVPR 2020 (``../shared/papers/saphn_patch_hierarchical_attentive.txt``),
    sec. 2.2, eq. (7); its base, Su et al., "Pixel-Adaptive Convolutional Neural
    Networks", CVPR 2019 (PAC).
"""

from __future__ import annotations

import keras
from keras import ops

from keras_layers.initializers import fresh_initializer, sublayer_conv


def _kernel_layout(kernel_shape, adaptive_shape, channels):
    """Validates the static shapes; returns (k, taps, adaptive channels per tap)."""
    if len(kernel_shape) != 4 or kernel_shape[0] != kernel_shape[1] or kernel_shape[0] % 2 == 0:
        raise ValueError(
            f"kernel must have shape (k, k, C, O) with odd k, got {tuple(kernel_shape)}."
        )
    k = int(kernel_shape[0])
    if channels is not None and kernel_shape[2] != channels:
        raise ValueError(f"kernel has {kernel_shape[2]} input channels but inputs have {channels}.")
    taps = k * k
    depth = adaptive_shape[-1]
    if depth == taps:
        return k, taps, 1
    if channels is not None and depth == taps * channels:
        return k, taps, channels
    raise ValueError(
        f"adaptive_kernel must have k*k={taps} channels (one weight per tap, shared by all "
        f"input channels) or k*k*C={taps}*{channels} channels (tap-major, one weight per tap "
        f"and input channel), got shape {tuple(adaptive_shape)}."
    )


def dynamic_filter(inputs, adaptive_kernel, kernel, bias=None):
    """Spatially varying convolution of SAPHN eq. (7) / PAC.

    ``y_i = sum_{j in Omega(i)} K_{p_i, p_j} W[p_i - p_j] x_j + b`` for every pixel i:
    a learned ``k x k`` filter ``W`` (``(k, k, C, O)``) whose taps are re-weighted at
    every pixel by the pixel-dependent kernel ``K`` produced at run time. With ``K = 1``
    it is the ordinary convolution (the "special case" of sec. 2.2).

    Conventions (the paper writes the equation only):

    * ``W[p_i - p_j]`` is read in the cross-correlation convention of every deep-learning
      framework: tap ``(dy, dx)`` of ``W`` (and channel ``dy * k + dx`` of ``K``) weighs
      the neighbour at offset ``(dy - r, dx - r)``, ``r = k // 2``. With ``K = 1`` the
      result equals ``keras.ops.conv(inputs, kernel, padding="same") + bias``.
    * Neighbours outside the image are zeros (``SAME`` zero padding).
    * ``K`` has one weight per pixel and tap shared by all input channels (PAC's
      ``K(f_i, f_j)`` is a scalar), shape ``(B, H, W, k*k)``; a kernel of shape
      ``(B, H, W, k*k*C)`` (tap-major: channel ``t * C + c`` is tap t, input channel c)
      gives one weight per tap and input channel.

    Implementation: zero padding and ``k*k`` shifted slices of the input, each
    multiplied by its per-pixel weight and contracted with its ``(C, O)`` tap of ``W``
    by a 1x1 convolution, accumulated tap by tap. No ``ExtractImagePatches``: it
    converts to TFLite builtins (PAD, STRIDED_SLICE, MUL, CONV_2D, ADD) and to ONNX
    with dynamic H and W, and its peak memory is ``O(HWC)`` rather than the
    ``O(k*k*HWC)`` of an unfolded tensor (training still keeps the ``k*k`` modulated
    slices for the backward pass).

    Args:
        inputs: ``(B, H, W, C)`` features x.
        adaptive_kernel: ``(B, H, W, k*k)`` or ``(B, H, W, k*k*C)`` pixel-dependent K.
        kernel: ``(k, k, C, O)`` learned filter W, odd k.
        bias: optional ``(O,)`` bias b.

    Returns:
        ``(B, H, W, O)`` tensor.

    Raises:
        ValueError: if the shapes of ``kernel`` or ``adaptive_kernel`` do not fit.
    """
    inputs = ops.convert_to_tensor(inputs)
    adaptive_kernel = ops.convert_to_tensor(adaptive_kernel, dtype=inputs.dtype)
    kernel = ops.convert_to_tensor(kernel, dtype=inputs.dtype)
    if len(inputs.shape) != 4 or len(adaptive_kernel.shape) != 4:
        raise ValueError(
            f"inputs and adaptive_kernel must be 4-D (B, H, W, C), got shapes "
            f"{inputs.shape} and {adaptive_kernel.shape}."
        )
    k, taps, _ = _kernel_layout(kernel.shape, adaptive_kernel.shape, inputs.shape[-1])
    r = k // 2
    padded = ops.pad(inputs, [[0, 0], [r, r], [r, r], [0, 0]])
    weights = ops.split(adaptive_kernel, taps, axis=-1)
    tap_filters = ops.reshape(kernel, (taps, 1, 1, kernel.shape[2], kernel.shape[3]))
    out = None
    for t in range(taps):
        dy, dx = divmod(t, k)
        # Window offset (dy - r, dx - r); ends counted from the far side (-(2r - dy)) keep
        # the slice bounds constant, so the graph needs no shape arithmetic for dynamic H, W.
        neighbours = padded[:, dy : (dy - 2 * r) or None, dx : (dx - 2 * r) or None, :]
        term = ops.conv(neighbours * weights[t], tap_filters[t], strides=1, padding="valid")
        out = term if out is None else out + term
    if bias is not None:
        out = out + ops.convert_to_tensor(bias, dtype=inputs.dtype)
    return out


@keras.saving.register_keras_serializable(package="tfdeblur")
class DynamicFilter(keras.layers.Layer):
    """Pixel-dependent filtering (PDF) with its kernel-generating meta-layer, eq. (7).

    ``y = dynamic_filter(x, K(x), W, b)``: a meta-layer predicts from the input a
    ``k x k`` kernel ``K`` for every pixel, which modulates the taps of a learned
    ``k x k`` filter ``W`` (see :func:`dynamic_filter`).

    Readings of the paper (sec. 2.2 says only that "a 'meta-layer' generates a pixel
    dependent spatially varying kernel" from the input; sec. 3.1 that the filter of the
    PDF modules is 5x5 and that every convolution inside the modules has 128 filters):

    * Meta-layer (default): ``conv3x3(meta_filters) -> ReLU -> conv3x3(k*k)``. Two 3x3
      layers see a 5x5 neighbourhood, the window the kernel acts on;
      ``meta_filters=128``. The paper states neither the meta-layer's depth nor its
      kernel size, so both are arguments: ``meta_filters=None`` makes it the single
      convolution ``conv(k*k)`` on the input (the literal "a 'meta-layer'", and the
      cheap reading: at C = 32 channels and k = 5 it costs 7,200 multiply-adds per pixel
      with ``meta_kernel_size=3`` against 65,664 for the two-layer default), and
      ``meta_kernel_size`` sets the side of its convolutions.
    * ``K`` is the linear output of the meta-layer, whose last convolution starts with
      a zero kernel and a bias of ones: the layer starts as the ordinary convolution
      (the ``K = 1`` special case the paper names) and learns the modulation. ``K`` is
      otherwise unconstrained (no softmax, no Gaussian as in PAC, whose fixed Gaussian
      the paper replaces by the meta-layer).
    * One ``K`` weight per pixel and tap, shared by the input channels, as in PAC
      (``per_channel_kernel=True`` predicts ``k*k*C`` weights instead).

    Args:
        filters: int or None, output channels O; None keeps the input channel count.
            Default None.
        kernel_size: odd int, side k of W and K. Default 5 (sec. 3.1).
        meta_filters: int or None, width of the meta-layer's hidden convolution; None
            for a meta-layer of one convolution (no hidden layer). Default 128.
        per_channel_kernel: bool, one K weight per tap and input channel. Default False.
        kernel_initializer: initializer of W and the first meta convolution. Default
            ``"glorot_uniform"``.
        meta_kernel_size: odd int, side of the meta-layer's convolutions. Default 3.
    """

    def __init__(
        self,
        filters=None,
        kernel_size=5,
        meta_filters=128,
        per_channel_kernel=False,
        kernel_initializer="glorot_uniform",
        meta_kernel_size=3,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if filters is not None and (not isinstance(filters, int) or filters < 1):
            raise ValueError(f"filters must be a positive integer or None, got {filters!r}.")
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}.")
        if meta_filters is not None and (not isinstance(meta_filters, int) or meta_filters < 1):
            raise ValueError(
                f"meta_filters must be a positive integer or None, got {meta_filters!r}."
            )
        if (
            not isinstance(meta_kernel_size, int)
            or meta_kernel_size < 1
            or meta_kernel_size % 2 == 0
        ):
            raise ValueError(
                f"meta_kernel_size must be a positive odd integer, got {meta_kernel_size!r}."
            )
        self.filters = filters
        self.kernel_size = kernel_size
        self.meta_filters = meta_filters
        self.meta_kernel_size = meta_kernel_size
        self.per_channel_kernel = bool(per_channel_kernel)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"DynamicFilter needs a known channel count, got {input_shape}.")
        out_channels = self.filters or channels
        k = self.kernel_size
        self.meta_hidden = None
        if self.meta_filters is not None:
            self.meta_hidden = sublayer_conv(
                self, self.meta_filters, self.meta_kernel_size, "meta_hidden",
                padding="same", activation="relu",
            )  # fmt: skip
            self.meta_hidden.build(input_shape)
        self.meta_kernel = keras.layers.Conv2D(
            k * k * (channels if self.per_channel_kernel else 1),
            self.meta_kernel_size,
            padding="same",
            kernel_initializer="zeros",
            bias_initializer="ones",
            dtype=self.dtype_policy,
            name="meta_kernel",
        )
        hidden = channels if self.meta_filters is None else self.meta_filters
        self.meta_kernel.build(tuple(input_shape[:-1]) + (hidden,))
        self.kernel = self.add_weight(
            name="kernel",
            shape=(k, k, channels, out_channels),
            initializer=fresh_initializer(self.kernel_initializer),
        )
        self.bias = self.add_weight(name="bias", shape=(out_channels,), initializer="zeros")

    def adaptive_kernel(self, inputs):
        """The pixel-dependent kernel ``K`` from the meta-layer, ``(B, H, W, k*k[*C])``."""
        hidden = inputs if self.meta_hidden is None else self.meta_hidden(inputs)
        return self.meta_kernel(hidden)

    def call(self, inputs):
        return dynamic_filter(inputs, self.adaptive_kernel(inputs), self.kernel, self.bias)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters or input_shape[-1],)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "meta_filters": self.meta_filters,
            "per_channel_kernel": self.per_channel_kernel,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "meta_kernel_size": self.meta_kernel_size,
        }
