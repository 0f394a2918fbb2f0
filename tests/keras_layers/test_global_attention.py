"""SAPHN's global attention (eq. 1-6), step by step against NumPy loops, self and cross."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_layers import GlobalAttention, global_attention
from keras_layers.global_attention import distribute, gather_descriptors, spatial_softmax
from tests.utils import assert_layer_config_roundtrip, to_numpy


def np_softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def naive_spatial_softmax(q_logits):
    """Eq. (1): every map q_k, flattened over HW in row-major order, is a softmax."""
    b, h, w, c2 = q_logits.shape
    out = np.zeros((b, c2, h * w))
    for n in range(b):
        for k in range(c2):
            out[n, k] = np_softmax(q_logits[n, :, :, k].reshape(-1))
    return out


def naive_gather(q, x):
    """Eq. (1)-(2): xbar^k = GSP_HW(q_k * x) = sum over pixels i of q_k[i] x_i."""
    b, h, w, c = x.shape
    out = np.zeros((b, q.shape[1], c))
    for n in range(b):
        for k in range(q.shape[1]):
            for i in range(h):
                for j in range(w):
                    out[n, k] += q[n, k, i * w + j] * x[n, i, j]
    return out


def naive_distribute(p_logits, descriptors):
    """Eq. (5)-(6): p_j = softmax over C2 at pixel j; y^j = p_j * xbar; GAP over C2."""
    b, h, w, c2 = p_logits.shape
    out = np.zeros((b, h, w, descriptors.shape[-1]))
    for n in range(b):
        for i in range(h):
            for j in range(w):
                p = np_softmax(p_logits[n, i, j])
                y = p[:, None] * descriptors[n]  # (C2, C): y^j
                out[n, i, j] = y.mean(axis=0)  # GAP over C2
    return out


def naive_global_attention(p_logits, q_logits, x, m2):
    descriptors = naive_gather(naive_spatial_softmax(q_logits), x)
    descriptors = m2[:, None, :] * descriptors  # eq. (3)
    return naive_distribute(p_logits, descriptors)


@pytest.mark.tf_only
def test_spatial_softmax_is_a_softmax_over_hw_per_map():
    q = np.random.default_rng(0).normal(size=(2, 3, 5, 4)) * 3
    got = to_numpy(spatial_softmax(q))
    np.testing.assert_allclose(got, naive_spatial_softmax(q), atol=1e-12)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-12)


@pytest.mark.tf_only
def test_gather_is_global_sum_pooling_of_weighted_features():
    rng = np.random.default_rng(1)
    q = naive_spatial_softmax(rng.normal(size=(2, 3, 4, 5)))
    x = rng.normal(size=(2, 3, 4, 6))
    np.testing.assert_allclose(gather_descriptors(q, x), naive_gather(q, x), atol=1e-12)


@pytest.mark.tf_only
def test_distribute_is_per_pixel_softmax_over_maps_then_average():
    rng = np.random.default_rng(2)
    p_logits = rng.normal(size=(2, 4, 3, 5)) * 2
    descriptors = rng.normal(size=(2, 5, 6))
    np.testing.assert_allclose(
        distribute(p_logits, descriptors), naive_distribute(p_logits, descriptors), atol=1e-12
    )


@pytest.mark.tf_only
@pytest.mark.parametrize("query_hw,source_hw", [((4, 5), (4, 5)), ((6, 3), (2, 7))])
def test_global_attention_matches_reference_self_and_cross(query_hw, source_hw):
    rng = np.random.default_rng(query_hw[0] * 10 + source_hw[1])
    c2, c = 5, 3
    p_logits = rng.normal(size=(2, *query_hw, c2))
    q_logits = rng.normal(size=(2, *source_hw, c2))
    x = rng.normal(size=(2, *source_hw, c))
    m2 = rng.normal(size=(2, c))
    got = to_numpy(global_attention(p_logits, q_logits, x, m2))
    assert got.shape == (2, *query_hw, c)
    np.testing.assert_allclose(got, naive_global_attention(p_logits, q_logits, x, m2), atol=1e-12)


@pytest.mark.tf_only
def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    args = [
        tf.constant(rng.normal(size=s)) for s in [(1, 3, 2, 3), (1, 2, 3, 3), (1, 2, 3, 2), (1, 2)]
    ]
    theoretical, numerical = tf.test.compute_gradient(tf.function(global_attention), args)
    for t, n in zip(theoretical, numerical, strict=True):
        np.testing.assert_allclose(t, n, atol=1e-6)


def conv1x1(layer, x):
    kernel, bias = (w.astype(np.float64) for w in layer.get_weights())
    return x @ kernel[0, 0] + bias


def test_self_attention_layer_is_eq_1_to_6_of_its_convolutions():
    layer = GlobalAttention(attention_maps=4)
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, layer(inputs))
    rng = np.random.default_rng(4)
    for h, w in [(5, 6), (3, 9)]:
        x = rng.normal(size=(2, h, w, 3)).astype(np.float32)
        m2 = conv1x1(layer.channel_conv, x.mean(axis=(1, 2)))  # GAP(f_M2(x)), f_M2 is 1x1
        expected = naive_global_attention(
            conv1x1(layer.selection_conv, x), conv1x1(layer.gather_conv, x), x, m2
        )
        np.testing.assert_allclose(to_numpy(model(x)), expected, rtol=1e-4, atol=1e-5)
    # f_p, f_q: 3 -> 4 maps; f_M2: 3 -> 3 channels.
    assert layer.count_params() == 2 * (3 * 4 + 4) + (3 * 3 + 3)


def test_cross_attention_takes_query_pixels_and_source_features():
    layer = GlobalAttention(attention_maps=3)
    query_in, source_in = keras.Input((None, None, 2)), keras.Input((None, None, 4))
    model = keras.Model([query_in, source_in], layer([query_in, source_in]))
    rng = np.random.default_rng(5)
    query = rng.normal(size=(2, 5, 4, 2)).astype(np.float32)
    source = rng.normal(size=(2, 3, 6, 4)).astype(np.float32)
    got = to_numpy(model([query, source]))
    assert got.shape == (2, 5, 4, 4)  # query's H, W; source's channels
    m2 = conv1x1(layer.channel_conv, source.mean(axis=(1, 2)))
    expected = naive_global_attention(
        conv1x1(layer.selection_conv, query), conv1x1(layer.gather_conv, source), source, m2
    )
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_config_roundtrip_and_errors():
    rng = np.random.default_rng(0)
    x, query = rng.normal(size=(1, 6, 5, 4)), rng.normal(size=(1, 3, 4, 4))
    assert_layer_config_roundtrip(GlobalAttention(attention_maps=7), x.astype(np.float32))
    assert_layer_config_roundtrip(
        GlobalAttention(attention_maps=7), [query.astype(np.float32), x.astype(np.float32)]
    )
    with pytest.raises(ValueError, match="attention_maps"):
        GlobalAttention(attention_maps=0)
    with pytest.raises(ValueError, match="C2"):
        global_attention(
            np.zeros((1, 2, 2, 3)), np.zeros((1, 2, 2, 4)), np.zeros((1, 2, 2, 1)), np.zeros((1, 1))
        )
    with pytest.raises(ValueError, match="M2"):
        global_attention(
            np.zeros((1, 2, 2, 3)), np.zeros((1, 2, 2, 3)), np.zeros((1, 2, 2, 2)), np.zeros((1, 3))
        )
