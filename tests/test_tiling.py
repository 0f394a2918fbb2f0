"""Tiled inference: tile placement, the blending window, agreement with one pass."""

import keras
import numpy as np
import pytest

from tfdeblur.inference import KerasRunner, keras_bytes_per_pixel
from tfdeblur.tiling import (
    AUTO_MIN_TILE,
    auto_tile_size,
    axis_windows,
    deblur_tiled,
    tile_starts,
)


def conv_stack(num_convs: int, seed: int = 0) -> keras.Model:
    """``num_convs`` 3x3 'same' convolutions: receptive field radius ``num_convs`` pixels."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3))
    x = inputs
    for i in range(num_convs):
        last = i == num_convs - 1
        x = keras.layers.Conv2D(
            3 if last else 6, 3, padding="same", activation=None if last else "tanh"
        )(x)
    return keras.Model(inputs, x)


CASES = [
    (75, 32, 16),
    (101, 32, 16),
    (33, 32, 8),
    (32, 32, 16),
    (20, 32, 16),
    (500, 64, 7),
    (97, 10, 5),
    (64, 16, 0),
]


@pytest.mark.parametrize("length,tile,overlap", CASES)
def test_tiles_cover_the_axis_with_at_least_the_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    assert starts[0] == 0 and starts[-1] == length - size
    gaps = np.diff(starts)
    assert np.all(gaps > 0)
    assert np.all(size - gaps >= overlap)  # neighbours overlap by at least `overlap`
    # The fewest tiles that can: one tile fewer would need a stride above tile - overlap.
    n = len(starts)
    if n == 1:
        assert length <= tile
    elif n > 2:
        assert (length - size) / (n - 2) > size - overlap


def test_windows_are_a_partition_of_unity_and_ignore_tile_borders():
    rng = np.random.default_rng(0)
    for _ in range(1000):
        tile = int(rng.integers(4, 80))
        overlap = int(rng.integers(0, tile // 2 + 1))
        length = int(rng.integers(1, 300))
        windows = axis_windows(length, tile, overlap)
        total = np.zeros(length)
        margin = overlap // 4
        for i, (start, w) in enumerate(windows):
            assert np.all((w >= 0) & (w <= 1))
            total[start : start + w.size] += w
            if margin and i > 0:
                assert not w[:margin].any(), (length, tile, overlap)
            if margin and i + 1 < len(windows):
                assert not w[-margin:].any(), (length, tile, overlap)
        np.testing.assert_allclose(total, 1.0, atol=1e-12, err_msg=f"{(length, tile, overlap)}")


def test_identity_model_gives_back_the_input():
    image = np.random.default_rng(1).uniform(size=(75, 101, 3)).astype(np.float32)
    shapes = set()

    def identity(x):
        shapes.add(x.shape)
        return x

    out = deblur_tiled(identity, image, tile=32, overlap=16)
    np.testing.assert_allclose(out, image, rtol=0, atol=3e-7)  # float32 rounding only
    assert shapes == {(32, 32, 3)}  # one tile shape: one TFLite allocation, no retracing


@pytest.mark.parametrize("shape", [(75, 101), (40, 33)])
def test_tiled_equals_untiled_when_receptive_field_fits(shape):
    # 4 stacked 3x3 convs see 4 pixels around the output pixel = overlap / 4.
    model = conv_stack(4)
    runner = KerasRunner(model)
    image = np.random.default_rng(2).uniform(size=shape + (3,)).astype(np.float32)
    whole = runner(image)
    calls = []
    tiled = deblur_tiled(
        runner, image, tile=32, overlap=16, progress=lambda d, t: calls.append((d, t))
    )
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-5)
    total = len(tile_starts(shape[0], 32, 16)) * len(tile_starts(shape[1], 32, 16))
    assert calls[-1] == (total, total) and len(calls) == total


def test_tiled_differs_when_receptive_field_exceeds_the_margin():
    # Control for the test above: 10 convs see 10 px, beyond the 4 px the window drops.
    model = conv_stack(10)
    runner = KerasRunner(model)
    image = np.random.default_rng(3).uniform(size=(75, 101, 3)).astype(np.float32)
    diff = np.abs(deblur_tiled(runner, image, tile=32, overlap=16) - runner(image)).max()
    assert diff > 1e-4


@pytest.mark.parametrize("tile,overlap", [(0, 0), (32, 17), (32, -1), ("32", 8)])
def test_bad_tile_arguments(tile, overlap):
    with pytest.raises(ValueError, match="tile|overlap"):
        deblur_tiled(lambda x: x, np.zeros((40, 40, 3), np.float32), tile, overlap)


def test_wrong_output_size_is_an_error():
    with pytest.raises(ValueError, match="output of the input's size"):
        deblur_tiled(lambda x: x[:-1], np.zeros((40, 40, 3), np.float32), 16, 4)


def test_bytes_per_pixel_counts_activations():
    # conv(6 ch, same size) + conv(3 ch): 9 floats per pixel, x 4 bytes x 2 = 72.
    model = conv_stack(2)
    assert keras_bytes_per_pixel(model) == 72
    # A strided layer counts at its resolution: 8 ch at 1/4 of the pixels = 2 floats/pixel.
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inputs)
    model = keras.Model(inputs, keras.layers.UpSampling2D(2)(x))  # + 8 floats at full size
    assert keras_bytes_per_pixel(model) == 2 * 4 * (2 + 8)


def test_auto_tile_from_memory():
    class Runner:
        bytes_per_pixel = 4096

    # budget 0.5 x 1 GiB / 4096 B = 131072 pixels -> side 362 -> 352 (multiple of 32).
    assert auto_tile_size(Runner(), (2000, 3000, 3), memory_bytes=2**30) == 352
    assert auto_tile_size(Runner(), (300, 400, 3), memory_bytes=2**30) is None  # fits
    assert auto_tile_size(Runner(), (5000, 5000, 3), memory_bytes=2**20) == AUTO_MIN_TILE
