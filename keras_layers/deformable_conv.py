"""Deformable convolution (DCNv1) and SARN's deformable residual module (DRM).

Reference:
    Purohit, Rajagopalan, "Spatially-Adaptive Residual Networks for Efficient Image and
    Video Deblurring" (``../shared/papers/sarn_spatially_adaptive_residual.txt``),
    sec. 2.1, eq. (5)-(6), Fig. 2; Dai et al., "Deformable Convolutional Networks",
    ICCV 2017 (the paper's [10]).

The op samples with the rules of ``torchvision.ops.deform_conv2d`` (offset layout,
bilinear interpolation, zero outside the image), so DCN weights trained in PyTorch carry
over once the kernel is transposed from ``(O, C, kh, kw)`` to ``(kh, kw, C, O)``.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_layers.initializers import fresh_initializer, sublayer_conv


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) and v >= 1 for v in value):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}.")
    return value


def _check_offsets_match_inputs(offsets, inputs):
    """``offsets`` with a check that its (B, H, W) are the inputs' (see deform_conv2d)."""
    for axis, name in enumerate(("batch size", "height", "width")):
        expected, got = inputs.shape[axis], offsets.shape[axis]
        if expected is not None and got is not None and expected != got:
            raise ValueError(
                f"offsets must have the inputs' {name}: offsets have shape {offsets.shape}, "
                f"inputs {inputs.shape} (one offset pair per tap at every input pixel)."
            )
    if all(d is not None for d in (*inputs.shape[:3], *offsets.shape[:3])):
        return offsets
    # Unknown dimensions exist only in TensorFlow graphs (JAX and PyTorch shapes are
    # concrete, so the static check above is complete there).
    import tensorflow as tf

    check = tf.debugging.assert_equal(
        tf.shape(offsets)[:3],
        tf.shape(inputs)[:3],
        message="deform_conv2d: offsets must have the batch size, height and width of the inputs",
    )
    with tf.control_dependencies([check]):
        return tf.identity(offsets)


def _take_rows(flat, index):
    """``flat[index]`` along axis 0; ``index`` is never negative."""
    if keras.config.backend() == "tensorflow":
        # A bare GATHER: keras.ops.take adds a negative-index fix-up on every index.
        import tensorflow as tf

        return tf.gather(flat, index)
    return ops.take(flat, index, axis=0)


def deform_conv2d(inputs, offsets, kernel, bias=None, dilation_rate=1):
    """Deformable convolution of eq. (6), stride 1, ``'same'`` padding (DCNv1).

    ``y(p) = sum_n w_n . x(p + p_n + dp_n) + b``: output pixel ``p`` reads tap ``n`` of
    the ``kh x kw`` grid ``p_n = ((i - (kh-1)/2) * d_h, (j - (kw-1)/2) * d_w)`` shifted by
    its learned offset ``dp_n``; the same offset is used for every input channel
    (eq. 6, "the same operation is applied in every channel"), i.e. one offset group.

    Semantics (those of ``torchvision.ops.deform_conv2d`` with stride 1 and padding
    ``d * (k - 1) / 2``):

    * ``offsets[..., 2n]`` is the vertical and ``offsets[..., 2n + 1]`` the horizontal
      offset of tap ``n = i * kw + j`` (row-major taps).
    * A fractional sample point is read by bilinear interpolation from its four
      neighbouring pixels; a neighbour outside ``[0, H-1] x [0, W-1]`` reads 0 (the
      feature map is zero outside the image). A point with ``h <= -1``, ``h >= H``,
      ``w <= -1`` or ``w >= W`` therefore reads exactly 0.

    Implementation: for all taps and all four bilinear corners at once, the corner
    indices are clamped into the image, gathered with one ``tf.gather`` (``keras.ops.take``
    on JAX and PyTorch) from the image
    flattened to ``(B*H*W, C)``, weighted by their bilinear weight times a 0/1 validity
    mask and summed over the corners; the sampled
    ``(B*H*W, kh*kw*C)`` matrix is multiplied by the kernel reshaped to
    ``(kh*kw*C, O)``. Every op is a TFLite builtin (GATHER, FLOOR, CAST, MINIMUM,
    MAXIMUM, LESS/GREATER_EQUAL, MUL, ADD, SUM, RESHAPE, BATCH_MATMUL/FULLY_CONNECTED) and an
    ONNX op, with no static H or W anywhere. Positions and weights are computed in
    float32 even under mixed precision (float16 cannot hold ``320.25``-like positions).

    Memory: the sampled matrix is ``B*H*W*kh*kw*C`` elements and the gathered corners
    four times as many. In SARN the DRMs run at 1/4 of the frame with 128 channels, so a
    1280x720 frame gives ``320*180 = 57,600`` positions x ``9*128 = 1,152`` values x
    4 bytes = 265 MB for the sampled matrix and 1.06 GB for the corners (twice that
    while they are weighted), about 2.4 GB at the peak of one inference call -- within a
    16 GB GPU, so the taps are not processed in a loop. A 256x256 training crop has
    4,096 positions: 19 MB and 75 MB per image.

    Training memory: the backward pass needs the gathered corners (for the gradient of
    the bilinear weights, i.e. of the offsets) and the sampled matrix (for the kernel's
    gradient), so both stay alive from the forward pass: ``(4 + 1) * kh*kw*C`` floats,
    23,040 bytes per position at C = 128 (3x3); 24.7 kB per position measured per DRM
    with its convolutions' activations (peak RSS of a stack of DRMs, CPU, float32,
    kB = 1000 B). The DRM's own backward adds about 45 kB per position while it runs
    (the corners' gradient and two products of the corners' size). A fused kernel such
    as torchvision's recomputes the bilinear terms instead; this gather formulation
    trades that memory for builtin-only ops.

    Args:
        inputs: ``(B, H, W, C)`` feature map.
        offsets: ``(B, H, W, 2*kh*kw)`` offsets in pixels, torchvision layout.
        kernel: ``(kh, kw, C, O)`` weights with odd ``kh`` and ``kw`` (sec. 2.1 assumes
            odd kernels so that the grid centre ``p_m`` is ``(0, 0)``).
        bias: optional ``(O,)`` bias.
        dilation_rate: int or pair, spacing of the regular grid. Default 1.

    Returns:
        ``(B, H, W, O)`` tensor of the inputs' dtype.

    Raises:
        ValueError: even kernel sizes, a bad ``dilation_rate``, or static shapes that
            disagree (channels; ``offsets``' batch, height or width against the inputs').
        tf.errors.InvalidArgumentError: when run, if ``offsets``' batch, height or width
            differ from the inputs' and the static shapes could not tell (a
            ``tf.function`` traced with ``None`` dimensions). The check is a
            ``tf.debugging.assert_equal``, which the TFLite and ONNX converters drop, so
            converted models carry no ``Assert`` op.
    """
    inputs = ops.convert_to_tensor(inputs)
    kernel = ops.convert_to_tensor(kernel, dtype=inputs.dtype)
    offsets = ops.convert_to_tensor(offsets)
    d_h, d_w = _pair(dilation_rate, "dilation_rate")
    if len(inputs.shape) != 4 or len(offsets.shape) != 4:
        raise ValueError(
            f"inputs and offsets must be 4-D (B, H, W, C), got shapes {inputs.shape} and "
            f"{offsets.shape}."
        )
    offsets = _check_offsets_match_inputs(offsets, inputs)
    kh, kw, k_in, k_out = kernel.shape
    if kh is None or kw is None or kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"kernel must have odd static kh and kw, got shape {kernel.shape}.")
    taps = kh * kw
    if inputs.shape[-1] is not None and k_in is not None and inputs.shape[-1] != k_in:
        raise ValueError(
            f"inputs have {inputs.shape[-1]} channels but kernel expects {k_in} "
            f"(kernel shape {kernel.shape})."
        )
    if offsets.shape[-1] is not None and offsets.shape[-1] != 2 * taps:
        raise ValueError(
            f"offsets must have 2*kh*kw = {2 * taps} channels, got shape {offsets.shape}."
        )

    shape = ops.shape(inputs)
    batch, height, width = shape[0], shape[1], shape[2]
    channels = k_in if k_in is not None else shape[3]
    positions = batch * height * width

    # Base grid p + p_n, (B*H*W, taps) in float32.
    rows = ops.cast(ops.arange(height, dtype="int32"), "float32")
    cols = ops.cast(ops.arange(width, dtype="int32"), "float32")
    tap_rows = ops.convert_to_tensor(
        [(i - (kh - 1) / 2) * d_h for i in range(kh) for _ in range(kw)], "float32"
    )
    tap_cols = ops.convert_to_tensor(
        [(j - (kw - 1) / 2) * d_w for _ in range(kh) for j in range(kw)], "float32"
    )
    grid_y = ops.reshape(rows, (1, -1, 1, 1)) + ops.reshape(tap_rows, (1, 1, 1, taps))
    grid_x = ops.reshape(cols, (1, 1, -1, 1)) + ops.reshape(tap_cols, (1, 1, 1, taps))

    off = ops.reshape(ops.cast(offsets, "float32"), (batch, height, width, taps, 2))
    sample_y = ops.reshape(grid_y + off[..., 0], (positions, taps))
    sample_x = ops.reshape(grid_x + off[..., 1], (positions, taps))

    # The four bilinear corners of every sample as a trailing (2, 2) = (row, col) grid.
    y0 = ops.floor(sample_y)
    x0 = ops.floor(sample_x)
    fy = (sample_y - y0)[..., None]  # (N, taps, 1): weight of the lower row y0 + 1
    fx = (sample_x - x0)[..., None]
    corner = ops.convert_to_tensor([0.0, 1.0], "float32")
    wy = (1.0 - corner + (2.0 * corner - 1.0) * fy)[..., :, None]  # (N, taps, 2, 1)
    wx = (1.0 - corner + (2.0 * corner - 1.0) * fx)[..., None, :]  # (N, taps, 1, 2)
    yy = ops.cast(y0[..., None] + corner, "int32")[..., :, None]
    xx = ops.cast(x0[..., None] + corner, "int32")[..., None, :]
    h_max = height - 1
    w_max = width - 1
    # A corner outside the image reads 0: its weight is masked, its index clamped.
    valid_y = ops.cast(ops.logical_and(yy >= 0, yy <= h_max), "float32")
    valid_x = ops.cast(ops.logical_and(xx >= 0, xx <= w_max), "float32")
    weight = ops.reshape(wy * valid_y * wx * valid_x, (positions, 4 * taps, 1))

    # Row of pixel (b, y, x) in the image flattened to (B*H*W, C).
    base = ops.reshape(ops.arange(batch, dtype="int32") * (height * width), (-1, 1, 1, 1))
    base = ops.reshape(ops.broadcast_to(base, (batch, height, width, 1)), (positions, 1, 1, 1))
    index = base + ops.clip(yy, 0, h_max) * width + ops.clip(xx, 0, w_max)
    flat = ops.reshape(inputs, (batch * height * width, channels))
    corners = _take_rows(flat, ops.reshape(index, (positions, 4 * taps)))
    corners = corners * ops.cast(weight, inputs.dtype)  # (N, 4*taps, C)
    sampled = ops.sum(ops.reshape(corners, (positions, taps, 4, channels)), axis=2)  # (N, taps, C)

    columns = ops.reshape(sampled, (positions, taps * channels))
    out = ops.matmul(columns, ops.reshape(kernel, (taps * k_in, k_out)))
    if bias is not None:
        out = out + ops.cast(bias, out.dtype)
    return ops.reshape(out, (batch, height, width, k_out))


@keras.saving.register_keras_serializable(package="tfdeblur")
class DeformableConv2D(keras.layers.Layer):
    """Deformable convolution with its own offset-predicting convolution (sec. 2.1).

    A regular ``k x k`` convolution with ``2 k^2`` output channels estimates the
    offsets from the input ("convolution layer of k x k filters is paired with offset
    predicting convolution layer of 2k^2 channels"); :func:`deform_conv2d` then applies
    the ``k x k`` filters on the shifted grid. The offset convolution's kernel and bias
    are initialised to 0 ("The offsets are initialized to 0"), so the freshly built
    layer is the plain ``'same'`` convolution. The offset convolution has the same
    kernel size and dilation as the deformable one (as in DCN [10]).

    Args:
        filters: int, output channels O.
        kernel_size: odd int, side k. Default 3 (the paper's only filter size).
        dilation_rate: int, grid spacing of both convolutions. Default 1.
        use_bias: bool, bias of the deformable convolution. Default True.
        kernel_initializer: initializer of the deformable kernel. Default Xavier
            uniform.
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        dilation_rate=1,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(filters, int) or filters < 1:
            raise ValueError(f"filters must be a positive integer, got {filters!r}.")
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}.")
        if not isinstance(dilation_rate, int) or dilation_rate < 1:
            raise ValueError(f"dilation_rate must be a positive integer, got {dilation_rate!r}.")
        self.filters = filters
        self.kernel_size = kernel_size
        self.dilation_rate = dilation_rate
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.offset_conv = keras.layers.Conv2D(
            2 * kernel_size * kernel_size,
            kernel_size,
            padding="same",
            dilation_rate=dilation_rate,
            kernel_initializer="zeros",
            bias_initializer="zeros",
            dtype=self.dtype_policy,
            name="offset_conv",
        )

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"DeformableConv2D needs a known channel count, got {input_shape}.")
        self.offset_conv.build(input_shape)
        k = self.kernel_size
        self.kernel = self.add_weight(
            name="kernel",
            shape=(k, k, channels, self.filters),
            initializer=fresh_initializer(self.kernel_initializer),
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
            if self.use_bias
            else None
        )

    def call(self, inputs):
        offsets = self.offset_conv(inputs)
        return deform_conv2d(inputs, offsets, self.kernel, self.bias, self.dilation_rate)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "dilation_rate": self.dilation_rate,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@keras.saving.register_keras_serializable(package="tfdeblur")
class DRM(keras.layers.Layer):
    """Deformable residual module (sec. 2.1, Fig. 2).

    ``y = x + deform(f, offset_conv(f))`` with ``f = relu(conv(x))``: "A regular
    convolution layer is present to estimate the features and another convolution
    layer to estimate 2D filter offsets for each spatial location", the deformable
    convolution then filters the features on the learned grid, and "the additive link"
    adds the module's input.

    Readings of the paper (Fig. 2 did not survive the extraction):

    * The DRM is the network's ResBlock (conv, ReLU, conv, identity add) with its second
      convolution made deformable: sec. 2.1 says DRMs *replace* ResBlocks ("replacing
      normal Res-Blocks with DRMs"), and Table 3 grows by 0.1 MB per DRM, which is the
      offset convolution alone (``9*128*18 + 18 = 20,754`` parameters = 0.083 MB at
      128 channels); a DRM with a third full convolution would add 0.67 MB each.
    * The offsets are predicted from the features ``f`` that the deformable convolution
      samples (as in DCN), with a ``k x k`` convolution.
    * ReLU, as in the ResBlocks of SRN [50] that SARN's encoder-decoder follows; nothing
      after the add.

    Args:
        kernel_size: odd int, side of the regular, offset and deformable convolutions.
            Default 3.
        dilation_rate: int, dilation of the offset and deformable convolutions.
            Default 1.
        kernel_initializer: initializer of the regular and deformable kernels. Default
            Xavier uniform.

    Raises:
        ValueError: if ``kernel_size`` is not a positive odd int or ``dilation_rate`` not
            a positive int.
    """

    def __init__(
        self, kernel_size=3, dilation_rate=1, kernel_initializer="glorot_uniform", **kwargs
    ):
        super().__init__(**kwargs)
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}.")
        if not isinstance(dilation_rate, int) or dilation_rate < 1:
            raise ValueError(f"dilation_rate must be a positive integer, got {dilation_rate!r}.")
        self.kernel_size = kernel_size
        self.dilation_rate = dilation_rate
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.act = keras.layers.ReLU(dtype=self.dtype_policy, name="act")

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"DRM needs a known channel count, got {input_shape}.")
        self.conv = sublayer_conv(self, channels, self.kernel_size, "conv", padding="same")
        self.deform = DeformableConv2D(
            channels,
            self.kernel_size,
            self.dilation_rate,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="deform",
        )
        self.conv.build(input_shape)
        self.deform.build(input_shape)

    def call(self, inputs):
        return inputs + self.deform(self.act(self.conv(inputs)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_size": self.kernel_size,
            "dilation_rate": self.dilation_rate,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
