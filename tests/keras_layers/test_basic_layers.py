"""PixelShuffle, ResBlock, PadToMultiple / CropToReference against NumPy."""

import keras
import numpy as np
import pytest

from keras_layers import CropToReference, PadToMultiple, PixelShuffle, ResBlock
from tests.utils import assert_layer_config_roundtrip


def test_pixel_shuffle_matches_depth_to_space_definition():
    r, c = 2, 3
    x = np.arange(1 * 2 * 3 * c * r * r, dtype=np.float32).reshape(1, 2, 3, c * r * r)
    y = np.asarray(PixelShuffle(r)(x))
    assert y.shape == (1, 4, 6, c)
    for h in range(2):
        for w in range(3):
            for i in range(r):
                for j in range(r):
                    for ch in range(c):
                        assert y[0, h * r + i, w * r + j, ch] == x[0, h, w, (i * r + j) * c + ch]


def test_pixel_shuffle_validates():
    with pytest.raises(ValueError, match="divisible"):
        PixelShuffle(2)(np.zeros((1, 2, 2, 6), np.float32))
    with pytest.raises(ValueError, match="upscale_factor"):
        PixelShuffle(0)
    assert_layer_config_roundtrip(
        PixelShuffle(3), np.random.default_rng(0).normal(size=(1, 2, 3, 18)).astype(np.float32)
    )


@pytest.mark.parametrize("activation", ["leaky_relu", "relu"])
def test_res_block_equation(activation):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 6, 5, 4)).astype(np.float32)
    block = ResBlock(3, activation, 0.2)
    y = np.asarray(block(x))
    h = np.asarray(block.conv1(x))
    h = np.where(h > 0, h, (0.2 if activation == "leaky_relu" else 0.0) * h)
    np.testing.assert_allclose(y, x + np.asarray(block.conv2(h)), rtol=1e-5, atol=1e-5)
    assert block.count_params() == 2 * (4 * 4 * 9 + 4)
    assert_layer_config_roundtrip(block, x)


@pytest.mark.parametrize("h,w", [(5, 8), (8, 8), (1, 17)])
def test_pad_and_crop_roundtrip(h, w):
    x = np.random.default_rng(0).normal(size=(2, h, w, 3)).astype(np.float32)
    padded = np.asarray(PadToMultiple(8)(x))
    assert padded.shape[1] % 8 == 0 and padded.shape[2] % 8 == 0
    assert padded.shape[1] - h < 8 and padded.shape[2] - w < 8
    np.testing.assert_array_equal(padded[:, :h, :w], x)
    assert not padded[:, h:].any() and not padded[:, :, w:].any()
    np.testing.assert_array_equal(np.asarray(CropToReference()([padded, x])), x)


def test_pad_in_functional_model_with_dynamic_shape():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, PadToMultiple(4)(inputs))
    assert model(np.zeros((1, 5, 9, 3), np.float32)).shape == (1, 8, 12, 3)
    with pytest.raises(ValueError, match="multiple"):
        PadToMultiple(0)
