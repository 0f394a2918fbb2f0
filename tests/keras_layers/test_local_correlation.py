"""local_correlation (LCNet eq. 3-4) against a naive NumPy loop, and the LCBlock layer."""

import keras
import numpy as np
import pytest

from keras_layers import LCBlock, local_correlation
from keras_layers.local_correlation import METHODS, window_kernel
from tests.utils import assert_layer_config_roundtrip, to_numpy


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


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k,h,w", [(3, 7, 9), (5, 6, 5), (5, 3, 4)])
def test_matches_naive_reference_including_borders(method, k, h, w):
    rng = np.random.default_rng(k * 100 + h)
    pattern = rng.normal(size=(2, h, w, 4)).astype(np.float32)
    content = rng.normal(size=(2, h, w, 3)).astype(np.float32)
    expected = naive_local_correlation(pattern, content, k)
    got = to_numpy(local_correlation(pattern, content, k, method))
    # Measured: <= 3.5e-6 (float32 rounding of the logits and the weighted sum).
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_out_of_image_neighbours_are_excluded_not_zero_padded(method):
    # With zero pattern features every logit is 0: an excluded neighbour leaves a plain
    # mean over the in-image window, a zero-padded one would pull the corner towards 0.
    content = np.ones((1, 4, 4, 1), np.float32)
    pattern = np.zeros((1, 4, 4, 2), np.float32)
    out = to_numpy(local_correlation(pattern, content, 3, method))
    np.testing.assert_allclose(out, 1.0, rtol=1e-6)
    # Corner of a 5x5 window: 9 of 25 positions exist; their mean, not a 25-mean.
    content = np.arange(36, dtype=np.float32).reshape(1, 6, 6, 1)
    out = to_numpy(local_correlation(np.zeros((1, 6, 6, 1), np.float32), content, 5, method))
    np.testing.assert_allclose(out[0, 0, 0, 0], content[0, :3, :3, 0].mean(), rtol=1e-6)


def test_formulations_agree_on_large_and_negative_logits():
    # Logits of several hundred and strongly negative ones: the exclusion gap must hold
    # whatever the scale (an outside position may never outweigh an inside one).
    rng = np.random.default_rng(0)
    pattern = 6.0 * rng.normal(size=(1, 12, 10, 8)).astype(np.float32)
    content = rng.normal(size=(1, 12, 10, 5)).astype(np.float32)
    expected = naive_local_correlation(pattern, content, 5)
    got = {m: to_numpy(local_correlation(pattern, content, 5, m)) for m in METHODS}
    for method in METHODS:
        assert np.isfinite(got[method]).all()
        np.testing.assert_allclose(got[method], expected, rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(got["depthwise"], got["windows"], rtol=1e-5, atol=1e-5)


def test_window_kernel_gathers_each_position():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 5, 6, 2)).astype(np.float32)
    k, r = 3, 1
    out = to_numpy(keras.ops.depthwise_conv(x, window_kernel(2, k), 1, "same"))
    padded = np.pad(x, [(0, 0), (r, r), (r, r), (0, 0)])
    for c in range(2):
        for n in range(k * k):
            dy, dx = divmod(n, k)
            np.testing.assert_array_equal(
                out[..., c * k * k + n], padded[:, dy : dy + 5, dx : dx + 6, c]
            )


@pytest.mark.parametrize("bad", [0, 2, -3, 4.0])
def test_rejects_bad_window(bad):
    x = np.zeros((1, 4, 4, 2), np.float32)
    with pytest.raises(ValueError, match="window_size"):
        local_correlation(x, x, bad)


def test_rejects_unknown_method():
    with pytest.raises(ValueError, match="method"):
        LCBlock(method="fft")
    x = np.zeros((1, 4, 4, 2), np.float32)
    with pytest.raises(ValueError, match="method"):
        local_correlation(x, x, 3, "fft")


@pytest.mark.parametrize("legacy,successor", [("patches", "depthwise"), ("slices", "windows")])
def test_legacy_method_configs_load_with_the_same_numbers(legacy, successor):
    # .keras files saved before the rewrite carry method="patches" or "slices".
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1, 7, 6, 4)).astype(np.float32)
    block = LCBlock(window_size=3)
    block(x)
    config = {**block.get_config(), "method": legacy}
    old = LCBlock.from_config(config)
    old(x)
    old.set_weights(block.get_weights())
    assert old.method == successor and old.get_config()["method"] == successor
    np.testing.assert_allclose(to_numpy(old(x)), to_numpy(block(x)), atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_lcblock_is_shortcut_plus_restored_correlation(method):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 9, 11, 8)).astype(np.float32)
    block = LCBlock(squeeze_ratio=2, window_size=3, method=method)
    y = to_numpy(block(x))
    content = to_numpy(block.content_conv(x))
    pattern = to_numpy(block.pattern_conv(x))
    assert content.shape[-1] == 4 and pattern.shape[-1] == 4
    corr = naive_local_correlation(pattern, content, 3).astype(np.float32)
    expected = x + to_numpy(block.restore_conv(corr))
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    # 3 convs of 3x3: (8*4*9 + 4) * 2 + (4*8*9 + 8)
    assert block.count_params() == 2 * (8 * 4 * 9 + 4) + (4 * 8 * 9 + 8)


def test_lcblock_config_roundtrip_and_channel_check():
    assert_layer_config_roundtrip(
        LCBlock(squeeze_ratio=4, window_size=7),
        np.random.default_rng(0).normal(size=(1, 9, 10, 8)).astype(np.float32),
    )
    with pytest.raises(ValueError, match="squeeze_ratio"):
        LCBlock(squeeze_ratio=3)(np.zeros((1, 4, 4, 8), np.float32))


def test_lcblock_dynamic_shapes_in_functional_model():
    inputs = keras.Input((None, None, 6))
    model = keras.Model(inputs, LCBlock(window_size=3)(inputs))
    for h, w in [(5, 7), (16, 3)]:
        assert model(np.zeros((2, h, w, 6), np.float32)).shape == (2, h, w, 6)


_OTHER_BACKEND = """
import sys, numpy as np
sys.path[:0] = [{repo!r}]
import keras
from keras_layers.local_correlation import local_correlation
from tests.keras_layers.test_local_correlation import naive_local_correlation
rng = np.random.default_rng(7)
p = rng.normal(size=(1, 6, 7, 3)).astype(np.float32)
c = rng.normal(size=(1, 6, 7, 2)).astype(np.float32)
ref = naive_local_correlation(p, c, 5)
err = max(
    float(np.abs(keras.ops.convert_to_numpy(local_correlation(p, c, 5, m)) - ref).max())
    for m in ("depthwise", "windows")
)
print(keras.config.backend(), err)
"""


@pytest.mark.slow  # a fresh interpreter per backend: ~30 s each on 2 cores
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_same_numbers_on_other_keras_backends(backend, tmp_path):
    pytest.importorskip(backend)
    import pathlib
    import subprocess
    import sys

    repo = str(pathlib.Path(__file__).resolve().parents[2])
    script = tmp_path / "run.py"
    script.write_text(_OTHER_BACKEND.format(repo=repo))
    env = {**__import__("os").environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    name, err = done.stdout.split()[-2:]
    assert name == backend and float(err) <= 1e-5
