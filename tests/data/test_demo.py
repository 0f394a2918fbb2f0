"""tfdeblur.data.demo: the offline demo dataset (GOPRO layout, deterministic, atomic)."""

import json
import os
import pathlib

import numpy as np
import pytest

from tfdeblur.data import demo, find_pairs, load_pair, resolve_data, validate_pairs
from tfdeblur.data.image_io import read_image

SUBSET = {"train": (("astronaut", 2),)}  # the first two pairs of the full dataset


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    demo.ensure_demo_dataset(cache_dir=cache, seed=0)
    return cache


def _psnr(a, b):
    return 10.0 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2))


def _gradient_energy(image):
    return np.mean(np.diff(image, axis=0) ** 2) + np.mean(np.diff(image, axis=1) ** 2)


def test_demo_layout_splits_and_sources(demo_cache):
    root = resolve_data("demo", cache_dir=demo_cache, seed=0)  # already built: no rebuild
    assert root == demo_cache / f"demo_v{demo.DEMO_VERSION}_seed0"
    train, test = find_pairs(root, "train"), find_pairs(root, "test")
    assert len(train) == 24 and len(test) == 6
    assert len(find_pairs(root, "test", blur_key="blur_gamma")) == 6
    validate_pairs(train, min_size=256)  # every paper patch size fits
    validate_pairs(test)

    manifest = json.loads((root / "demo.json").read_text())
    train_photos = {p.name.split("/")[0] for p in train}
    test_photos = {p.name.split("/")[0] for p in test}
    assert train_photos == set(manifest["splits"]["train"])
    assert test_photos == set(manifest["splits"]["test"])
    assert not train_photos & test_photos
    # Every sharp image is the exact crop of the photograph the manifest names, so the
    # splits really hold different photographs.
    records = {(r["split"], r["name"]): r for r in manifest["pairs"]}
    photos = {}
    for split, pairs in (("train", train), ("test", test)):
        for pair in pairs[::3]:
            record = records[(split, pair.name)]
            photo = photos.setdefault(record["photo"], demo.load_photo(record["photo"]))
            window = photo[
                record["top"] : record["top"] + demo.HEIGHT,
                record["left"] : record["left"] + demo.WIDTH,
            ]
            np.testing.assert_array_equal(read_image(pair.sharp), window)
            # The sharp image is the middle frame of the trajectory: no shift, no rotation.
            mid = record["frames"] // 2
            assert record["frames"] in demo.FRAME_COUNTS
            assert len(record["shifts"]) == len(record["angles_deg"]) == record["frames"]
            assert record["shifts"][mid] == [0.0, 0.0] and record["angles_deg"][mid] == 0.0


def test_demo_blurry_images_are_blurred_like_gopro(demo_cache):
    root = demo.demo_dataset_dir(demo_cache, seed=0)
    psnrs = []
    for pair in find_pairs(root, "train") + find_pairs(root, "test"):
        blur, sharp = load_pair(pair)
        assert blur.shape == (demo.HEIGHT, demo.WIDTH, 3)
        assert _gradient_energy(blur) < 0.8 * _gradient_energy(sharp)
        psnrs.append(_psnr(blur, sharp))
        # blur_gamma = (mean x^2.2)^(1/2.2) >= mean x = blur (power-mean inequality): the
        # gamma version is the brighter one, which pins down which folder is which.
        gamma = read_image(pair.blur.parent.parent / "blur_gamma" / pair.blur.name)
        assert np.all(gamma >= blur - 1.0 / 255 - 1e-6)
        assert gamma.mean() > blur.mean()
    psnrs = np.array(psnrs)
    assert psnrs.min() > 15.0 and psnrs.max() < 40.0, psnrs
    assert 20.0 < psnrs.mean() < 30.0, psnrs.mean()  # GOPRO's blurry test set: ~25.6 dB


def test_demo_is_deterministic_by_seed(demo_cache, tmp_path):
    a = demo.build_demo_dataset(tmp_path / "a", seed=0, photos=SUBSET)
    b = demo.build_demo_dataset(tmp_path / "b", seed=0, photos=SUBSET)
    c = demo.build_demo_dataset(tmp_path / "c", seed=1, photos=SUBSET)
    full = demo.demo_dataset_dir(demo_cache, seed=0)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 6
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
        assert (a / rel).read_bytes() == (full / rel).read_bytes()  # prefix of the full set
    assert any((a / rel).read_bytes() != (c / rel).read_bytes() for rel in files)
    with pytest.raises(ValueError, match="seed"):
        demo.demo_dataset_dir(tmp_path, seed=-1)


def test_demo_build_is_atomic(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "PHOTOS", SUBSET)
    real_render = demo.render_pair
    calls = []

    def interrupted(photo, rng):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated interruption")
        return real_render(photo, rng)

    monkeypatch.setattr(demo, "render_pair", interrupted)
    with pytest.raises(KeyboardInterrupt):
        demo.ensure_demo_dataset(cache_dir=tmp_path, seed=0)
    assert os.listdir(tmp_path) == []  # no dataset, no half-written temporary folder

    monkeypatch.setattr(demo, "render_pair", real_render)
    root = demo.ensure_demo_dataset(cache_dir=tmp_path, seed=0)
    assert os.listdir(tmp_path) == [root.name]
    assert len(find_pairs(root, "train")) == 2

    def no_rebuild(*args, **kwargs):
        raise AssertionError("rebuilt an existing dataset")

    monkeypatch.setattr(demo, "build_demo_dataset", no_rebuild)
    assert demo.ensure_demo_dataset(cache_dir=tmp_path, seed=0) == root


def test_demo_cache_location_and_incomplete_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDEBLUR_CACHE", str(tmp_path / "env_cache"))
    assert (
        demo.demo_dataset_dir(seed=3) == tmp_path / "env_cache" / f"demo_v{demo.DEMO_VERSION}_seed3"
    )
    monkeypatch.delenv("TFDEBLUR_CACHE")
    assert demo.default_cache_dir() == pathlib.Path.home() / ".cache" / "tfdeblur"
    (tmp_path / f"demo_v{demo.DEMO_VERSION}_seed0").mkdir()
    with pytest.raises(ValueError, match="demo_v.*_seed0.*not a complete demo dataset"):
        demo.ensure_demo_dataset(cache_dir=tmp_path)
