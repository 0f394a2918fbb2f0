"""SARN's self-attention module against a direct NumPy evaluation of its equations."""

import keras
import numpy as np
import pytest

from keras_layers import SelfAttention2D
from tests.utils import assert_layer_config_roundtrip, to_numpy


def conv1x1(x, layer):
    kernel, bias = (w.numpy().astype(np.float64) for w in layer.weights)
    return x @ kernel[0, 0] + bias


def maxpool_same(x, p):
    """p x p max pooling, stride p, TF 'SAME': ceil(H/p) windows, the missing rows/columns
    padded half before (rounded down) and half after, padding never the max."""
    b, h, w, c = x.shape
    oh, ow = -(-h // p), -(-w // p)
    top, left = (oh * p - h) // 2, (ow * p - w) // 2
    out = np.zeros((b, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            rows = slice(max(i * p - top, 0), i * p - top + p)
            cols = slice(max(j * p - left, 0), j * p - left + p)
            out[:, i, j] = x[:, rows, cols].max(axis=(1, 2))
    return out


def naive_self_attention(x, layer):
    """q_i = W_q x_i; k_j, v_j from the pooled projections; beta = softmax_j(q_i . k_j);
    y_i = x_i + gamma * W_o sum_j beta_ij v_j -- position by position."""
    x = x.astype(np.float64)
    q = conv1x1(x, layer.query_conv)
    k = maxpool_same(conv1x1(x, layer.key_conv), layer.pool)
    v = maxpool_same(conv1x1(x, layer.value_conv), layer.pool)
    gamma = float(layer.gamma.numpy())
    b, h, w, _ = x.shape
    out = np.zeros_like(x)
    for n in range(b):
        keys = k[n].reshape(-1, k.shape[-1])
        values = v[n].reshape(-1, v.shape[-1])
        for i in range(h):
            for j in range(w):
                logits = keys @ q[n, i, j]
                beta = np.exp(logits - logits.max())
                beta /= beta.sum()
                attended = beta @ values
                out[n, i, j] = x[n, i, j] + gamma * conv1x1(attended, layer.output_conv)
    return out


@pytest.mark.parametrize("pool,h,w", [(1, 5, 6), (2, 7, 5), (4, 9, 10)])
def test_matches_direct_evaluation(pool, h, w):
    rng = np.random.default_rng(pool * 10 + h)
    x = rng.normal(size=(2, h, w, 16)).astype(np.float32)
    layer = SelfAttention2D(reduction=4, pool=pool)
    layer(x)
    layer.gamma.assign(0.7)
    np.testing.assert_allclose(
        to_numpy(layer(x)), naive_self_attention(x, layer), rtol=1e-4, atol=1e-4
    )


def test_starts_as_identity_and_counts_sagan_parameters():
    x = np.random.default_rng(0).normal(size=(1, 6, 7, 128)).astype(np.float32)
    layer = SelfAttention2D()  # reduction 8, pool 4
    np.testing.assert_array_equal(to_numpy(layer(x)), x)  # gamma = 0
    # q, k, v: 128 -> 16 (1x1 + bias); output 16 -> 128; gamma.
    assert layer.count_params() == 3 * (128 * 16 + 16) + (16 * 128 + 128) + 1 == 8_369


def test_attention_is_non_local():
    # A change in the top-left pooling cell moves the output at the opposite corner: the
    # receptive field is the whole map. (Shifting the whole 4x4 cell shifts its pooled
    # key and value by exactly the projection of the shift.)
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 12, 12, 8)).astype(np.float32)
    layer = SelfAttention2D(reduction=2, pool=4)
    layer(x)
    layer.gamma.assign(1.0)
    x2 = x.copy()
    x2[0, :4, :4] += 5.0
    delta = np.abs(to_numpy(layer(x2)) - to_numpy(layer(x)))[0, -1, -1]
    assert delta.max() > 1e-4


def test_config_roundtrip_validation_and_dynamic_shapes():
    layer = SelfAttention2D(reduction=4, pool=2)
    layer(np.random.default_rng(0).normal(size=(1, 5, 6, 8)).astype(np.float32))
    layer.gamma.assign(0.7)  # not the identity it starts as
    assert_layer_config_roundtrip(
        layer, np.random.default_rng(0).normal(size=(1, 5, 6, 8)).astype(np.float32)
    )
    with pytest.raises(ValueError, match="pool"):
        SelfAttention2D(pool=0)
    with pytest.raises(ValueError, match="reduction"):
        SelfAttention2D(reduction=3)(np.zeros((1, 4, 4, 8), np.float32))
    inputs = keras.Input((None, None, 8))
    model = keras.Model(inputs, SelfAttention2D(reduction=2, pool=3)(inputs))
    for h, w in [(5, 7), (13, 2)]:
        assert model(np.zeros((2, h, w, 8), np.float32)).shape == (2, h, w, 8)
