"""Clips of consecutive frames for video networks (``sarn_video``): discovery and ``tf.data``.

Two layouts are understood (:func:`find_clips`):

* **GOPRO** (``GOPRO_Large``; every sequence folder holds the frames of one video in
  order)::

      ROOT/{train,test}/<sequence>/{blur,blur_gamma,sharp}/NNNNNN.png

* **DVD** (Su et al., "Deep Video Deblurring", CVPR 2017, the benchmark of SARN's
  Table 2; ``quantitative_datasets`` of ``DeepVideoDeblurring_Dataset``)::

      ROOT/<video>/{input,GT}/NNNNN.jpg              the whole folder, whatever the split
      ROOT/{train,test}/<video>/{input,GT}/*         when ROOT/<split>/ exists

  The DVD archive has no split folders; its test set is 10 named videos, so either
  move them under ``test/`` (and the rest under ``train/``) or pass the folder of one
  split as ``root``.

Frames are ordered by their file names compared "naturally" (digit runs as numbers, so
``frame2.png`` precedes ``frame10.png``); a blurry frame and its sharp twin share a file
name. :func:`clip_dataset` cuts every sequence into windows of ``clip_length``
consecutive frames and serves random crops with the same window and flips for every
frame of a clip and for the blurry and the sharp clip alike.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import tensorflow as tf

from tfdeblur.data.image_io import decode_image
from tfdeblur.data.pairs import (
    IMAGE_EXTENSIONS,
    DatasetError,
    ImagePair,
    check_dataset_args,
    natural_key,
)
from tfdeblur.data.pipeline import random_crop_origin

LAYOUTS = ("auto", "gopro", "dvd")
_DVD_BLUR, _DVD_SHARP = "input", "GT"
_GOPRO_SHARP = "sharp"
_AUTOTUNE = tf.data.AUTOTUNE


def _images(folder: pathlib.Path) -> dict[str, pathlib.Path]:
    return {
        p.name: p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    }


def _subdirs(folder: pathlib.Path) -> list[pathlib.Path]:
    dirs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(dirs, key=lambda p: natural_key(p.name))


def _sequence(folder: pathlib.Path, blur_dir: str, sharp_dir: str) -> list[ImagePair]:
    blurs, sharps = _images(folder / blur_dir), _images(folder / sharp_dir)
    if not blurs:
        raise DatasetError(f"Folder {str(folder / blur_dir)!r} contains no frames.")
    missing = sorted(set(blurs) ^ set(sharps), key=natural_key)
    if missing:
        name = missing[0]
        have, lack = (blur_dir, sharp_dir) if name in blurs else (sharp_dir, blur_dir)
        raise DatasetError(
            f"Frame {str(folder / have / name)!r} has no twin {str(folder / lack / name)!r}"
            + (f" ({len(missing)} frames lack their twin)." if len(missing) > 1 else ".")
        )
    names = sorted(blurs, key=natural_key)
    return [ImagePair(blurs[n], sharps[n], f"{folder.name}/{n}") for n in names]


def find_clips(
    root, split: str = "train", blur_key: str = "blur", layout: str = "auto"
) -> list[list[ImagePair]]:
    """The frame sequences of one split of a GOPRO- or DVD-layout video dataset.

    Args:
        root: dataset root (``GOPRO_Large``, or the DVD ``quantitative_datasets``).
        split: split folder, used when ``root/<split>/`` exists; a DVD root without
            split folders is taken whole. Default ``"train"``.
        blur_key: GOPRO's blurry folder, ``"blur"`` or ``"blur_gamma"`` (DVD's is always
            ``input``). Default ``"blur"``.
        layout: ``"gopro"``, ``"dvd"`` or ``"auto"`` (whichever the first sequence folder
            matches). Default ``"auto"``.

    Returns:
        One list per sequence (sorted by name), its frames in order as
        :class:`tfdeblur.data.ImagePair` named ``"<sequence>/<file>"``.

    Raises:
        FileNotFoundError: ``root`` (or GOPRO's split folder) does not exist.
        ValueError: bad ``layout``, ``blur_key`` or ``split``.
        DatasetError: no sequence folders, a sequence without its blurry/sharp folders
            or frames, or a frame without its twin; the message names the folder or file.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
    root = check_dataset_args(root, split, blur_key)

    base = root / split if (root / split).is_dir() else root
    folders = _subdirs(base)
    if not folders:
        raise DatasetError(f"Folder {str(base)!r} has no sequence folders.")
    if layout == "auto":
        first = folders[0]
        if (first / _DVD_BLUR).is_dir() and (first / _DVD_SHARP).is_dir():
            layout = "dvd"
        elif (first / blur_key).is_dir() and (first / _GOPRO_SHARP).is_dir():
            layout = "gopro"
        else:
            raise DatasetError(
                f"Cannot tell the layout of {str(base)!r}: its first folder {str(first)!r} "
                f"has neither {_DVD_BLUR}/ + {_DVD_SHARP}/ (DVD) nor {blur_key}/ + "
                f"{_GOPRO_SHARP}/ (GOPRO)."
            )
    if layout == "gopro" and base == root:
        raise FileNotFoundError(
            f"Split folder {str(root / split)!r} does not exist (GOPRO layout: "
            f"ROOT/{split}/<sequence>/{blur_key}/)."
        )
    blur_dir, sharp_dir = (_DVD_BLUR, _DVD_SHARP) if layout == "dvd" else (blur_key, _GOPRO_SHARP)
    sequences = []
    for folder in folders:
        for needed in (blur_dir, sharp_dir):
            if not (folder / needed).is_dir():
                raise DatasetError(
                    f"Sequence folder {str(folder)!r} lacks {needed}/ ({layout} layout: "
                    f"<sequence>/{blur_dir}/ and <sequence>/{sharp_dir}/)."
                )
        sequences.append(_sequence(folder, blur_dir, sharp_dir))
    return sequences


def clip_windows(
    sequences: Sequence[Sequence[ImagePair]], clip_length: int, stride: int = 1
) -> list[list[ImagePair]]:
    """Every window of ``clip_length`` consecutive frames, starts ``stride`` apart.

    Sequences shorter than ``clip_length`` give no window.

    Raises:
        ValueError: non-positive ``clip_length``/``stride``, or no window at all.
    """
    for name, value in (("clip_length", clip_length), ("stride", stride)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    sequences = [list(s) for s in sequences]
    windows = [
        seq[start : start + clip_length]
        for seq in sequences
        for start in range(0, len(seq) - clip_length + 1, stride)
    ]
    if not windows:
        longest = max((len(s) for s in sequences), default=0)
        raise ValueError(
            f"No clip of clip_length={clip_length} frames: the longest of the "
            f"{len(sequences)} sequences has {longest} frames."
        )
    return windows


def _crop_and_flip(blur, sharp, seed, clip_length: int, patch_size: int, flip: bool):
    """One random crop + flips shared by all frames of both clips ``(T, H, W, 3)``."""
    seeds = tf.random.experimental.stateless_split(seed, num=4)
    height, width = tf.shape(blur)[1], tf.shape(blur)[2]
    top, left = random_crop_origin(
        seeds, height, width, patch_size, f"frames smaller than patch_size={patch_size}"
    )
    both = tf.concat([blur, sharp], axis=-1)[:, top : top + patch_size, left : left + patch_size, :]
    if flip:
        vertical = tf.random.stateless_uniform([], seeds[2]) < 0.5
        horizontal = tf.random.stateless_uniform([], seeds[3]) < 0.5
        both = tf.where(vertical, tf.reverse(both, axis=[1]), both)
        both = tf.where(horizontal, tf.reverse(both, axis=[2]), both)
    shape = [clip_length, patch_size, patch_size, 3]
    return tf.ensure_shape(both[..., :3], shape), tf.ensure_shape(both[..., 3:], shape)


def clip_dataset(
    sequences: Sequence[Sequence[ImagePair]],
    clip_length: int,
    batch_size: int,
    patch_size: int,
    *,
    stride: int = 1,
    flip: bool = True,
    seed: int | None = None,
    repeat: bool = True,
    shuffle: bool = True,
    skip: int = 0,
) -> tf.data.Dataset:
    """Training pipeline of clips: shuffled windows -> decode -> shared random crop/flips.

    Each element is one window of ``clip_length`` consecutive frames (see
    :func:`clip_windows`) of one sequence, cropped to a random ``patch_size`` square that
    is the same for every frame and for the blurry and the sharp clip, then flipped
    vertically and horizontally (each with probability 1/2), again the same for all.
    ``seed`` fixes the whole stream (shuffle order and every crop/flip, drawn by stateless
    ops seeded from ``tf.data.Dataset.random(seed)``). ``skip`` drops the first ``skip``
    clips of that stream before they are decoded, so a resumed run continues where the
    interrupted one stopped (as :func:`tfdeblur.data.train_dataset` does for pairs).

    Args:
        sequences: from :func:`find_clips`.
        clip_length: frames per clip T.
        batch_size: clips per batch (global batch; ``drop_remainder=True``).
        patch_size: side of the square crop.
        stride: frames between the starts of consecutive windows. Default 1 (every
            window).
        flip: random flips. Default True.
        seed: random seed; None for a different stream each run.
        repeat: repeat forever. Default True.
        shuffle: shuffle the windows. Default True.
        skip: clips of the stream already consumed (a resumed run's ``initial_epoch *
            steps_per_epoch * batch_size``). Default 0.

    Returns:
        ``tf.data.Dataset`` of ``(blur, sharp)``, each float32
        ``(batch_size, clip_length, patch_size, patch_size, 3)`` in ``[0, 1]``.

    Raises:
        ValueError: bad sizes, a negative ``skip``, no window, or ``repeat=False`` with fewer windows than
            ``batch_size``.
    """
    for name, value in (("batch_size", batch_size), ("patch_size", patch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    if not isinstance(skip, int) or isinstance(skip, bool) or skip < 0:
        raise ValueError(f"skip must be a non-negative int, got {skip!r}.")
    windows = clip_windows(sequences, clip_length, stride)
    if not repeat and len(windows) < batch_size:
        raise ValueError(
            f"batch_size={batch_size} exceeds the {len(windows)} clips and repeat=False: the "
            "dataset would have no complete batch."
        )
    blur_paths = [[str(p.blur) for p in w] for w in windows]
    sharp_paths = [[str(p.sharp) for p in w] for w in windows]

    ds = tf.data.Dataset.from_tensor_slices((blur_paths, sharp_paths))
    if shuffle:
        ds = ds.shuffle(len(windows), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=seed)))
    if skip:
        ds = ds.skip(skip)  # before the decode map: skipping paths and seeds is cheap

    @tf.autograph.experimental.do_not_convert
    def load(paths, r):
        blur_p, sharp_p = paths
        blur = tf.stack([decode_image(tf.io.read_file(blur_p[t])) for t in range(clip_length)])
        sharp = tf.stack([decode_image(tf.io.read_file(sharp_p[t])) for t in range(clip_length)])
        check = tf.debugging.assert_equal(
            tf.shape(blur), tf.shape(sharp), message="blurry and sharp frames differ in size"
        )
        with tf.control_dependencies([check]):
            element_seed = tf.stack([r, tf.constant(0x2545F491, tf.int64)])
            return _crop_and_flip(blur, sharp, element_seed, clip_length, patch_size, flip)

    ds = ds.map(load, num_parallel_calls=_AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(_AUTOTUNE)
