"""dynamic_filter (SAPHN eq. 7) against a hand-written spatially varying convolution."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_layers import DynamicFilter, dynamic_filter
from tests.utils import assert_layer_config_roundtrip, to_numpy


def naive_dynamic_filter(x, adaptive, kernel, bias=None):
    """Eq. (7) literally: y_i = sum_{j in window(i)} K_i[j] W[j - i] x_j + b, zeros outside."""
    b, h, w, c = x.shape
    k = kernel.shape[0]
    r = k // 2
    per_channel = adaptive.shape[-1] == k * k * c
    out = np.zeros((b, h, w, kernel.shape[-1]), np.float64)
    for n in range(b):
        for i in range(h):
            for j in range(w):
                acc = np.zeros(kernel.shape[-1])
                for dy in range(k):
                    for dx in range(k):
                        y, xx = i + dy - r, j + dx - r
                        if not (0 <= y < h and 0 <= xx < w):
                            continue
                        t = dy * k + dx
                        weight = (
                            adaptive[n, i, j, t * c : (t + 1) * c]
                            if per_channel
                            else (adaptive[n, i, j, t])
                        )
                        acc += (weight * x[n, y, xx]) @ kernel[dy, dx]
                out[n, i, j] = acc + (0 if bias is None else bias)
    return out


@pytest.mark.skipif(
    keras.config.backend() == "jax", reason="a float64 check: JAX computes float32 without x64"
)
@pytest.mark.parametrize("k,h,w,per_channel", [(3, 6, 7, False), (5, 5, 4, False), (3, 4, 5, True)])
def test_matches_spatially_varying_convolution(k, h, w, per_channel):
    rng = np.random.default_rng(k * 10 + h)
    c, o = 3, 4
    x = rng.normal(size=(2, h, w, c))
    adaptive = rng.normal(size=(2, h, w, k * k * (c if per_channel else 1)))
    kernel = rng.normal(size=(k, k, c, o))
    bias = rng.normal(size=(o,))
    got = to_numpy(dynamic_filter(x, adaptive, kernel, bias))
    np.testing.assert_allclose(got, naive_dynamic_filter(x, adaptive, kernel, bias), atol=1e-10)


def test_constant_one_kernel_is_ordinary_convolution():
    # Sec. 2.2: "standard spatial convolution ... with adapting kernel being constant K = 1".
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 9, 8, 3)).astype(np.float32)
    kernel = rng.normal(size=(5, 5, 3, 2)).astype(np.float32)
    got = dynamic_filter(x, np.ones((1, 9, 8, 25), np.float32), kernel)
    expected = tf.nn.conv2d(x, kernel, 1, "SAME")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.tf_only
def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(size=(1, 4, 5, 2)))
    adaptive = tf.constant(rng.normal(size=(1, 4, 5, 9)))
    kernel = tf.constant(rng.normal(size=(3, 3, 2, 2)))
    theoretical, numerical = tf.test.compute_gradient(
        tf.function(lambda a, b, c: dynamic_filter(a, b, c)), [x, adaptive, kernel]
    )
    for t, n in zip(theoretical, numerical, strict=True):
        np.testing.assert_allclose(t, n, atol=1e-6)


def test_layer_with_generated_kernel_matches_reference_at_any_size():
    layer = DynamicFilter(filters=4, kernel_size=3, meta_filters=5, name="pdf")
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, layer(inputs))
    rng = np.random.default_rng(3)
    # A non-trivial meta-layer (its last conv starts at zero, i.e. K = 1).
    layer.meta_kernel.set_weights(
        [rng.normal(size=w.shape).astype(np.float32) for w in layer.meta_kernel.get_weights()]
    )
    for h, w in [(5, 7), (8, 3)]:
        x = rng.normal(size=(2, h, w, 3)).astype(np.float32)
        adaptive = to_numpy(layer.adaptive_kernel(x))
        assert adaptive.shape == (2, h, w, 9)
        assert np.ptp(adaptive) > 0.1  # really spatially varying
        expected = naive_dynamic_filter(x, adaptive, layer.kernel.numpy(), layer.bias.numpy())
        np.testing.assert_allclose(to_numpy(model(x)), expected, rtol=1e-4, atol=1e-4)


def test_layer_starts_as_ordinary_convolution():
    layer = DynamicFilter(kernel_size=5, meta_filters=4)
    x = np.random.default_rng(4).normal(size=(1, 7, 6, 3)).astype(np.float32)
    y = to_numpy(layer(x))
    assert y.shape == (1, 7, 6, 3)
    np.testing.assert_allclose(y, tf.nn.conv2d(x, layer.kernel, 1, "SAME"), rtol=1e-5, atol=1e-5)
    # meta-layer 3*3*3*4+4 and 3*3*4*25+25, filter 5*5*3*3 + 3
    assert layer.count_params() == 112 + 925 + 228


@pytest.mark.parametrize("meta_kernel_size", [1, 3])
def test_single_convolution_meta_layer(meta_kernel_size):
    # meta_filters=None: K is one convolution of the input, no hidden layer.
    layer = DynamicFilter(kernel_size=5, meta_filters=None, meta_kernel_size=meta_kernel_size)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 6, 7, 3)).astype(np.float32)
    layer(x)
    assert layer.meta_hidden is None
    m = meta_kernel_size
    assert layer.meta_kernel.kernel.shape == (m, m, 3, 25)
    # meta-layer m*m*3*25 + 25, filter 5*5*3*3 + 3
    assert layer.count_params() == m * m * 3 * 25 + 25 + 228
    layer.meta_kernel.set_weights(
        [rng.normal(size=w.shape).astype(np.float32) for w in layer.meta_kernel.get_weights()]
    )
    kernel, bias = layer.meta_kernel.get_weights()
    adaptive = to_numpy(tf.nn.conv2d(x, kernel, 1, "SAME")) + bias
    np.testing.assert_allclose(to_numpy(layer.adaptive_kernel(x)), adaptive, rtol=1e-5, atol=1e-5)
    expected = naive_dynamic_filter(x, adaptive, layer.kernel.numpy(), layer.bias.numpy())
    np.testing.assert_allclose(to_numpy(layer(x)), expected, rtol=1e-4, atol=1e-4)


def test_meta_kernel_size_of_the_two_layer_meta_layer():
    layer = DynamicFilter(kernel_size=3, meta_filters=4, meta_kernel_size=1)
    layer(np.zeros((1, 5, 5, 2), np.float32))
    assert layer.meta_hidden.kernel.shape == (1, 1, 2, 4)
    assert layer.meta_kernel.kernel.shape == (1, 1, 4, 9)


def test_config_roundtrip_and_errors():
    x = np.random.default_rng(0).normal(size=(1, 6, 7, 4)).astype(np.float32)
    assert_layer_config_roundtrip(
        DynamicFilter(filters=2, kernel_size=3, per_channel_kernel=True, meta_filters=4), x
    )
    assert_layer_config_roundtrip(DynamicFilter(meta_filters=None, meta_kernel_size=1), x)
    # Configs written before meta_kernel_size existed load with the 3x3 meta-layer.
    config = DynamicFilter(meta_filters=6).get_config()
    del config["meta_kernel_size"]
    assert DynamicFilter.from_config(config).meta_kernel_size == 3
    for bad in [0, 2, 1.0]:
        with pytest.raises(ValueError, match="meta_kernel_size"):
            DynamicFilter(meta_kernel_size=bad)
    with pytest.raises(ValueError, match="meta_filters"):
        DynamicFilter(meta_filters=0)
    with pytest.raises(ValueError, match="kernel_size"):
        DynamicFilter(kernel_size=4)
    with pytest.raises(ValueError, match="filters"):
        DynamicFilter(filters=0)
    with pytest.raises(ValueError, match="adaptive_kernel"):
        dynamic_filter(np.zeros((1, 4, 4, 2)), np.zeros((1, 4, 4, 8)), np.zeros((3, 3, 2, 1)))
    with pytest.raises(ValueError, match="kernel must have shape"):
        dynamic_filter(np.zeros((1, 4, 4, 2)), np.zeros((1, 4, 4, 4)), np.zeros((2, 2, 2, 1)))
