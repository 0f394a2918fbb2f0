"""Gaussian image pyramid identical to ``skimage.transform.pyramid_gaussian(downscale=2)``.

DeepDeblur (Nah et al., CVPR 2017) feeds its multi-scale network a Gaussian pyramid of the
blurry image and trains every scale against a Gaussian pyramid of the sharp image. The
official PyTorch code builds both in its data loader with
``skimage.transform.pyramid_gaussian(img, n_scales - 1, multichannel=True)``; building
the same pyramid with Keras ops inside the model lets official weights apply unchanged,
keeps exported models self-contained and runs on TensorFlow, JAX and PyTorch.

What scikit-image (0.19 - 0.26) does for one level, ``pyramid_reduce(image, 2)``:

1. Smooth each channel with ``scipy.ndimage.gaussian_filter(sigma=2 * 2 / 6 = 2/3,
   mode="reflect", truncate=4.0)``: a separable 7-tap kernel (radius
   ``int(4 * sigma + 0.5) = 3``), borders extended by SciPy's ``"reflect"``, which
   repeats the edge pixel (``d c b a | a b c d``; NumPy/TF call this ``"symmetric"``).
2. Resize to ``ceil(H / 2) x ceil(W / 2)`` with ``order=1`` (linear) and no
   anti-aliasing: ``scipy.ndimage.zoom(grid_mode=True)`` samples output pixel ``o`` at
   input coordinate ``(o + 0.5) * n_in / n_out - 0.5``, which is exactly the bilinear
   resize with half-pixel centres of ``tf.image.resize`` (used on TensorFlow, where H and W
   are dynamic) and of ``keras.ops.image.resize`` (JAX, PyTorch). For even sizes this is the mean of each 2x2
   cell; for odd sizes the weights differ, as in scikit-image. The coordinates never
   leave ``[0, n_in - 1]``, so the resize's own border mode does not matter.

Each level is reduced from the previous one. The ops are TFLite builtins (``GATHER``,
``DEPTHWISE_CONV_2D``, ``RESIZE_BILINEAR``) and ONNX ops with dynamic H and W.

One deliberate difference: scikit-image stops yielding levels once a reduction no longer
changes the shape (a 1 x 1 image gives a one-level pyramid); this implementation always
returns ``levels`` tensors (repeating 1 x 1 levels), since a model needs a fixed number
of outputs.

Reference:
    Nah et al., CVPR 2017, sec. 3 ("input and output ... take the form of Gaussian
    pyramids"), sec. 3.1 (scale ratio 0.5); official PyTorch code,
    ``src/data/common.py`` (``generate_pyramid``) and ``src/data/dataset.py`` (demo-mode
    edge padding to a multiple of ``2 ** (n_scales - 1)``).
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

DOWNSCALE = 2
SIGMA = 2 * DOWNSCALE / 6.0  # scikit-image's default for pyramid_reduce
TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default
RADIUS = int(TRUNCATE * SIGMA + 0.5)  # = 3, SciPy's kernel radius


def gaussian_kernel_1d(sigma: float = SIGMA, radius: int = RADIUS) -> np.ndarray:
    """The normalised 1-D Gaussian of ``scipy.ndimage.gaussian_filter`` (float64)."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def _symmetric_indices(size, pad):
    """Indices of ``range(-pad, size + pad)`` folded back as SciPy's ``mode="reflect"``.

    Works for any ``size >= 1`` (also ``size < pad``, where ``tf.pad(mode="SYMMETRIC")``
    fails): the extension is periodic with period ``2 * size``.
    """
    # Shifted by a multiple of the period so that the modulo only sees non-negative
    # numbers: tf2onnx lowers integer FloorMod to x - (x / y) * y with ONNX's truncating
    # integer Div, which is wrong for negative x.
    idx = ops.arange(-pad, size + pad, dtype="int32") + 2 * size * pad
    idx = ops.mod(idx, 2 * size)
    return ops.where(idx >= size, 2 * size - 1 - idx, idx)


def _smooth(image, kernel_h, kernel_w):
    """Separable Gaussian blur of ``(B, H, W, C)`` with SciPy-``reflect`` borders."""
    shape = ops.shape(image)
    x = ops.take(image, _symmetric_indices(shape[1], RADIUS), axis=1)
    x = ops.depthwise_conv(x, kernel_h, strides=1, padding="valid")
    x = ops.take(x, _symmetric_indices(shape[2], RADIUS), axis=2)
    return ops.depthwise_conv(x, kernel_w, strides=1, padding="valid")


def _kernels(channels, dtype):
    k = gaussian_kernel_1d()
    kernel_h = np.tile(k.reshape(-1, 1, 1, 1), (1, 1, channels, 1))
    kernel_w = np.tile(k.reshape(1, -1, 1, 1), (1, 1, channels, 1))
    return ops.convert_to_tensor(kernel_h, dtype=dtype), ops.convert_to_tensor(
        kernel_w, dtype=dtype
    )


def pyramid_reduce(image, kernels=None):
    """One level: smooth (sigma 2/3, SciPy reflect) then bilinear resize to ``ceil(n/2)``.

    Args:
        image: ``(B, H, W, C)`` float tensor with a known channel count.
        kernels: optional ``(kernel_h, kernel_w)`` depthwise kernels from ``_kernels``.

    Returns:
        ``(B, ceil(H/2), ceil(W/2), C)`` tensor.
    """
    if kernels is None:
        kernels = _kernels(image.shape[-1], image.dtype)
    smoothed = _smooth(image, *kernels)
    shape = ops.shape(image)
    size = ((shape[1] + 1) // 2, (shape[2] + 1) // 2)
    # half_pixel_centers bilinear = ndimage.zoom(order=1, grid_mode=True).
    if keras.config.backend() == "tensorflow":
        # keras.ops.image.resize wants Python ints; TensorFlow graphs have dynamic H, W.
        import tensorflow as tf

        out = tf.image.resize(smoothed, tf.stack(size), method="bilinear", antialias=False)
    else:
        out = ops.image.resize(smoothed, size, interpolation="bilinear", antialias=False)
    return ops.cast(out, image.dtype)


def edge_pad_to_multiple(image, multiple: int):
    """Pads ``(B, H, W, C)`` at the bottom/right by repeating the last row/column so
    that H and W divide by ``multiple`` (``numpy.pad(mode="edge")``, as the official
    DeepDeblur demo loader does before building its pyramid)."""
    if multiple == 1:
        return image
    shape = ops.shape(image)
    # Padded size by floor division of positive numbers: no modulo of a negative number,
    # which tf2onnx's integer FloorMod gets wrong (see _symmetric_indices).
    rows = ops.minimum(
        ops.arange((shape[1] + multiple - 1) // multiple * multiple, dtype="int32"), shape[1] - 1
    )
    cols = ops.minimum(
        ops.arange((shape[2] + multiple - 1) // multiple * multiple, dtype="int32"), shape[2] - 1
    )
    return ops.take(ops.take(image, rows, axis=1), cols, axis=2)


def gaussian_pyramid(image, levels: int) -> list:
    """Gaussian pyramid ``[finest, ..., coarsest]`` of a batch of images.

    Numerically equal (to float32 rounding) to
    ``list(skimage.transform.pyramid_gaussian(img, max_layer=levels - 1, downscale=2,
    preserve_range=True, channel_axis=-1))`` for every image of the batch, odd sizes
    included (level ``k`` has size ``ceil(H / 2**k)``, each level made from the previous).

    Args:
        image: ``(B, H, W, C)`` float tensor; C must be known.
        levels: int >= 1, number of images returned (the finest is ``image`` itself).

    Returns:
        List of ``levels`` tensors, finest first.

    Raises:
        ValueError: ``levels`` is not a positive int, or ``image`` is not 4-D with a
            known channel count.
    """
    if not isinstance(levels, int) or isinstance(levels, bool) or levels < 1:
        raise ValueError(f"levels must be a positive integer, got {levels!r}.")
    image = ops.convert_to_tensor(image)
    if len(image.shape) != 4 or image.shape[-1] is None:
        raise ValueError(
            f"image must be (B, H, W, C) with a known C, got shape {tuple(image.shape)}."
        )
    if not keras.backend.is_float_dtype(image.dtype):
        image = ops.cast(image, "float32")
    kernels = _kernels(image.shape[-1], image.dtype)
    pyramid = [image]
    for _ in range(levels - 1):
        pyramid.append(pyramid_reduce(pyramid[-1], kernels))
    return pyramid


@keras.saving.register_keras_serializable(package="tfdeblur")
class GaussianPyramid(keras.layers.Layer):
    """Layer returning the Gaussian pyramid ``[finest, ..., coarsest]`` of its input.

    See :func:`gaussian_pyramid` for the exact filter. With ``pad_to_multiple > 1`` the
    input is first edge-padded at the bottom/right to a multiple of ``pad_to_multiple``
    (``numpy.pad(mode="edge")``), as the official DeepDeblur demo loader does, so that
    with ``pad_to_multiple = 2 ** (levels - 1)`` every level is exactly half the size of
    the previous one and the finest level is the padded image.

    Args:
        levels: int >= 1, number of pyramid levels returned. Default 3.
        pad_to_multiple: int >= 1, edge-pad the input to this multiple first. Default 1
            (no padding: sizes ``ceil(H / 2**k)`` as scikit-image).

    Reference:
        Nah et al., CVPR 2017, sec. 3 and 3.1; official code ``src/data/common.py``.
    """

    def __init__(self, levels=3, pad_to_multiple=1, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(levels, int) or isinstance(levels, bool) or levels < 1:
            raise ValueError(f"levels must be a positive integer, got {levels!r}.")
        if (
            not isinstance(pad_to_multiple, int)
            or isinstance(pad_to_multiple, bool)
            or pad_to_multiple < 1
        ):
            raise ValueError(
                f"pad_to_multiple must be a positive integer, got {pad_to_multiple!r}."
            )
        self.levels = levels
        self.pad_to_multiple = pad_to_multiple

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                f"GaussianPyramid needs (B, H, W, C) input with a known C, got {input_shape}."
            )

    def call(self, inputs):
        x = edge_pad_to_multiple(inputs, self.pad_to_multiple)
        return gaussian_pyramid(x, self.levels)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        m = self.pad_to_multiple

        def level(n, k):
            if n is None:
                return None
            n = -(-n // m) * m
            for _ in range(k):
                n = math.ceil(n / 2)
            return n

        return [(b, level(h, k), level(w, k), c) for k in range(self.levels)]

    def get_config(self):
        return {
            **super().get_config(),
            "levels": self.levels,
            "pad_to_multiple": self.pad_to_multiple,
        }
