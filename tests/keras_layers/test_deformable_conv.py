"""deform_conv2d (SARN eq. 6, DCNv1) against a naive NumPy loop with torchvision's rules,
the DeformableConv2D layer and the DRM, and their TFLite/ONNX conversion."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_layers import DRM, DeformableConv2D, deform_conv2d
from tests.utils import assert_converts_to_tflite_and_onnx, assert_layer_config_roundtrip, to_numpy


def torchvision_bilinear(img, h, w):
    """``bilinear_interpolate`` of torchvision's deform_conv2d kernel, transcribed."""
    height, width, channels = img.shape
    if h <= -1 or height <= h or w <= -1 or width <= w:
        return np.zeros(channels)
    h_low, w_low = int(np.floor(h)), int(np.floor(w))
    h_high, w_high = h_low + 1, w_low + 1
    lh, lw = h - h_low, w - w_low
    hh, hw = 1 - lh, 1 - lw
    v1 = img[h_low, w_low] if (h_low >= 0 and w_low >= 0) else 0.0
    v2 = img[h_low, w_high] if (h_low >= 0 and w_high <= width - 1) else 0.0
    v3 = img[h_high, w_low] if (h_high <= height - 1 and w_low >= 0) else 0.0
    v4 = img[h_high, w_high] if (h_high <= height - 1 and w_high <= width - 1) else 0.0
    return hh * hw * v1 + hh * lw * v2 + lh * hw * v3 + lh * lw * v4


def naive_deform_conv(x, offsets, kernel, bias=None, dilation=1):
    """Eq. (6) pixel by pixel and tap by tap: stride 1, padding d*(k-1)/2 (torchvision).

    ``dilation`` is an int or a ``(d_h, d_w)`` pair."""
    d_h, d_w = (dilation, dilation) if isinstance(dilation, int) else dilation
    batch, height, width, _ = x.shape
    kh, kw, _, out_ch = kernel.shape
    x, offsets, kernel = (a.astype(np.float64) for a in (x, offsets, kernel))
    out = np.zeros((batch, height, width, out_ch))
    for b in range(batch):
        for y in range(height):
            for xq in range(width):
                acc = np.zeros(out_ch) if bias is None else bias.astype(np.float64).copy()
                for i in range(kh):
                    for j in range(kw):
                        n = i * kw + j
                        h = y - d_h * (kh - 1) // 2 + i * d_h + offsets[b, y, xq, 2 * n]
                        w = xq - d_w * (kw - 1) // 2 + j * d_w + offsets[b, y, xq, 2 * n + 1]
                        acc += torchvision_bilinear(x[b], h, w) @ kernel[i, j]
                out[b, y, xq] = acc
    return out


def _random(shape, seed, scale=1.0):
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


def test_zero_offsets_is_plain_same_convolution():
    x = _random((2, 7, 9, 4), 0)
    kernel = _random((3, 3, 4, 5), 1)
    bias = _random((5,), 2)
    got = to_numpy(deform_conv2d(x, np.zeros((2, 7, 9, 18), np.float32), kernel, bias))
    expected = to_numpy(tf.nn.conv2d(x, kernel, 1, "SAME")) + bias
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_integer_offsets_shift_the_taps():
    # An integer offset reads one pixel exactly: compare with the naive loop and, for a
    # uniform shift, with the plain convolution of the shifted (zero-filled) image.
    x = _random((1, 6, 8, 3), 3)
    kernel = _random((3, 3, 3, 2), 4)
    rng = np.random.default_rng(5)
    offsets = rng.integers(-2, 3, size=(1, 6, 8, 18)).astype(np.float32)
    got = to_numpy(deform_conv2d(x, offsets, kernel))
    np.testing.assert_allclose(got, naive_deform_conv(x, offsets, kernel), rtol=1e-5, atol=1e-5)

    uniform = np.zeros((1, 6, 8, 18), np.float32)
    uniform[..., 0::2], uniform[..., 1::2] = 1.0, -2.0  # every tap: 1 down, 2 left
    # Output (y, x) reads x[y + i - 1 + 1, x + j - 1 - 2] for tap (i, j), zero outside:
    # a VALID convolution of the zero-padded image, window moved by (+1, -2).
    padded = np.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)))
    expected = to_numpy(tf.nn.conv2d(padded[:, 3 : 3 + 6 + 2, 0 : 8 + 2], kernel, 1, "VALID"))
    got = to_numpy(deform_conv2d(x, uniform, kernel))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dilation", [1, 2, (1, 2), (3, 1)])
def test_fractional_offsets_match_naive_reference(dilation):
    x = _random((2, 7, 6, 3), 6)
    kernel = _random((3, 3, 3, 4), 7)
    bias = _random((4,), 8)
    offsets = _random((2, 7, 6, 18), 9, scale=1.5)
    got = to_numpy(deform_conv2d(x, offsets, kernel, bias, dilation_rate=dilation))
    expected = naive_deform_conv(x, offsets, kernel, bias, dilation)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_float16_inputs_match_naive_reference():
    # Mixed precision: float16 features and kernel, positions and bilinear weights kept in
    # float32 inside the op. Outputs are float16 (about 3 significant digits).
    x = _random((1, 6, 7, 3), 30)
    kernel = _random((3, 3, 3, 4), 31, scale=0.3)
    bias = _random((4,), 32)
    offsets = _random((1, 6, 7, 18), 33, scale=1.5)
    got = deform_conv2d(
        x.astype(np.float16), offsets.astype(np.float16), kernel.astype(np.float16), bias
    )
    assert keras.backend.standardize_dtype(got.dtype) == "float16"
    expected = naive_deform_conv(x, offsets, kernel, bias)
    np.testing.assert_allclose(to_numpy(got).astype(np.float64), expected, rtol=1e-2, atol=2e-2)
    # Far from the origin a float16 position would round (float16 steps are 0.25 at 300):
    # the op keeps positions in float32, so a 0.3-pixel offset on a wide map is exact.
    wide = _random((1, 1, 320, 2), 34)
    shift = np.zeros((1, 1, 320, 2), np.float32)  # 1x1 kernel: one tap
    shift[..., 1] = 0.3
    one_tap = _random((1, 1, 2, 1), 35)
    got = to_numpy(
        deform_conv2d(wide.astype(np.float16), shift, one_tap.astype(np.float16))
    ).astype(np.float64)
    expected = naive_deform_conv(wide, shift, one_tap)
    np.testing.assert_allclose(got, expected, rtol=1e-2, atol=2e-2)


@pytest.mark.tf_only
def test_offsets_of_another_size_are_rejected():
    x = np.zeros((2, 5, 6, 2), np.float32)
    kernel = np.zeros((3, 3, 2, 1), np.float32)
    for bad in [(2, 5, 5, 18), (2, 4, 6, 18), (1, 5, 6, 18)]:
        with pytest.raises(ValueError, match=r"offsets must have the inputs' .*\(2, 5, 6, 2\)"):
            deform_conv2d(x, np.zeros(bad, np.float32), kernel)
    with pytest.raises(ValueError, match="4-D"):
        deform_conv2d(x, np.zeros((2, 5, 108), np.float32), kernel)

    # Unknown static sizes (dynamic H, W): checked when run, not inside a reshape.
    spec = tf.TensorSpec([None, None, None, 2]), tf.TensorSpec([None, None, None, 18])
    run = tf.function(lambda a, o: deform_conv2d(a, o, kernel), input_signature=spec)
    assert run(x, np.zeros((2, 5, 6, 18), np.float32)).shape == (2, 5, 6, 1)
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="offsets must have the batch size, height and width"
    ):
        run(x, np.zeros((2, 5, 7, 18), np.float32))


def test_samples_outside_the_image_read_zero():
    x = _random((1, 5, 5, 2), 10)
    kernel = _random((3, 3, 2, 3), 11)
    # Far outside: every tap reads 0 -> output is exactly the bias.
    far = np.full((1, 5, 5, 18), 50.0, np.float32)
    bias = np.array([0.5, -1.0, 2.0], np.float32)
    np.testing.assert_array_equal(
        to_numpy(deform_conv2d(x, far, kernel, bias)), np.broadcast_to(bias, (1, 5, 5, 3))
    )
    # Straddling the border: points in (-1, 0) and (H-1, H) keep their in-image corners
    # only; points at exactly -1 or H read 0. Torchvision's rule, checked pixel by pixel.
    offsets = np.random.default_rng(12).choice(
        np.array([-5.5, -4.25, -1.0, -0.5, 0.3, 4.0, 4.6, 5.0], np.float32), size=(1, 5, 5, 18)
    )
    got = to_numpy(deform_conv2d(x, offsets, kernel))
    np.testing.assert_allclose(got, naive_deform_conv(x, offsets, kernel), rtol=1e-5, atol=1e-5)


def test_rectangular_kernel_and_torchvision_offset_layout():
    # Kernel 1x3: tap n = j; offset channel 2n is vertical, 2n + 1 horizontal.
    x = _random((1, 4, 5, 2), 13)
    kernel = _random((1, 3, 2, 1), 14)
    offsets = np.zeros((1, 4, 5, 6), np.float32)
    offsets[..., 2] = 1.0  # middle tap one row down
    got = to_numpy(deform_conv2d(x, offsets, kernel))
    np.testing.assert_allclose(got, naive_deform_conv(x, offsets, kernel), rtol=1e-5, atol=1e-5)
    below = np.zeros_like(x)
    below[:, :-1] = x[:, 1:]
    expected = to_numpy(
        tf.nn.conv2d(x, kernel * np.array([1, 0, 1])[None, :, None, None], 1, "SAME")
    ) + to_numpy(tf.nn.conv2d(below, kernel * np.array([0, 1, 0])[None, :, None, None], 1, "SAME"))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_rejects_bad_arguments():
    x = np.zeros((1, 4, 4, 2), np.float32)
    with pytest.raises(ValueError, match="odd"):
        deform_conv2d(x, np.zeros((1, 4, 4, 8), np.float32), np.zeros((2, 2, 2, 1), np.float32))
    with pytest.raises(ValueError, match="offsets"):
        deform_conv2d(x, np.zeros((1, 4, 4, 9), np.float32), np.zeros((3, 3, 2, 1), np.float32))
    with pytest.raises(ValueError, match="channels"):
        deform_conv2d(x, np.zeros((1, 4, 4, 18), np.float32), np.zeros((3, 3, 5, 1), np.float32))
    with pytest.raises(ValueError, match="kernel_size"):
        DeformableConv2D(4, kernel_size=2)
    with pytest.raises(ValueError, match="dilation_rate"):
        deform_conv2d(x, np.zeros((1, 4, 4, 18), np.float32), np.zeros((3, 3, 2, 1)), None, 0)
    for bad in [0, (1, 2), 1.5, "2"]:
        with pytest.raises(ValueError, match="dilation_rate"):
            DRM(dilation_rate=bad)
        with pytest.raises(ValueError, match="dilation_rate"):
            DeformableConv2D(4, dilation_rate=bad)


@pytest.mark.tf_only
def test_gradients_reach_the_offsets():
    x = _random((1, 6, 6, 2), 15)
    kernel = tf.constant(_random((3, 3, 2, 2), 16))
    offsets = tf.Variable(_random((1, 6, 6, 18), 17, scale=0.7))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(deform_conv2d(x, offsets, kernel) ** 2)
    grad = to_numpy(tape.gradient(loss, offsets))
    # Central finite difference on one offset (away from integer positions).
    eps, idx = 1e-2, (0, 2, 3, 5)
    plus, minus = offsets.numpy(), offsets.numpy()
    plus[idx] += eps
    minus[idx] -= eps
    numeric = (
        np.sum(naive_deform_conv(x, plus, kernel.numpy()) ** 2)
        - np.sum(naive_deform_conv(x, minus, kernel.numpy()) ** 2)
    ) / (2 * eps)
    np.testing.assert_allclose(grad[idx], numeric, rtol=2e-2, atol=1e-2)


def test_layer_starts_as_plain_convolution_and_uses_its_offsets():
    x = _random((2, 8, 7, 3), 18)
    layer = DeformableConv2D(4, dilation_rate=1)
    y = to_numpy(layer(x))
    assert layer.offset_conv.count_params() == 3 * 18 * 9 + 18
    assert layer.count_params() == (3 * 18 * 9 + 18) + (3 * 4 * 9 + 4)
    np.testing.assert_array_equal(layer.offset_conv.kernel.numpy(), 0.0)
    expected = to_numpy(tf.nn.conv2d(x, layer.kernel, 1, "SAME")) + layer.bias.numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    # With trained offset weights the layer is deform_conv2d on its offset conv's output.
    for w in layer.offset_conv.weights:
        w.assign(_random(w.shape, 19, scale=0.3))
    offsets = to_numpy(layer.offset_conv(x))
    naive = naive_deform_conv(x, offsets, layer.kernel.numpy(), layer.bias.numpy())
    np.testing.assert_allclose(to_numpy(layer(x)), naive, rtol=1e-4, atol=1e-4)


def test_drm_is_residual_deformable_block():
    x = _random((1, 6, 5, 4), 20)
    block = DRM()
    block(x)
    for w in block.deform.offset_conv.weights:
        w.assign(_random(w.shape, 21, scale=0.3))
    features = np.maximum(to_numpy(block.conv(x)), 0.0)
    offsets = to_numpy(block.deform.offset_conv(features))
    expected = x + naive_deform_conv(
        features, offsets, block.deform.kernel.numpy(), block.deform.bias.numpy()
    )
    np.testing.assert_allclose(to_numpy(block(x)), expected, rtol=1e-4, atol=1e-4)
    # A ResBlock (2 convs) plus the offset conv of 2k^2 channels.
    assert block.count_params() == 2 * (4 * 4 * 9 + 4) + (4 * 18 * 9 + 18)


def test_config_roundtrip_and_dynamic_shapes():
    features = np.random.default_rng(0).normal(size=(1, 7, 9, 3)).astype(np.float32)
    assert_layer_config_roundtrip(
        DeformableConv2D(6, kernel_size=5, dilation_rate=2, use_bias=False), features
    )
    assert_layer_config_roundtrip(DRM(kernel_size=3, dilation_rate=2), features)
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, DRM(name="drm")(inputs))
    for h, w in [(5, 7), (12, 3)]:
        assert model(np.zeros((2, h, w, 3), np.float32)).shape == (2, h, w, 3)


@pytest.mark.tf_only
@pytest.mark.slow
def test_converts_to_tflite_builtins_and_onnx_with_dynamic_size():
    inputs = keras.Input((None, None, 4))
    model = keras.Model(inputs, DRM(name="drm")(inputs))
    for w in model.get_layer("drm").deform.offset_conv.weights:
        w.assign(_random(w.shape, 22, scale=0.3))
    runs = [[_random((1, *size, 4), size[0])] for size in [(9, 13), (6, 5)]]
    assert_converts_to_tflite_and_onnx(model, runs)
