"""Fixtures of the export tests: real GOPRO crops for verification and calibration."""

import numpy as np
import pytest

# Two sizes, neither a multiple of 8: every artifact runs at two input shapes (dynamic
# H, W) and through the models' pad-and-crop.
VERIFY_CROPS = (("Istanbul", (300, 500), (64, 96)), ("Flower", (200, 100), (44, 60)))


@pytest.fixture(scope="session")
def gopro_pairs(gopro_samples):
    from tfdeblur.data import image_io

    return {
        name: (
            image_io.read_image(gopro_samples / f"{name}_blur1.png"),
            image_io.read_image(gopro_samples / f"{name}_sharp1.png"),
        )
        for name in ("Istanbul", "Flower")
    }


@pytest.fixture(scope="session")
def verify_images(gopro_pairs):
    """``(name, blurry, sharp)`` crops of the two GOPRO pairs (64x96 and 44x60)."""
    images = []
    for name, (top, left), (h, w) in VERIFY_CROPS:
        blurry, sharp = gopro_pairs[name]
        images.append(
            (name, blurry[top : top + h, left : left + w], sharp[top : top + h, left : left + w])
        )
    return images


@pytest.fixture(scope="session")
def calibration_images(gopro_pairs):
    """Eight random 64x100 blurry crops (int8 calibration), disjoint from verification."""
    rng = np.random.default_rng(0)
    blurry = gopro_pairs["Istanbul"][0]
    crops = []
    for _ in range(8):
        top = int(rng.integers(400, blurry.shape[0] - 64))
        left = int(rng.integers(0, blurry.shape[1] - 100))
        crops.append(blurry[top : top + 64, left : left + 100])
    return crops


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory):
    """A private cache holding the demo dataset, built once per session (offline, seconds).

    Tests pass it as ``$TFDEBLUR_CACHE`` so that ``"demo"`` never touches the user's cache.
    """
    from tfdeblur.data import demo

    cache = tmp_path_factory.mktemp("demo_cache")
    demo.ensure_demo_dataset(cache_dir=cache, seed=0)
    return cache
