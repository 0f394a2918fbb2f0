"""PixelShuffle, ResBlock, PadToMultiple / CropToReference against NumPy."""

import keras
import numpy as np
import pytest

from keras_layers import CropToReference, PadToMultiple, PixelShuffle, ResBlock
from tests.utils import assert_layer_config_roundtrip, to_numpy


def test_pixel_shuffle_matches_depth_to_space_definition():
    r, c = 2, 3
    x = np.arange(1 * 2 * 3 * c * r * r, dtype=np.float32).reshape(1, 2, 3, c * r * r)
    y = to_numpy(PixelShuffle(r)(x))
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
    y = to_numpy(block(x))
    h = to_numpy(block.conv1(x))
    h = np.where(h > 0, h, (0.2 if activation == "leaky_relu" else 0.0) * h)
    np.testing.assert_allclose(y, x + to_numpy(block.conv2(h)), rtol=1e-5, atol=1e-5)
    assert block.count_params() == 2 * (4 * 4 * 9 + 4)
    assert_layer_config_roundtrip(block, x)


@pytest.mark.parametrize("h,w", [(5, 8), (8, 8), (1, 17)])
def test_pad_and_crop_roundtrip(h, w):
    x = np.random.default_rng(0).normal(size=(2, h, w, 3)).astype(np.float32)
    padded = to_numpy(PadToMultiple(8)(x))
    assert padded.shape[1] % 8 == 0 and padded.shape[2] % 8 == 0
    assert padded.shape[1] - h < 8 and padded.shape[2] - w < 8
    np.testing.assert_array_equal(padded[:, :h, :w], x)
    assert not padded[:, h:].any() and not padded[:, :, w:].any()
    np.testing.assert_array_equal(to_numpy(CropToReference()([padded, x])), x)


def test_pad_in_functional_model_with_dynamic_shape():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, PadToMultiple(4)(inputs))
    assert model(np.zeros((1, 5, 9, 3), np.float32)).shape == (1, 8, 12, 3)
    with pytest.raises(ValueError, match="multiple"):
        PadToMultiple(0)


@pytest.mark.tf_only
def test_pad_with_unknown_size_in_a_graph_equals_the_static_pads():
    # Any-size exports trace with H, W unknown: the pads are then computed in the graph
    # (TensorFlow's path); eager calls see concrete shapes and pad by constants.
    import tensorflow as tf

    layer, crop = PadToMultiple(8), CropToReference()
    graph = tf.function(
        lambda t: (layer(t), crop([layer(t), t])),
        input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)],
    )
    x = np.random.default_rng(1).normal(size=(2, 5, 11, 3)).astype(np.float32)
    padded, cropped = graph(tf.constant(x))
    assert padded.shape[-1] == 3  # the static channel count survives the dynamic pad
    np.testing.assert_array_equal(padded.numpy(), to_numpy(layer(x)))
    np.testing.assert_array_equal(cropped.numpy(), x)
