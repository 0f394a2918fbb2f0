"""tfdeblur.data.pairs: GOPRO / paired layouts, validation errors that name the file."""

import pathlib

import numpy as np
import pytest
from PIL import Image

from tfdeblur.data import (
    DatasetError,
    ImagePair,
    find_pairs,
    load_pair,
    resolve_data,
    validate_pairs,
)

H, W = 40, 48


def _save(path: pathlib.Path, pixels: np.ndarray) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _pixels(seed, h=H, w=W):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def make_gopro(
    root: pathlib.Path,
    splits=("train", "test"),
    seqs=("GOPR0001_00_00", "GOPR0002_11_00"),
    frames=3,
):
    """A tiny GOPRO_Large tree: ROOT/split/seq/{blur,blur_gamma,sharp}/NNNNNN.png."""
    seed = 0
    for split in splits:
        for seq in seqs:
            for i in range(1, frames + 1):
                for key in ("blur", "blur_gamma", "sharp"):
                    seed += 1
                    _save(root / split / seq / key / f"{i:06d}.png", _pixels(seed))
    return root


def test_find_pairs_gopro_layout(tmp_path):
    root = make_gopro(tmp_path / "GOPRO_Large")
    (root / "train" / "GOPR0001_00_00" / "blur" / "Thumbs.db").write_bytes(b"x")  # ignored
    pairs = find_pairs(root, "train")
    assert [p.name for p in pairs] == [
        f"GOPR000{s}_{t}/00000{i}.png" for s, t in ((1, "00_00"), (2, "11_00")) for i in (1, 2, 3)
    ]
    first = pairs[0]
    assert first == ImagePair(
        root / "train/GOPR0001_00_00/blur/000001.png",
        root / "train/GOPR0001_00_00/sharp/000001.png",
        "GOPR0001_00_00/000001.png",
    )
    gamma = find_pairs(root, "test", blur_key="blur_gamma")
    assert len(gamma) == 6
    assert all(p.blur.parent.name == "blur_gamma" and "/test/" in p.blur.as_posix() for p in gamma)
    validate_pairs(pairs, min_size=32)
    blur, sharp = load_pair(first)
    np.testing.assert_array_equal(blur, np.asarray(Image.open(first.blur)) / np.float32(255))
    assert sharp.shape == (H, W, 3)


def test_find_pairs_paired_layouts(tmp_path):
    flat = tmp_path / "flat"
    for i, name in enumerate(["b.png", "a.jpg", "c.PNG"]):
        _save(flat / "blur" / name, _pixels(i))
        _save(flat / "sharp" / name, _pixels(i + 10))
    (flat / "blur" / ".hidden.png").write_bytes(b"ignored")
    # Without split folders the whole folder is every split.
    train, test = find_pairs(flat, "train"), find_pairs(flat, "test")
    assert [p.name for p in train] == ["a.jpg", "b.png", "c.PNG"] and train == test

    split = tmp_path / "split"
    for s, names in (("train", ["x.png", "y.png"]), ("test", ["z.png"])):
        for name in names:
            _save(split / s / "blur" / name, _pixels(1))
            _save(split / s / "sharp" / name, _pixels(2))
    assert [p.name for p in find_pairs(split, "train")] == ["x.png", "y.png"]
    assert [p.name for p in find_pairs(split, "test")] == ["z.png"]
    with pytest.raises(FileNotFoundError, match="val"):
        find_pairs(split, "val")


def test_find_pairs_errors_name_the_culprit(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing_root"):
        find_pairs(tmp_path / "missing_root")
    with pytest.raises(ValueError, match="blur_key"):
        find_pairs(tmp_path, blur_key="sharp")

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="empty"):
        find_pairs(empty)
    (empty / "train").mkdir()
    with pytest.raises(DatasetError, match=r"empty/train"):
        find_pairs(empty, "train")

    root = make_gopro(tmp_path / "g", splits=("train",))
    with pytest.raises(FileNotFoundError, match=r"g/test"):
        find_pairs(root, "test")
    seq = root / "train" / "GOPR0002_11_00"
    (seq / "sharp" / "000002.png").unlink()
    with pytest.raises(DatasetError, match=r"GOPR0002_11_00/blur/000002.png.*no sharp twin"):
        find_pairs(root, "train")
    (seq / "blur_gamma" / "000002.png").unlink()
    _save(seq / "sharp" / "000009.png", _pixels(0))
    with pytest.raises(DatasetError, match=r"sharp/000009.png.*no blurry twin"):
        find_pairs(root, "train", "blur_gamma")
    for f in (seq / "blur").iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match=r"GOPR0002_11_00/blur'? contains no images"):
        find_pairs(root, "train")
    (seq / "blur").rmdir()
    with pytest.raises(DatasetError, match=r"Missing folder .*GOPR0002_11_00/blur"):
        find_pairs(root, "train")


def _pair(tmp_path, name, blur_pixels, sharp_pixels, ext=".png"):
    return ImagePair(
        _save(tmp_path / "blur" / (name + ext), blur_pixels),
        _save(tmp_path / "sharp" / (name + ext), sharp_pixels),
        name + ext,
    )


def test_validate_pairs_reports_every_bad_file(tmp_path):
    good = _pair(tmp_path, "good", _pixels(1), _pixels(2))
    gray = _pair(tmp_path, "gray", _pixels(1)[..., 0], _pixels(2)[..., 0])
    rgba = np.concatenate([_pixels(3), np.full((H, W, 1), 255, np.uint8)], axis=-1)
    opaque = _pair(tmp_path, "opaque", rgba, _pixels(4))
    validate_pairs([good, gray, opaque], min_size=(H, W))

    mismatch = _pair(tmp_path, "mismatch", _pixels(1), _pixels(2, h=H, w=W - 2))
    rgba[0, 0, 3] = 0
    transparent = _pair(tmp_path, "transparent", rgba, _pixels(4))
    truncated = _pair(tmp_path, "truncated", _pixels(5), _pixels(6))
    data = truncated.sharp.read_bytes()
    truncated.sharp.write_bytes(data[: len(data) * 2 // 3])
    garbage = _pair(tmp_path, "garbage", _pixels(5), _pixels(6))
    garbage.blur.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    bmp = ImagePair(_save(tmp_path / "blur" / "bmp.bmp", _pixels(7)), good.sharp, "bmp.bmp")
    gone = ImagePair(tmp_path / "blur" / "gone.png", good.sharp, "gone.png")

    bad = [mismatch, transparent, truncated, garbage, bmp, gone]
    with pytest.raises(DatasetError) as info:
        validate_pairs([good, *bad])
    message = str(info.value)
    assert message.startswith("6 problem(s) in 7 image pairs")
    assert "good.png" not in message
    for needle in (
        "mismatch.png",
        f"is {H}x{W}",
        f"{H}x{W - 2}",
        "transparent.png",
        "sharp/truncated.png' is truncated",
        "blur/garbage.png",
        "bmp.bmp' is BMP",
        "gone.png",
    ):
        assert needle in message, needle

    with pytest.raises(DatasetError, match=rf"good.png.*{H}x{W}.*smaller than the 64x64"):
        validate_pairs([good], min_size=64)
    with pytest.raises(DatasetError, match="empty"):
        validate_pairs([])
    with pytest.raises(ValueError, match="min_size"):
        validate_pairs([good], min_size="big")


def test_validate_decode_finds_corrupt_data_inside_a_wellformed_png(tmp_path):
    pair = _pair(tmp_path, "bits", _pixels(1, 64, 64), _pixels(2, 64, 64))
    data = bytearray(pair.blur.read_bytes())
    start = data.index(b"IDAT") + 4
    data[start + 100 : start + 400] = bytes(300)  # scribble over compressed data
    pair.blur.write_bytes(bytes(data))
    validate_pairs([pair])  # the chunk structure is intact: the cheap check passes
    with pytest.raises(DatasetError, match="blur/bits.png"):
        validate_pairs([pair], decode=True)
    with pytest.raises(DatasetError, match="Size mismatch.*a.png"):
        load_pair(_pair(tmp_path, "a", _pixels(1), _pixels(2, h=H - 1)))


def test_resolve_data(tmp_path):
    assert resolve_data(str(tmp_path)) == tmp_path
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        resolve_data(tmp_path / "no_such_dir")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="file.txt"):
        resolve_data(tmp_path / "file.txt")
