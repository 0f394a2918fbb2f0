"""``tf.data`` pipelines: augmented training patches and full evaluation frames.

Training (:func:`train_dataset`) follows DeepDeblur's recipe (Nah, Kim, Lee, CVPR 2017,
sec. 3.2, ``../shared/papers/deepdeblur_multiscale_cnn.txt``): random crops, random
horizontal/vertical flips and 90-degree rotations, random RGB channel permutation, saturation
in HSV multiplied by ``U(0.5, 1.5)``, and Gaussian noise on the blurry image whose standard
deviation is itself drawn from ``N(0, (2/255)^2)``, then clipping. Readings:

* Every geometric and colour transform (crop window, flips, rotation, channel permutation,
  saturation factor) is drawn once per pair and applied identically to the blurry and the
  sharp image; only the noise is added to the blurry image alone. The paper lists saturation
  among "image degradations" but adds noise explicitly "to blurry images"; the authors'
  PyTorch code (``DeepDeblur-PyTorch``, ``data/common.py``) applies the saturation change to
  input and target alike, and changing only the input would teach the network to alter
  colours. So saturation is shared. As in that code (scikit-image ``rgb2hsv``, S times
  the factor, ``hsv2rgb``, clip), S is not clamped to 1 before converting back: a factor
  above 1 pushes saturated colours out of gamut and the RGB clip cuts them
  (``tf.image.adjust_saturation`` clamps S instead, which differs by up to 0.2 there).
* The noise's standard deviation is ``|s|`` with ``s ~ N(0, (2/255)^2)``, one draw per patch,
  and the noise is i.i.d. per pixel and channel; the result is clipped to ``[0, 1]`` (the
  paper's "value outside is clipped").
* Flips: horizontal and vertical, each with probability 1/2; rotations: by ``k * 90``
  degrees with ``k`` uniform in ``{0, 1, 2, 3}``. Together they cover the 8 symmetries of
  the square uniformly.
* The paper's final "subtract 0.5" is left to the models: images stay in ``[0, 1]``.

Decoding happens inside the graph: PNG with ``tf.io.decode_png(channels=3, dtype=uint16)``
and division by 65535 (exact for 8-bit files too: libpng widens ``v`` to ``257 v`` and
``257 v / 65535 == v / 255``), JPEG with ``dct_method="INTEGER_ACCURATE"``, which gives the
same pixels as Pillow. So the pipeline's numbers equal :func:`tfdeblur.data.image_io.read_image`'s.
Grayscale is replicated to RGB and (already verified fully opaque) alpha dropped.

Run :func:`tfdeblur.data.validate_pairs` (with ``min_size=patch_size`` for training) before
building a pipeline: it is what turns bad files into errors naming them; the graph only
asserts as a last resort.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tfdeblur.data.image_io import decode_image
from tfdeblur.data.pairs import ImagePair

_AUTOTUNE = tf.data.AUTOTUNE
_NOISE_SIGMA_STD = 2.0 / 255.0
_SATURATION_RANGE = (0.5, 1.5)
# np.rot90(x, k) == flips(transpose(x)) with (transpose, flip rows, flip columns) =
_ROT90_AS_FLIPS = [
    [False, False, False],
    [True, True, False],
    [False, True, True],
    [True, False, True],
]


def random_crop_origin(seeds, height, width, patch_size: int, message: str):
    """Top-left corner ``(top, left)`` of a random ``patch_size`` square, from the stateless
    ``seeds[0]`` and ``seeds[1]``; asserts first that the image is large enough (``message``).
    Shared by the pair and the clip pipelines (:mod:`tfdeblur.data.clips`)."""
    check = tf.debugging.assert_greater_equal(
        tf.minimum(height, width), patch_size, message=message
    )
    with tf.control_dependencies([check]):
        top = tf.random.stateless_uniform(
            [], seeds[0], minval=0, maxval=height - patch_size + 1, dtype=tf.int32
        )
        left = tf.random.stateless_uniform(
            [], seeds[1], minval=0, maxval=width - patch_size + 1, dtype=tf.int32
        )
    return top, left


def _read_pair(blur_path: tf.Tensor, sharp_path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    blur = decode_image(tf.io.read_file(blur_path))
    sharp = decode_image(tf.io.read_file(sharp_path))
    check = tf.debugging.assert_equal(
        tf.shape(blur),
        tf.shape(sharp),
        message="blurry and sharp image differ in size (run validate_pairs first)",
    )
    with tf.control_dependencies([check]):
        return tf.identity(blur), tf.identity(sharp)


def _paths(pairs: Sequence[ImagePair]) -> tuple[list[str], list[str]]:
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs is empty: no image pairs to build a dataset from.")
    for pair in pairs:
        if not isinstance(pair, ImagePair):
            raise ValueError(f"pairs must hold tfdeblur.data.ImagePair, got {type(pair).__name__}.")
    return [str(p.blur) for p in pairs], [str(p.sharp) for p in pairs]


def _scale_saturation(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """HSV saturation times ``factor``, unclamped, back to RGB clipped to ``[0, 1]``."""
    hsv = tf.image.rgb_to_hsv(image) * tf.stack([1.0, factor, 1.0])
    return tf.clip_by_value(tf.image.hsv_to_rgb(hsv), 0.0, 1.0)


def _augment(
    blur: tf.Tensor,
    sharp: tf.Tensor,
    seed: tf.Tensor,
    *,
    patch_size: int,
    flip: bool,
    rotate: bool,
    channel_shuffle: bool,
    saturation: bool,
    noise: bool,
) -> tuple[tf.Tensor, tf.Tensor]:
    """One random training patch of a pair; ``seed`` is an int64 ``[2]`` stateless seed."""
    seeds = tf.random.experimental.stateless_split(seed, num=9)
    height, width = tf.shape(blur)[0], tf.shape(blur)[1]
    top, left = random_crop_origin(
        seeds,
        height,
        width,
        patch_size,
        f"image smaller than patch_size={patch_size} (run validate_pairs(min_size=...))",
    )
    # Both images as one 6-channel tensor, so every geometric op is shared by construction.
    both = tf.concat([blur, sharp], axis=-1)[top : top + patch_size, left : left + patch_size, :]

    # Flips and rotations as (transpose?, vertical flip?, horizontal flip?) applied in that
    # order: every symmetry of the square is one such triple. tf.where instead of tf.cond
    # keeps the traced graph small (both branches are cheap at patch size).
    if rotate:
        k = tf.random.stateless_uniform([], seeds[4], minval=0, maxval=4, dtype=tf.int32)
        # rot90 by k (counter-clockwise, as tf.image.rot90 / np.rot90) as (t, v, h).
        t, v, h = tf.unstack(tf.gather(tf.constant(_ROT90_AS_FLIPS), k))
    else:
        t = v = h = tf.constant(False)
    if flip:
        v = tf.math.logical_xor(v, tf.random.stateless_uniform([], seeds[2]) < 0.5)
        h = tf.math.logical_xor(h, tf.random.stateless_uniform([], seeds[3]) < 0.5)
    if rotate:
        both = tf.where(t, tf.transpose(both, [1, 0, 2]), both)
    if rotate or flip:
        both = tf.where(v, tf.reverse(both, axis=[0]), both)
        both = tf.where(h, tf.reverse(both, axis=[1]), both)
    if channel_shuffle:
        perm = tf.argsort(tf.random.stateless_uniform([3], seeds[5]))
        both = tf.gather(both, tf.concat([perm, perm + 3], axis=0), axis=-1)
    blur, sharp = both[..., :3], both[..., 3:]
    if saturation:
        factor = tf.random.stateless_uniform(
            [], seeds[6], minval=_SATURATION_RANGE[0], maxval=_SATURATION_RANGE[1]
        )
        blur, sharp = _scale_saturation(blur, factor), _scale_saturation(sharp, factor)
    if noise:
        sigma = tf.abs(tf.random.stateless_normal([], seeds[7], stddev=_NOISE_SIGMA_STD))
        blur = blur + sigma * tf.random.stateless_normal(tf.shape(blur), seeds[8])
        blur = tf.clip_by_value(blur, 0.0, 1.0)
    blur = tf.ensure_shape(blur, [patch_size, patch_size, 3])
    sharp = tf.ensure_shape(sharp, [patch_size, patch_size, 3])
    return blur, sharp


def train_dataset(
    pairs: Sequence[ImagePair],
    batch_size: int,
    patch_size: int,
    *,
    flip: bool = True,
    rotate: bool = True,
    channel_shuffle: bool = True,
    saturation: bool = False,
    noise: bool = False,
    seed: int | None = None,
    repeat: bool = True,
    shuffle: bool = True,
    skip: int = 0,
) -> tf.data.Dataset:
    """Training pipeline: shuffled pairs -> parallel decode -> random patch + augmentation.

    Each element is one random ``patch_size`` square crop of one pair, taken from the same
    window of both images and augmented as described in the module docstring (DeepDeblur
    sec. 3.2). ``seed`` makes the whole stream reproducible: shuffling uses it, and every
    element's random draws come from stateless ops seeded by ``tf.data.Dataset.random(seed)``,
    so the parallel map gives the same patches in the same order on every run.

    ``skip`` continues that stream where an interrupted run left it: the first ``skip``
    elements (patches, not batches) of the (pair, random seed) stream are dropped before
    the decode map, where an element is two path strings and one int64, so skipping
    costs microseconds per element and no image is read. With the same arguments, batch
    ``i`` of ``train_dataset(..., skip=k * batch_size)`` equals batch ``k + i`` of
    ``train_dataset(...)``.

    Args:
        pairs: validated pairs (run ``validate_pairs(pairs, min_size=patch_size)`` first).
        batch_size: patches per batch (global batch; ``drop_remainder=True``).
        patch_size: side of the square crop.
        flip: random horizontal and vertical flips. Default True.
        rotate: random rotation by a multiple of 90 degrees. Default True.
        channel_shuffle: random permutation of the RGB channels. Default True.
        saturation: HSV saturation times ``U(0.5, 1.5)`` (both images). Default False.
        noise: Gaussian noise with ``sigma = |N(0, (2/255)^2)|`` on the blurry image only,
            then clip to ``[0, 1]``. Default False.
        seed: random seed; None for a different stream each run.
        repeat: repeat forever (reshuffling every pass). Default True.
        shuffle: shuffle the pairs (buffer = all pairs). Default True.
        skip: stream elements already consumed (a resumed run's ``initial_epoch *
            steps_per_epoch * batch_size``). Default 0.

    Returns:
        ``tf.data.Dataset`` of ``(blur, sharp)``, each float32
        ``(batch_size, patch_size, patch_size, 3)`` in ``[0, 1]``.

    Raises:
        ValueError: empty ``pairs``, non-positive sizes, a negative ``skip``, or
            ``repeat=False`` with fewer pairs than ``batch_size`` (no complete batch).
    """
    blur_paths, sharp_paths = _paths(pairs)
    for name, value in (("batch_size", batch_size), ("patch_size", patch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    if not isinstance(skip, int) or isinstance(skip, bool) or skip < 0:
        raise ValueError(f"skip must be a non-negative int, got {skip!r}.")
    if not repeat and len(blur_paths) < batch_size:
        raise ValueError(
            f"batch_size={batch_size} exceeds the {len(blur_paths)} pairs and repeat=False: "
            "the dataset would have no complete batch."
        )
    options = dict(
        patch_size=patch_size,
        flip=bool(flip),
        rotate=bool(rotate),
        channel_shuffle=bool(channel_shuffle),
        saturation=bool(saturation),
        noise=bool(noise),
    )

    ds = tf.data.Dataset.from_tensor_slices((blur_paths, sharp_paths))
    if shuffle:
        ds = ds.shuffle(len(blur_paths), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    # One int64 per element; a seed, when given, fixes the whole stream.
    randoms = tf.data.Dataset.random(seed=seed)
    ds = tf.data.Dataset.zip((ds, randoms))
    if skip:
        # Before the map: dropping (paths, seed) tuples is cheap, decoded images are not.
        ds = ds.skip(skip)

    @tf.autograph.experimental.do_not_convert
    def load(paths, r):
        blur, sharp = _read_pair(*paths)
        element_seed = tf.stack([r, tf.constant(0x5DEECE66D, tf.int64)])
        return _augment(blur, sharp, element_seed, **options)

    ds = ds.map(load, num_parallel_calls=_AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(_AUTOTUNE)


def eval_dataset(pairs: Sequence[ImagePair]) -> tf.data.Dataset:
    """Evaluation pipeline: full frames, no augmentation, in the order of ``pairs``.

    Args:
        pairs: validated pairs (``validate_pairs(pairs)``).

    Returns:
        ``tf.data.Dataset`` of ``(blur, sharp)``, each float32 ``(1, H, W, 3)`` in ``[0, 1]``
        (the same values as :func:`tfdeblur.data.load_pair`). Frames may differ in size
        from pair to pair.
    """
    blur_paths, sharp_paths = _paths(pairs)
    ds = tf.data.Dataset.from_tensor_slices((blur_paths, sharp_paths))
    ds = ds.map(_read_pair, num_parallel_calls=_AUTOTUNE, deterministic=True)
    return ds.batch(1).prefetch(_AUTOTUNE)
