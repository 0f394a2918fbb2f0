"""local_correlation (LCNet eq. 3-4) against a naive NumPy loop, and the LCBlock layer."""

import keras
import numpy as np
import pytest

from keras_layers import LCBlock, local_correlation
from tests.utils import assert_layer_config_roundtrip


def naive_local_correlation(pattern, content, k):
    """Eq. (3)-(4) literally: per pixel, softmax over the in-image neighbours of the window."""
    b, h, w, _ = pattern.shape
    out = np.zeros(content.shape, dtype=np.float64)
    r = k // 2
    for n in range(b):
        for i in range(h):
            for j in range(w):
                logits, values = [], []
                for di in range(-r, r + 1):
                    for dj in range(-r, r + 1):
                        y, x = i + di, j + dj
                        if 0 <= y < h and 0 <= x < w:
                            logits.append(float(pattern[n, i, j] @ pattern[n, y, x]))
                            values.append(content[n, y, x])
                logits = np.array(logits)
                weights = np.exp(logits - logits.max())
                weights /= weights.sum()
                out[n, i, j] = weights @ np.array(values)
    return out


@pytest.mark.parametrize("method", ["patches", "slices"])
@pytest.mark.parametrize("k,h,w", [(3, 7, 9), (5, 6, 5), (5, 3, 4)])
def test_matches_naive_reference_including_borders(method, k, h, w):
    rng = np.random.default_rng(k * 100 + h)
    pattern = rng.normal(size=(2, h, w, 4)).astype(np.float32)
    content = rng.normal(size=(2, h, w, 3)).astype(np.float32)
    expected = naive_local_correlation(pattern, content, k)
    got = np.asarray(local_correlation(pattern, content, k, method))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_out_of_image_neighbours_are_excluded_not_zero_padded():
    # With zero pattern features every logit is 0: an excluded neighbour leaves a plain
    # mean over the in-image window, a zero-padded one would pull the corner towards 0.
    content = np.ones((1, 4, 4, 1), np.float32)
    pattern = np.zeros((1, 4, 4, 2), np.float32)
    for method in ("patches", "slices"):
        out = np.asarray(local_correlation(pattern, content, 3, method))
        np.testing.assert_allclose(out, 1.0, rtol=1e-6)


def test_formulations_agree_on_large_logits():
    rng = np.random.default_rng(0)
    pattern = 4.0 * rng.normal(size=(1, 12, 10, 8)).astype(np.float32)
    content = rng.normal(size=(1, 12, 10, 5)).astype(np.float32)
    a = np.asarray(local_correlation(pattern, content, 5, "patches"))
    b = np.asarray(local_correlation(pattern, content, 5, "slices"))
    assert np.isfinite(a).all()
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bad", [0, 2, -3, 4.0])
def test_rejects_bad_window(bad):
    x = np.zeros((1, 4, 4, 2), np.float32)
    with pytest.raises(ValueError, match="window_size"):
        local_correlation(x, x, bad)


def test_rejects_unknown_method():
    x = np.zeros((1, 4, 4, 2), np.float32)
    with pytest.raises(ValueError, match="method"):
        local_correlation(x, x, 3, "fft")


def test_lcblock_is_shortcut_plus_restored_correlation():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 9, 11, 8)).astype(np.float32)
    block = LCBlock(squeeze_ratio=2, window_size=3)
    y = np.asarray(block(x))
    content = np.asarray(block.content_conv(x))
    pattern = np.asarray(block.pattern_conv(x))
    assert content.shape[-1] == 4 and pattern.shape[-1] == 4
    corr = naive_local_correlation(pattern, content, 3).astype(np.float32)
    expected = x + np.asarray(block.restore_conv(corr))
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    # 3 convs of 3x3: (8*4*9 + 4) * 2 + (4*8*9 + 8)
    assert block.count_params() == 2 * (8 * 4 * 9 + 4) + (4 * 8 * 9 + 8)


def test_lcblock_config_roundtrip_and_channel_check():
    assert_layer_config_roundtrip(
        LCBlock(squeeze_ratio=4, window_size=7, method="slices"),
        np.random.default_rng(0).normal(size=(1, 9, 10, 8)).astype(np.float32),
    )
    with pytest.raises(ValueError, match="squeeze_ratio"):
        LCBlock(squeeze_ratio=3)(np.zeros((1, 4, 4, 8), np.float32))


def test_lcblock_dynamic_shapes_in_functional_model():
    inputs = keras.Input((None, None, 6))
    model = keras.Model(inputs, LCBlock(window_size=3)(inputs))
    for h, w in [(5, 7), (16, 3)]:
        assert model(np.zeros((2, h, w, 6), np.float32)).shape == (2, h, w, 6)
