"""tfdeblur.data.pipeline: aligned crops, shared augmentation, noise on blur only, exact eval."""

import itertools
import pathlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfdeblur.data import ImagePair, eval_dataset, load_pair, train_dataset

H, W, P = 40, 48, 16


def _coded_image(k: int) -> np.ndarray:
    """Every pixel unique and readable: R = 6y + 3, G = 5x + 2, B = 30 + 60k (pair id)."""
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([6 * y + 3, 5 * x + 2, np.full_like(y, 30 + 60 * k)], -1).astype(np.uint8)


def _save(path: pathlib.Path, pixels) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def coded_pairs(tmp_path):
    """Three pairs whose sharp image is 255 - blurry, pixel by pixel."""
    pairs = []
    for k in range(3):
        blur = _coded_image(k)
        pairs.append(
            ImagePair(
                _save(tmp_path / "blur" / f"{k}.png", blur),
                _save(tmp_path / "sharp" / f"{k}.png", 255 - blur),
                f"{k}.png",
            )
        )
    return pairs


# The 8 symmetries of the square (flips and 90-degree rotations), as functions on (H, W, C).
_DIHEDRAL = [
    (lambda a, k=k, f=f: np.rot90(a[:, ::-1] if f else a, k)) for f in (0, 1) for k in range(4)
]
_PERMS = list(itertools.permutations(range(3)))


def _locate(patch_u8: np.ndarray):
    """(pair k, top, left, symmetry index, permutation index) with which ``patch_u8`` is a
    transformed crop of a coded image; asserts that exactly one explanation exists."""
    found = []
    for d, sym in enumerate(_DIHEDRAL):
        for p, perm in enumerate(_PERMS):
            q = sym(patch_u8)[..., perm]
            r, g, b = int(q[0, 0, 0]), int(q[0, 0, 1]), int(q[0, 0, 2])
            if (r - 3) % 6 or (g - 2) % 5 or (b - 30) % 60:
                continue
            k, top, left = (b - 30) // 60, (r - 3) // 6, (g - 2) // 5
            if k > 2 or top + P > H or left + P > W:
                continue
            if np.array_equal(q, _coded_image(k)[top : top + P, left : left + P]):
                found.append((k, top, left, d, p))
    assert len(found) == 1, found
    return found[0]


def _patches(ds, batches):
    blurs, sharps = [], []
    for blur, sharp in ds.take(batches):
        blurs.append(blur.numpy())
        sharps.append(sharp.numpy())
    return np.concatenate(blurs), np.concatenate(sharps)


def _to_u8(x):
    u8 = np.rint(x * 255.0)
    np.testing.assert_allclose(u8, x * 255.0, atol=1e-3)  # exact 8-bit levels, no resampling
    return u8.astype(np.uint8)


def test_train_patches_share_window_and_transform(coded_pairs):
    ds = train_dataset(coded_pairs, batch_size=8, patch_size=P, seed=0)
    assert ds.element_spec[0].shape == (8, P, P, 3) and ds.element_spec[0].dtype == tf.float32
    blurs, sharps = _patches(ds, 8)
    seen = set()
    for blur, sharp in zip(blurs, sharps, strict=True):
        blur_u8, sharp_u8 = _to_u8(blur), _to_u8(sharp)
        # Same window, same flips/rotation/channel order: sharp stays 255 - blur everywhere.
        np.testing.assert_array_equal(sharp_u8, 255 - blur_u8)
        seen.add(_locate(blur_u8))
    pairs, tops, lefts, syms, perms = (set(v) for v in zip(*seen, strict=True))
    assert pairs == {0, 1, 2}
    assert syms == set(range(8))  # all flips/rotations occur
    assert perms == set(range(6))  # all channel permutations occur
    assert len(tops) > 5 and len(lefts) > 5  # crops move around
    assert max(tops) <= H - P and max(lefts) <= W - P


def test_train_without_augmentation_gives_plain_crops_in_order(coded_pairs):
    ds = train_dataset(
        coded_pairs,
        batch_size=2,
        patch_size=P,
        flip=False,
        rotate=False,
        channel_shuffle=False,
        seed=1,
        repeat=False,
        shuffle=False,
    )
    batches = list(ds)
    assert len(batches) == 1  # 3 pairs, batch 2, drop_remainder
    blur, sharp = (t.numpy() for t in batches[0])
    assert blur.shape == sharp.shape == (2, P, P, 3)
    for i in range(2):
        k, top, left, sym, perm = _locate(_to_u8(blur[i]))
        assert (k, sym, perm) == (i, 0, 0)
        np.testing.assert_array_equal(
            _to_u8(sharp[i]), 255 - _coded_image(k)[top : top + P, left : left + P]
        )


def test_train_stream_is_deterministic_by_seed(coded_pairs):
    def first(seed):
        return _patches(train_dataset(coded_pairs, 4, P, seed=seed, noise=True), 2)[0]

    a, b, c = first(5), first(5), first(6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_noise_only_on_blurry_with_random_sigma(coded_pairs):
    ds = train_dataset(
        coded_pairs, 16, P, flip=False, rotate=False, channel_shuffle=False, noise=True, seed=2
    )
    blurs, sharps = _patches(ds, 4)
    sigmas = []
    for blur, sharp in zip(blurs, sharps, strict=True):
        sharp_u8 = _to_u8(sharp)  # the sharp patch is untouched: still exact 8-bit levels
        clean = (255 - sharp_u8).astype(np.float32) / 255.0
        _locate(255 - sharp_u8)
        residual = blur - clean
        assert blur.min() >= 0.0 and blur.max() <= 1.0
        assert abs(residual.mean()) < 0.003
        sigmas.append(residual.std())
    sigmas = np.array(sigmas)
    # sigma = |s|, s ~ N(0, (2/255)^2): E|s| = (2/255) sqrt(2/pi) = 0.00626.
    assert 0.0045 < sigmas.mean() < 0.0080, sigmas.mean()
    assert sigmas.max() < 4 * 2 / 255
    assert sigmas.std() > 0.002  # sigma varies from patch to patch


def test_saturation_factor_shared_and_in_range(tmp_path):
    color = np.zeros((H, W, 3), np.uint8) + np.array([200, 150, 100], np.uint8)  # HSV s = 0.5
    pair = ImagePair(
        _save(tmp_path / "blur" / "c.png", color), _save(tmp_path / "sharp" / "c.png", color), "c"
    )
    ds = train_dataset(
        [pair], 16, P, flip=False, rotate=False, channel_shuffle=False, saturation=True, seed=3
    )
    blurs, sharps = _patches(ds, 4)
    np.testing.assert_array_equal(blurs, sharps)  # one factor for both images
    value = blurs.max(axis=-1)
    saturation = (value - blurs.min(axis=-1)) / value
    np.testing.assert_allclose(value, 200 / 255, atol=1e-6)  # HSV value kept
    factors = saturation.reshape(len(blurs), -1).mean(axis=1) / 0.5
    assert factors.min() >= 0.5 - 1e-4 and factors.max() <= 1.5 + 1e-4
    assert factors.min() < 0.65 and factors.max() > 1.35


@pytest.mark.parametrize("factor", [0.6, 1.45])
def test_saturation_follows_the_official_hsv_round_trip(factor):
    # DeepDeblur-PyTorch: rgb2hsv, S * factor unclamped, hsv2rgb, clip. Above 1, saturated
    # colours leave the gamut and the clip cuts them (tf.image.adjust_saturation would
    # clamp S to 1 instead and differ there by up to 0.2).
    from skimage.color import hsv2rgb, rgb2hsv

    from tfdeblur.data.pipeline import _scale_saturation

    rgb = np.random.default_rng(1).uniform(size=(9, 11, 3)).astype(np.float32)
    hsv = rgb2hsv(rgb)
    hsv[..., 1] *= factor
    want = np.clip(hsv2rgb(hsv), 0, 1)
    got = _scale_saturation(tf.constant(rgb), tf.constant(factor, tf.float32)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_eval_dataset_returns_exact_full_frames_in_order(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    deep = rng.integers(0, 65536, (24, 30, 3)).astype(np.uint16)
    gray = rng.integers(0, 256, (20, 28), dtype=np.uint8)
    pairs = [
        ImagePair(_save(tmp_path / "b/a.png", rgb), _save(tmp_path / "s/a.png", 255 - rgb), "a"),
        ImagePair(tmp_path / "b/d.png", tmp_path / "s/d.png", "d"),
        ImagePair(_save(tmp_path / "b/g.png", gray), _save(tmp_path / "s/g.png", gray), "g"),
        ImagePair(_save(tmp_path / "b/j.jpg", rgb), _save(tmp_path / "s/j.jpg", 255 - rgb), "j"),
    ]
    for path in (pairs[1].blur, pairs[1].sharp):
        path.write_bytes(tf.io.encode_png(deep).numpy())
    outputs = list(eval_dataset(pairs))
    assert len(outputs) == 4
    for (blur, sharp), pair in zip(outputs, pairs, strict=True):
        expected_blur, expected_sharp = load_pair(pair)
        assert blur.shape == (1, *expected_blur.shape)
        np.testing.assert_array_equal(blur.numpy()[0], expected_blur)
        np.testing.assert_array_equal(sharp.numpy()[0], expected_sharp)
    np.testing.assert_array_equal(outputs[0][0].numpy()[0], rgb / np.float32(255))
    np.testing.assert_array_equal(outputs[1][0].numpy()[0], deep / np.float32(65535))
    np.testing.assert_array_equal(outputs[2][1].numpy()[0, ..., 1], gray / np.float32(255))


def test_train_dataset_bad_arguments(coded_pairs):
    with pytest.raises(ValueError, match="pairs is empty"):
        train_dataset([], 2, P)
    with pytest.raises(ValueError, match="batch_size"):
        train_dataset(coded_pairs, 0, P)
    with pytest.raises(ValueError, match="patch_size"):
        train_dataset(coded_pairs, 2, 1.5)
    with pytest.raises(ValueError, match="batch_size=4 exceeds the 3 pairs"):
        train_dataset(coded_pairs, 4, P, repeat=False)
    # Last resort when validate_pairs(min_size=...) was skipped: the graph refuses.
    with pytest.raises(tf.errors.InvalidArgumentError, match="smaller than patch_size=64"):
        next(iter(train_dataset(coded_pairs, 1, 64)))
