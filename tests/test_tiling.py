"""Tiled inference: tile placement, the blending window, agreement with one pass."""

import keras
import numpy as np
import pytest

from keras_layers import CropToReference, GaussianPyramid, PadToMultiple, PixelShuffle
from tfdeblur.infer.runners import KerasRunner, keras_bytes_per_pixel
from tfdeblur.infer.tiling import (
    AUTO_MIN_TILE,
    DEFAULT_MULTIPLE,
    auto_tile_size,
    axis_windows,
    check_tiling,
    deblur_tiled,
    model_multiple,
    padded_length,
    parse_tile,
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


def strided_net(seed: int = 0) -> keras.Model:
    """A tiny LCNet-like network: pad to 8, a stride-2 conv, a conv at half resolution,
    pixel shuffle back, residual, crop.

    Receptive field: an output pixel ``x`` reads input pixels ``x - 3 .. x + 4`` (half-res
    pixel ``p = x // 2``; the 3x3 conv reads ``p - 1 .. p + 1``; TensorFlow's 'same' stride-2
    conv pads 0 at the top and reads ``2q .. 2q + 2``), within ``overlap / 4 = 4`` for
    ``overlap = 16``; but only on the grid of even offsets.
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3))
    padded = PadToMultiple(8)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="tanh")(padded)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="tanh")(x)
    x = PixelShuffle(2)(keras.layers.Conv2D(12, 1)(x))
    x = keras.layers.Add()([padded, x])
    return keras.Model(inputs, CropToReference()([x, inputs]))


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


@pytest.mark.parametrize("multiple", [2, 8, 16])
@pytest.mark.parametrize("length,tile,overlap", [c for c in CASES if c[1] - c[2] >= 16])
def test_tile_starts_on_the_grid_keep_the_overlap(length, tile, overlap, multiple):
    tile = -(-tile // multiple) * multiple  # deblur_tiled rounds the tile up to the grid
    canvas = padded_length(length, tile, multiple)
    assert canvas >= length and (canvas == tile or (canvas - tile) % multiple == 0)
    assert canvas - max(length, tile) < multiple  # padding below one grid step
    starts = tile_starts(canvas, tile, overlap, multiple)
    size = min(tile, canvas)
    assert starts[0] == 0 and starts[-1] == canvas - size
    assert all(s % multiple == 0 for s in starts)
    gaps = np.diff(starts)
    assert np.all(gaps > 0) and np.all(size - gaps >= overlap)


def test_tiles_that_cannot_advance_on_the_grid_are_an_error():
    with pytest.raises(ValueError, match="multiples of 16"):
        tile_starts(100, 16, 4, 16)


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
    # A plain function cannot be inspected: its tiles start on the default grid.
    assert model_multiple(identity) == DEFAULT_MULTIPLE


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


def test_strided_network_tiled_equals_untiled_only_on_its_grid():
    """Stride 2 + PadToMultiple(8): tiles start on multiples of 8, so they sample the image
    on the whole image's grid and agree with one pass; the control places the same tiles
    without alignment (odd starts) and differs far from any tile border."""
    model = strided_net()
    runner = KerasRunner(model)
    assert model_multiple(runner) == 8
    image = np.random.default_rng(4).uniform(size=(75, 101, 3)).astype(np.float32)
    whole = runner(image)
    tiled = deblur_tiled(runner, image, tile=32, overlap=16)
    # Borders included: the image is zero-padded to the grid as the model pads itself.
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-5)

    assert any(s % 2 for s in tile_starts(101, 32, 16))  # unaligned placement: odd starts
    unaligned = deblur_tiled(runner, image, tile=32, overlap=16, multiple=1)
    interior = np.abs(unaligned - whole)[8:-8, 8:-8]
    assert interior.max() > 1e-2  # the receptive field fits; the grid does not
    # It is not a border effect: columns of a tile starting at an odd offset differ
    # through its middle.
    assert interior.mean() > 1e-3


def test_model_multiple_reads_the_padding_layers():
    import tfdeblur

    assert model_multiple(KerasRunner(tfdeblur.build_model("lcnet", preset="tiny"))) == 8
    assert model_multiple(KerasRunner(conv_stack(2))) == 1  # takes any size as it is
    inputs = keras.Input((None, None, 3))
    finest = GaussianPyramid(levels=2, pad_to_multiple=4)(PadToMultiple(6)(inputs))[0]
    assert model_multiple(KerasRunner(keras.Model(inputs, finest))) == 12  # lcm(4, 6)


class FixedSizeRunner:
    """Stands for a model exported with ``--input-size``: it runs one shape only, like a
    :class:`tfdeblur.infer.runners.Runner` whose ``input_size`` is set."""

    def __init__(self, runner, size):
        self.runner, self.input_size, self.model = runner, size, None
        self.shapes = set()

    def __call__(self, image):
        self.shapes.add(image.shape[:2])
        if image.shape[:2] != self.input_size:
            raise ValueError(f"fixed input size {self.input_size}, got {image.shape[:2]}")
        return self.runner(image)


def test_fixed_size_model_runs_any_image_in_tiles_of_its_size():
    from tfdeblur.infer.images import plan_tile, run_image

    runner = KerasRunner(strided_net())
    fixed = FixedSizeRunner(runner, (32, 48))
    image = np.random.default_rng(5).uniform(size=(75, 101, 3)).astype(np.float32)
    assert plan_tile(fixed, image.shape, tile=None, overlap=16) == (32, 48)
    assert plan_tile(fixed, (32, 48, 3), tile=512, overlap=16) is None  # its own size
    out = run_image(fixed, image, overlap=16)
    assert fixed.shapes == {(32, 48)}
    # Tiles on the default grid of 16 (a multiple of the network's 8): the image is
    # zero-padded further than the network pads itself, which only touches the last
    # receptive field (4 px) before the bottom/right border.
    np.testing.assert_allclose(out[:-4, :-4], runner(image)[:-4, :-4], rtol=0, atol=1e-5)

    # Smaller than the fixed size: zero-padded up to it, output cropped back.
    small = image[:20, :30]
    out = run_image(fixed, small, overlap=16)
    assert out.shape == (20, 30, 3)
    padded = np.zeros((32, 48, 3), np.float32)
    padded[:20, :30] = small
    np.testing.assert_allclose(out, runner(padded)[:20, :30], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="half the model's fixed input size 32x48"):
        run_image(fixed, image, overlap=17)


@pytest.mark.parametrize(
    "value,expected", [(None, None), (512, 512), ("512", 512), (" Auto ", "auto"), ("auto", "auto")]
)
def test_parse_tile(value, expected):
    assert parse_tile(value) == expected


@pytest.mark.parametrize("value", [0, -3, "0", "big", "12.5", True, 12.0])
def test_parse_tile_refuses(value):
    with pytest.raises(ValueError, match="tile must be"):
        parse_tile(value)


def test_check_tiling():
    assert check_tiling("64", 32) == (64, 32)
    assert check_tiling("auto", 100) == ("auto", 100)  # checked against the tile later
    with pytest.raises(ValueError, match="at most half"):
        check_tiling(64, 33)
    with pytest.raises(ValueError, match="overlap"):
        check_tiling(None, -1)


@pytest.mark.parametrize("tile,overlap", [(0, 0), (32, 17), (32, -1), ("x", 8)])
def test_bad_tile_arguments(tile, overlap):
    with pytest.raises(ValueError, match="tile|overlap"):
        deblur_tiled(lambda x: x, np.zeros((40, 40, 3), np.float32), tile, overlap)


def test_wrong_output_size_is_an_error():
    with pytest.raises(ValueError, match="output of the input's size"):
        deblur_tiled(lambda x: x[:-1], np.zeros((40, 40, 3), np.float32), 16, 4, multiple=1)


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
