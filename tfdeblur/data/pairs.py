"""Finding and validating blurry/sharp image pairs on disk.

Two layouts are understood (:func:`find_pairs`):

* **GOPRO** (``GOPRO_Large``, Nah, Kim, Lee, CVPR 2017, sec. 2;
  ``../shared/papers/deepdeblur_multiscale_cnn.txt``)::

      ROOT/{train,test}/<sequence>/{blur,blur_gamma,sharp}/NNNNNN.png

  2103 training and 1111 test pairs of 1280x720 RGB PNGs. ``blur`` holds the blurry frames
  made by averaging the sharp frames' pixel values (a linear camera response, the version
  used by most later papers); ``blur_gamma`` those made by averaging after undoing a gamma
  2.2 curve, the paper's CRF approximation (eq. 2-3), used by DeepDeblur. The dataset's
  README: "Blurry images includes both gamma corrected and not corrected (linear CRF)
  versions."

* **paired folders**, for one's own data::

      ROOT/{train,test,...}/{blur,sharp}/<name>     when ROOT/<split>/ exists
      ROOT/{blur,sharp}/<name>                       otherwise: the whole folder, any split

  A blurry image and its sharp twin have the same file name. Without split folders the same
  pairs are returned for every split (so evaluating "test" on such a folder evaluates all of
  it; make ``train``/``test`` folders to hold data out). ``blur_key="blur_gamma"`` looks for
  a ``blur_gamma`` folder instead of ``blur``.

Image files are ``.png``, ``.jpg`` and ``.jpeg`` (any case); hidden files and other files
are ignored. :func:`validate_pairs` then reads every header (and, for training, decodes every
image with the pipeline's decoder) before training starts and turns every problem into a
:class:`DatasetError` naming the file.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tfdeblur.data import image_io

BLUR_KEYS = ("blur", "blur_gamma")
#: Extensions of dataset images: :data:`tfdeblur.data.image_io.DATASET_EXTENSIONS` (the formats
#: the ``tf.data`` pipeline decodes).
IMAGE_EXTENSIONS = image_io.DATASET_EXTENSIONS
SHARP_KEY = "sharp"

# How many problems one DatasetError message lists before summarising the rest.
_MAX_LISTED = 20


class DatasetError(ValueError):
    """A dataset on disk is unusable; the message names the offending file or directory."""


@dataclasses.dataclass(frozen=True)
class ImagePair:
    """One blurry image and its sharp twin.

    Attributes:
        blur: path of the blurry image.
        sharp: path of the sharp image.
        name: stable identifier, ``"<sequence>/<file>"`` for GOPRO (e.g.
            ``"GOPR0384_11_00/000001.png"``) and ``"<file>"`` for paired folders.
    """

    blur: pathlib.Path
    sharp: pathlib.Path
    name: str


def _is_image(path: pathlib.Path) -> bool:
    return (
        not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
    )


def _subdirs(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _listing(folder: pathlib.Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "it is empty"
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} entries)" if len(names) > 8 else "")
    return f"it contains {shown}"


def _pair_folder(folder: pathlib.Path, blur_key: str, prefix: str) -> list[ImagePair]:
    """Pairs of ``folder/<blur_key>/X`` and ``folder/sharp/X``."""
    blur_dir, sharp_dir = folder / blur_key, folder / SHARP_KEY
    for needed in (blur_dir, sharp_dir):
        if not needed.is_dir():
            raise DatasetError(
                f"Missing folder {str(needed)!r}: every sequence/paired folder needs "
                f"{blur_key}/ and {SHARP_KEY}/ subfolders ({_listing(folder)})."
            )
    blurs = {p.name: p for p in blur_dir.iterdir() if _is_image(p)}
    sharps = {p.name: p for p in sharp_dir.iterdir() if _is_image(p)}
    if not blurs:
        raise DatasetError(
            f"Folder {str(blur_dir)!r} contains no images ({', '.join(IMAGE_EXTENSIONS)}); "
            f"{_listing(blur_dir)}."
        )
    _check_twins(blurs, sharps, sharp_dir, "Blurry", "sharp")
    _check_twins(sharps, blurs, blur_dir, "Sharp", "blurry")
    return [ImagePair(blurs[n], sharps[n], prefix + n) for n in sorted(blurs)]


def check_dataset_args(root, split: str, blur_key: str) -> pathlib.Path:
    """``root`` as a path, after checking ``blur_key``, ``split`` and that ``root`` is a
    folder (shared by :func:`find_pairs` and :func:`tfdeblur.data.clips.find_clips`).

    Raises:
        ValueError: bad ``blur_key`` or ``split``.
        FileNotFoundError: ``root`` is not a directory.
    """
    if blur_key not in BLUR_KEYS:
        raise ValueError(f"blur_key must be one of {BLUR_KEYS}, got {blur_key!r}.")
    if not split or split in (".", "..") or "/" in split or os.sep in split:
        raise ValueError(f"split must be a folder name such as 'train' or 'test', got {split!r}.")
    root = pathlib.Path(root).expanduser()
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise FileNotFoundError(f"Dataset root {str(root)!r} {what}.")
    return root


def _check_twins(images: dict, others: dict, other_dir: pathlib.Path, kind: str, other: str):
    """Raise :class:`DatasetError` naming the first of ``images`` without a twin in ``others``."""
    lonely = sorted(set(images) - set(others))
    if lonely:
        raise DatasetError(
            f"{kind} image {str(images[lonely[0]])!r} has no {other} twin "
            f"{str(other_dir / lonely[0])!r}"
            + (
                f" ({len(lonely)} {kind.lower()} images lack their twin)."
                if len(lonely) > 1
                else "."
            )
        )


def find_pairs(root, split: str = "train", blur_key: str = "blur") -> list[ImagePair]:
    """All blurry/sharp pairs of one split of a GOPRO-style or paired dataset.

    Layouts (see the module docstring), tried in this order:

    1. ``root/<split>/{<blur_key>,sharp}/`` -- paired folders with splits;
    2. ``root/<split>/<sequence>/{<blur_key>,sharp}/`` -- GOPRO;
    3. ``root/{<blur_key>,sharp}/`` -- paired folders without splits: every split is the
       whole folder.

    Args:
        root: dataset root (e.g. ``.../GOPRO_Large``).
        split: split folder name, ``"train"`` or ``"test"`` for GOPRO. Default ``"train"``.
        blur_key: ``"blur"`` (linear average) or ``"blur_gamma"`` (gamma 2.2 average).
            Default ``"blur"``.

    Returns:
        Pairs sorted by name (sequence, then file name).

    Raises:
        FileNotFoundError: ``root`` or the split folder does not exist.
        ValueError: bad ``blur_key`` or ``split``.
        DatasetError: empty folders, missing ``blur``/``sharp`` folders, a blurry image
            without its sharp twin or vice versa; the message names the file or folder.
    """
    root = check_dataset_args(root, split, blur_key)

    split_dir = root / split
    if split_dir.is_dir():
        if (split_dir / SHARP_KEY).is_dir():
            return _pair_folder(split_dir, blur_key, "")
        sequences = _subdirs(split_dir)
        if not sequences:
            raise DatasetError(
                f"Split folder {str(split_dir)!r} has no sequence folders "
                f"(expected <sequence>/{blur_key}/ and <sequence>/{SHARP_KEY}/); "
                f"{_listing(split_dir)}."
            )
        pairs = []
        for seq in sequences:
            pairs.extend(_pair_folder(seq, blur_key, seq.name + "/"))
        return pairs
    if (root / SHARP_KEY).is_dir() or (root / blur_key).is_dir():
        return _pair_folder(root, blur_key, "")
    splits = [p.name for p in _subdirs(root)]
    if splits:
        raise FileNotFoundError(
            f"Split folder {str(split_dir)!r} does not exist, and {str(root)!r} is not a "
            f"paired folder ({blur_key}/ + {SHARP_KEY}/); its folders are: {', '.join(splits)}."
        )
    raise DatasetError(
        f"Dataset root {str(root)!r} holds no dataset: expected GOPRO "
        f"({split}/<sequence>/{blur_key}/, .../{SHARP_KEY}/) or paired folders "
        f"({blur_key}/ and {SHARP_KEY}/); {_listing(root)}."
    )


def _size_pair(min_size) -> tuple[int, int] | None:
    if min_size is None:
        return None
    if isinstance(min_size, (int, np.integer)):
        min_size = (int(min_size), int(min_size))
    try:
        height, width = (int(v) for v in min_size)
    except (TypeError, ValueError):
        raise ValueError(
            f"min_size must be None, an int or (height, width), got {min_size!r}."
        ) from None
    if height < 1 or width < 1:
        raise ValueError(f"min_size must be positive, got {min_size!r}.")
    return height, width


def _decode_like_training(path: pathlib.Path) -> None:
    """Decode ``path`` with the training pipeline's own decoder
    (:func:`tfdeblur.data.image_io.decode_image`), so a file that passes decodes in
    training too.

    Raises:
        ValueError: naming the file and the decoder's complaint (e.g. corrupt compressed
            data inside a PNG whose chunk lengths are intact).
    """
    import tensorflow as tf

    from tfdeblur.data.image_io import decode_image

    try:
        decode_image(tf.constant(path.read_bytes()))
    except tf.errors.InvalidArgumentError as err:
        reason = err.message.split("}}")[-1].split(" [Op:")[0].strip()
        raise ValueError(f"Image {str(path)!r} cannot be decoded: {reason}.") from None


def _check_pair(pair: ImagePair, min_hw, decode: bool) -> list[str]:
    problems, infos = [], []
    for path in (pair.blur, pair.sharp):
        try:
            infos.append(image_io.verify_image(path))
            if decode:
                _decode_like_training(path)
        except (FileNotFoundError, ValueError) as err:
            problems.append(str(err))
    if problems:
        return problems
    (bh, bw, _, _), (sh, sw, _, _) = infos
    if (bh, bw) != (sh, sw):
        return [
            f"Size mismatch in pair {pair.name!r}: blurry {str(pair.blur)!r} is {bh}x{bw} "
            f"(HxW) but sharp {str(pair.sharp)!r} is {sh}x{sw}."
        ]
    if min_hw and (bh < min_hw[0] or bw < min_hw[1]):
        return [
            f"Image {str(pair.blur)!r} (and its sharp twin) is {bh}x{bw} (HxW), smaller than "
            f"the {min_hw[0]}x{min_hw[1]} training patch."
        ]
    return []


def validate_pairs(pairs: Sequence[ImagePair], *, min_size=None, decode: bool = False) -> None:
    """Check every pair before a pipeline is built; raise one error listing all problems.

    For each image (see :func:`tfdeblur.data.image_io.verify_image`): it is a complete PNG or
    JPEG (a PNG ends with its IEND chunk, a JPEG with its EOI marker), its mode is supported
    (8/16-bit gray, RGB, palette; alpha only if fully opaque); the two images of a pair have
    the same size; with ``min_size``, both sides are at least that large. Headers are read
    in a thread pool, so checking all of GOPRO takes seconds.

    Args:
        pairs: from :func:`find_pairs`.
        min_size: ``None``, an int (square training patch) or ``(height, width)``.
        decode: additionally decode every image in full with the training pipeline's
            decoder (finds corrupt compressed data inside files whose structure is
            intact; ``train.py`` does this: about 80 ms per 720p PNG on 2 busy AMD EPYC
            cores, some 8 minutes for GOPRO's 6428 images there and less with more cores,
            against days of training that would otherwise crash mid-epoch). Default False.

    Raises:
        DatasetError: listing every problem found (up to 20, then a count), each naming
            its file.
        ValueError: bad ``min_size``.
    """
    min_hw = _size_pair(min_size)
    pairs = list(pairs)
    if not pairs:
        raise DatasetError("No image pairs to validate (the list is empty).")
    workers = min(16, (os.cpu_count() or 1) * 4, len(pairs))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda p: _check_pair(p, min_hw, decode), pairs))
    problems = [msg for result in results for msg in result]
    if problems:
        listed = "\n  ".join(problems[:_MAX_LISTED])
        more = (
            f"\n  ... and {len(problems) - _MAX_LISTED} more."
            if len(problems) > _MAX_LISTED
            else ""
        )
        raise DatasetError(
            f"{len(problems)} problem(s) in {len(pairs)} image pairs:\n  {listed}{more}"
        )


def load_pair(pair: ImagePair) -> tuple[np.ndarray, np.ndarray]:
    """Read one pair as two float32 ``(H, W, 3)`` arrays in ``[0, 1]``.

    Raises:
        DatasetError: the two images differ in size (names both files).
        FileNotFoundError / ValueError: from :func:`tfdeblur.data.image_io.read_image`.
    """
    blur = image_io.read_image(pair.blur)
    sharp = image_io.read_image(pair.sharp)
    if blur.shape != sharp.shape:
        raise DatasetError(
            f"Size mismatch in pair {pair.name!r}: blurry {str(pair.blur)!r} is "
            f"{blur.shape[0]}x{blur.shape[1]} but sharp {str(pair.sharp)!r} is "
            f"{sharp.shape[0]}x{sharp.shape[1]}."
        )
    return blur, sharp


def resolve_data(spec, cache_dir=None, seed: int = 0) -> pathlib.Path:
    """Turn a ``--data`` value into a dataset root.

    Args:
        spec: ``"demo"`` for the embedded demo dataset (built on first use, see
            :func:`tfdeblur.data.demo.ensure_demo_dataset`), else a directory.
        cache_dir: where the demo dataset lives; default ``$TFDEBLUR_CACHE`` or
            ``~/.cache/tfdeblur``.
        seed: demo dataset seed. Default 0.

    Returns:
        The dataset root.

    Raises:
        FileNotFoundError: ``spec`` is not an existing directory (names it).
    """
    if isinstance(spec, str) and spec == "demo":
        from tfdeblur.data.demo import ensure_demo_dataset

        return ensure_demo_dataset(cache_dir=cache_dir, seed=seed)
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        raise ValueError("--data must be 'demo' or a dataset directory, got nothing.")
    root = pathlib.Path(spec).expanduser()
    if not root.is_dir():
        what = "is a file, not a directory" if root.exists() else "does not exist"
        raise FileNotFoundError(
            f"Dataset directory {str(root)!r} {what} (use --data demo for the built-in "
            "demo dataset)."
        )
    return root


def natural_key(name: str) -> list:
    """Sort key comparing digit runs as numbers: ``f2.png`` < ``f10.png``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]
