"""The embedded demo dataset: a small GOPRO-layout dataset made offline on first use.

``--data demo`` makes every command work on a fresh machine without downloading GOPRO. The
dataset is synthesised from the colour photographs bundled inside scikit-image
(``skimage.data``; only files shipped in the wheel are used, nothing is fetched), blurred
the way GOPRO was made (Nah, Kim, Lee, CVPR 2017, sec. 2,
``../shared/papers/deepdeblur_multiscale_cnn.txt``): a blurry frame is the average of the
successive sharp frames seen during the exposure, and the sharp image is the middle one.

Here the "video" is a photograph seen by a shaking camera: for each pair a random camera
trajectory (a smooth random walk of translations plus a slow in-plane rotation, so the blur
varies over the frame) of 7, 9, 11 or 13 frames (GOPRO averaged 7-13) is applied to a
window of the photograph with bilinear resampling; the middle frame has no motion, so the
sharp image is an exact crop of the photograph. Like GOPRO_Large the dataset has two blurry
versions of every frame:

* ``blur``: the average of the frames' pixel values (a linear camera response);
* ``blur_gamma``: the frames linearised with ``x ** 2.2`` (the paper's gamma-2.2 CRF
  approximation ``g(x) = x ** (1 / 2.2)``, eq. 3), averaged, and re-encoded with
  ``x ** (1 / 2.2)``.

Layout::

    <cache>/demo_v1_seed<seed>/
        demo.json                                   # how every pair was made
        train/<photo>/{blur,blur_gamma,sharp}/000001.png ...   # 6 pairs per photo, 24
        test/<photo>/{blur,blur_gamma,sharp}/000001.png ...    # 3 pairs per photo, 6

Images are 256 (H) x 320 (W) 8-bit RGB PNGs, big enough for every network's paper patch
size (<= 256). Train and test use different photographs (the two motorcycle frames are one
stereo scene and both stay in train). The dataset is a deterministic function of ``seed``
(and of the library versions that decode/encode PNGs), built in a temporary folder next to
its target and renamed into place, so an interrupted build never leaves a partial dataset;
bump :data:`DEMO_VERSION` whenever the recipe changes.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import sys
import tempfile

import numpy as np

from tfdeblur.data import image_io

DEMO_VERSION = 1
GAMMA = 2.2
HEIGHT, WIDTH = 256, 320
FRAME_COUNTS = (7, 9, 11, 13)

#: Split -> (photograph name in skimage.data, pairs per photograph).
PHOTOS = {
    "train": (
        ("astronaut", 6),
        ("rocket", 6),
        ("motorcycle_left", 6),
        ("motorcycle_right", 6),
    ),
    "test": (
        ("chelsea", 3),
        ("coffee", 3),
    ),
}

# Files of skimage.data shipped in the scikit-image wheel (no pooch download).
_PHOTO_FILES = {
    "astronaut": "astronaut.png",
    "rocket": "rocket.jpg",
    "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
}


def default_cache_dir() -> pathlib.Path:
    """``$TFDEBLUR_CACHE`` if set, else ``~/.cache/tfdeblur``."""
    env = os.environ.get("TFDEBLUR_CACHE")
    return pathlib.Path(env).expanduser() if env else pathlib.Path.home() / ".cache" / "tfdeblur"


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}.")
    return int(seed)


def demo_dataset_dir(cache_dir=None, seed: int = 0) -> pathlib.Path:
    """Where the demo dataset for ``seed`` lives (it may not exist yet)."""
    seed = _check_seed(seed)
    base = pathlib.Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / f"demo_v{DEMO_VERSION}_seed{seed}"


def load_photo(name: str) -> np.ndarray:
    """One bundled skimage.data photograph as float32 ``(H, W, 3)`` in [0, 1]."""
    import skimage.data

    if name not in _PHOTO_FILES:
        raise ValueError(f"Unknown demo photograph {name!r}; known: {sorted(_PHOTO_FILES)}.")
    path = pathlib.Path(skimage.data.data_dir) / _PHOTO_FILES[name]
    if not path.is_file():
        raise FileNotFoundError(
            f"scikit-image's bundled photograph {str(path)!r} is missing; reinstall "
            "scikit-image (the demo dataset never downloads)."
        )
    return image_io.read_image(path)


def camera_trajectory(rng: np.random.Generator, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """A random hand-shake trajectory, centred on its middle frame.

    A random walk with momentum: initial velocity of 0.5-1.8 px/frame in a uniform direction,
    changed each frame by an ``N(0, 0.35^2)`` px/frame^2 kick per axis (so paths curve), plus
    a rotation of up to 0.12 degrees per frame about the window centre. The middle frame is
    the reference: zero shift, zero angle.

    Args:
        rng: numpy random generator.
        num_frames: frames averaged into the blurry image.

    Returns:
        ``(shifts, angles)``: ``(num_frames, 2)`` shifts ``(dy, dx)`` in pixels and
        ``(num_frames,)`` angles in radians.
    """
    speed = rng.uniform(0.5, 1.8)
    direction = rng.uniform(0.0, 2.0 * np.pi)
    velocity = speed * np.array([np.sin(direction), np.cos(direction)])
    shifts = np.zeros((num_frames, 2))
    for i in range(1, num_frames):
        velocity = velocity + rng.normal(0.0, 0.35, size=2)
        shifts[i] = shifts[i - 1] + velocity
    omega = np.deg2rad(rng.uniform(-0.12, 0.12))
    angles = omega * np.arange(num_frames)
    mid = num_frames // 2
    return shifts - shifts[mid], angles - angles[mid]


def _source_coords(shift, angle, height: int, width: int) -> np.ndarray:
    """Where the window's 4 corners come from in photo coordinates (window origin at 0)."""
    corners = np.array([[0, 0], [0, width - 1], [height - 1, 0], [height - 1, width - 1]], float)
    centre = np.array([(height - 1) / 2.0, (width - 1) / 2.0])
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, s], [-s, c]])  # skimage's rotation matrix, written in (row, col)
    return (corners - centre) @ rot.T + centre + shift


def _warp(photo, top: int, left: int, shift, angle, height: int, width: int) -> np.ndarray:
    """The window seen by the camera at one trajectory pose (bilinear resampling)."""
    from skimage.transform import AffineTransform, warp

    centre = np.array([(height - 1) / 2.0, (width - 1) / 2.0])
    # skimage works in (x, y) = (col, row). Output pixel p maps to photo pixel
    # R (p - centre) + centre + shift + origin.
    to_centre = AffineTransform(translation=(-centre[1], -centre[0]))
    rotation = AffineTransform(rotation=angle)
    back = AffineTransform(translation=(centre[1] + shift[1] + left, centre[0] + shift[0] + top))
    inverse_map = AffineTransform(matrix=back.params @ rotation.params @ to_centre.params)
    frame = warp(photo, inverse_map, output_shape=(height, width), order=1, preserve_range=True)
    return frame.astype(np.float32)


def render_pair(
    photo: np.ndarray, rng: np.random.Generator
) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """Make one (sharp, blur, blur_gamma) triple from a photograph.

    Returns:
        ``(record, sharp, blur, blur_gamma)``: a JSON-able description (window origin,
        frame count, trajectory) and three float32 ``(HEIGHT, WIDTH, 3)`` images.
    """
    ph, pw = photo.shape[:2]
    num_frames = int(rng.choice(FRAME_COUNTS))
    for _ in range(100):
        shifts, angles = camera_trajectory(rng, num_frames)
        coords = np.concatenate(
            [_source_coords(s, a, HEIGHT, WIDTH) for s, a in zip(shifts, angles, strict=True)]
        )
        lo, hi = coords.min(axis=0), coords.max(axis=0)
        # Integer window origins keeping every frame inside the photograph.
        top_min, left_min = int(np.ceil(-lo[0])), int(np.ceil(-lo[1]))
        top_max, left_max = int(np.floor(ph - 1 - hi[0])), int(np.floor(pw - 1 - hi[1]))
        if top_min <= top_max and left_min <= left_max:
            break
    else:  # pragma: no cover - the photographs leave ample room
        raise RuntimeError("could not fit a camera trajectory inside the photograph")
    top = int(rng.integers(top_min, top_max + 1))
    left = int(rng.integers(left_min, left_max + 1))

    mid = num_frames // 2
    frames = []
    for i in range(num_frames):
        if i == mid:
            frames.append(photo[top : top + HEIGHT, left : left + WIDTH])  # exact crop
        else:
            frames.append(_warp(photo, top, left, shifts[i], angles[i], HEIGHT, WIDTH))
    frames = np.clip(np.stack(frames), 0.0, 1.0)
    blur = frames.mean(axis=0)
    blur_gamma = np.power(np.power(frames, GAMMA).mean(axis=0), 1.0 / GAMMA)
    record = {
        "top": top,
        "left": left,
        "frames": num_frames,
        "shifts": np.round(shifts, 4).tolist(),
        "angles_deg": np.round(np.rad2deg(angles), 5).tolist(),
    }
    return record, frames[mid], blur, blur_gamma


def build_demo_dataset(target, seed: int = 0, photos=None) -> pathlib.Path:
    """Write the demo dataset into ``target`` (which must not exist), non-atomically.

    :func:`ensure_demo_dataset` calls this on a temporary folder and renames it.

    Args:
        target: new folder.
        seed: dataset seed.
        photos: ``{split: ((photo, pairs), ...)}``; default :data:`PHOTOS`. One random
            stream runs through the photos in order, so a prefix of :data:`PHOTOS` gives
            the same first pairs as the full dataset.
    """
    photos = PHOTOS if photos is None else photos
    seed = _check_seed(seed)
    target = pathlib.Path(target)
    target.mkdir(parents=True)
    rng = np.random.default_rng([DEMO_VERSION, seed])
    manifest = {
        "version": DEMO_VERSION,
        "seed": seed,
        "size": [HEIGHT, WIDTH],
        "gamma": GAMMA,
        "source": "scikit-image bundled photographs (skimage.data)",
        "blur": "mean of the frames' pixel values (linear CRF)",
        "blur_gamma": f"(mean of frames ** {GAMMA}) ** (1 / {GAMMA})",
        "splits": {split: [name for name, _ in group] for split, group in photos.items()},
        "pairs": [],
    }
    for split, group in photos.items():
        for name, count in group:
            photo = load_photo(name)
            for index in range(1, count + 1):
                record, sharp, blur, blur_gamma = render_pair(photo, rng)
                file = f"{index:06d}.png"
                for key, image in (("sharp", sharp), ("blur", blur), ("blur_gamma", blur_gamma)):
                    image_io.write_image(
                        target / split / name / key / file, image, compress_level=1
                    )
                manifest["pairs"].append(
                    {"split": split, "name": f"{name}/{file}", "photo": name, **record}
                )
    (target / "demo.json").write_text(json.dumps(manifest, indent=1))
    return target


def ensure_demo_dataset(cache_dir=None, seed: int = 0) -> pathlib.Path:
    """The demo dataset's root (GOPRO layout), building it on first use.

    Building takes a few seconds. It happens in a temporary folder beside the target that is
    renamed into place only when complete; an interrupted build leaves no dataset (the next
    call starts over), and of two processes racing, one rename wins and the other's copy is
    discarded.

    Args:
        cache_dir: parent folder; default ``$TFDEBLUR_CACHE`` or ``~/.cache/tfdeblur``.
        seed: dataset seed (trajectories, windows). Default 0.

    Returns:
        ``<cache_dir>/demo_v<version>_seed<seed>``, to pass to :func:`find_pairs`.

    Raises:
        ValueError: bad ``seed``; the target exists but is not a complete demo dataset.
    """
    target = demo_dataset_dir(cache_dir, seed)
    if target.is_dir():
        if not (target / "demo.json").is_file():
            raise ValueError(
                f"{str(target)!r} exists but is not a complete demo dataset (no demo.json); "
                "delete it to rebuild."
            )
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"Building the demo dataset in {target} (first use, a few seconds) ...", file=sys.stderr)
    tmp = pathlib.Path(
        tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    )
    try:
        build_demo_dataset(tmp / "data", seed)
        try:
            os.rename(tmp / "data", target)
        except OSError:
            if not (target / "demo.json").is_file():
                raise
            # Another process finished first; use its copy.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
