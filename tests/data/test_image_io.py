"""tfdeblur.data.image_io: reading (8/16 bit, gray, alpha, palette), header info, atomic writes."""

import os

import numpy as np
import pytest
from PIL import Image

from tfdeblur.data.image_io import (
    DATASET_EXTENSIONS,
    READ_EXTENSIONS,
    ImageInfo,
    read_image,
    read_image_info,
    verify_image,
    write_image,
)


def _rgb8(h=12, w=10, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _psnr(a, b):
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return 10.0 * np.log10(1.0 / mse)


def test_read_8bit_rgb_png_is_value_over_255(tmp_path):
    pixels = _rgb8()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.dtype == np.float32 and image.shape == (12, 10, 3)
    np.testing.assert_array_equal(image, pixels.astype(np.float32) / np.float32(255))


def test_read_16bit_rgb_png_is_value_over_65535(tmp_path):
    import tensorflow as tf

    pixels = np.random.default_rng(1).integers(0, 65536, (9, 7, 3)).astype(np.uint16)
    pixels[0, 0] = (0, 65535, 257)
    (tmp_path / "a.png").write_bytes(tf.io.encode_png(pixels).numpy())
    image = read_image(tmp_path / "a.png")
    # Pillow would truncate these to 8 bits; every 16-bit level must survive.
    np.testing.assert_array_equal(image, pixels.astype(np.float32) / np.float32(65535))
    assert read_image_info(tmp_path / "a.png") == ImageInfo(9, 7, 3, 16)


def test_read_16bit_gray_png_replicated(tmp_path):
    gray = (np.arange(20).reshape(4, 5) * 3000 + 7).astype(np.uint16)
    Image.fromarray(gray).save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png")
    expected = gray.astype(np.float32) / np.float32(65535)
    for c in range(3):
        np.testing.assert_array_equal(image[..., c], expected)
    assert read_image_info(tmp_path / "g.png") == ImageInfo(4, 5, 1, 16)


def test_read_gray_palette_and_opaque_alpha_converted(tmp_path):
    pixels = _rgb8()
    gray = pixels[..., 0]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    np.testing.assert_array_equal(
        read_image(tmp_path / "gray.png"), np.repeat(gray[..., None], 3, -1) / np.float32(255)
    )
    rgba = np.concatenate([pixels, np.full((12, 10, 1), 255, np.uint8)], axis=-1)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), pixels / np.float32(255))
    assert read_image_info(tmp_path / "rgba.png").channels == 4
    palette = Image.fromarray(pixels).quantize(colors=16)
    palette.save(tmp_path / "p.png")
    np.testing.assert_array_equal(
        read_image(tmp_path / "p.png"),
        np.asarray(palette.convert("RGB")) / np.float32(255),
    )


def test_transparent_alpha_refused_naming_file(tmp_path):
    rgba = np.concatenate([_rgb8(), np.full((12, 10, 1), 255, np.uint8)], axis=-1)
    rgba[3, 4, 3] = 128
    Image.fromarray(rgba).save(tmp_path / "holes.png")
    with pytest.raises(ValueError, match="holes.png.*transparency"):
        read_image(tmp_path / "holes.png")
    with pytest.raises(ValueError, match="holes.png"):
        verify_image(tmp_path / "holes.png")


def test_jpeg_and_bmp_read(tmp_path):
    pixels = _rgb8(16, 16)
    Image.fromarray(pixels).save(tmp_path / "a.bmp")
    np.testing.assert_array_equal(read_image(tmp_path / "a.bmp"), pixels / np.float32(255))
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=98)
    decoded = np.asarray(Image.open(tmp_path / "a.jpg").convert("RGB"))
    np.testing.assert_array_equal(read_image(tmp_path / "a.jpg"), decoded / np.float32(255))


def test_one_list_of_image_extensions(tmp_path):
    """READ_EXTENSIONS is the one list: every entry is read by read_image, datasets scan a
    subset of it, and the deblur CLI and frame folders use it as it is."""
    import tfdeblur.data as data
    import tfdeblur.data.video_io as video_io
    import tfdeblur.infer.files as files

    pixels = _rgb8(9, 11)
    for ext in READ_EXTENSIONS:
        Image.fromarray(pixels).save(
            tmp_path / f"a{ext}", **({"lossless": True} if ext == ".webp" else {})
        )
        image = read_image(tmp_path / f"a{ext}")
        assert image.shape == (9, 11, 3), ext
        if ext not in (".jpg", ".jpeg"):  # lossless formats
            np.testing.assert_array_equal(image, pixels / np.float32(255), err_msg=ext)
    assert set(DATASET_EXTENSIONS) <= set(READ_EXTENSIONS)
    assert data.IMAGE_EXTENSIONS is DATASET_EXTENSIONS
    assert files.IMAGE_EXTENSIONS is READ_EXTENSIONS
    assert video_io.FRAME_EXTENSIONS is READ_EXTENSIONS


def test_exif_orientation_only_on_request(tmp_path):
    pixels = _rgb8(8, 12)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    Image.fromarray(pixels).save(tmp_path / "a.jpg", exif=exif, quality=100)
    stored = read_image(tmp_path / "a.jpg")
    assert stored.shape == (8, 12, 3)  # as stored: what tf.io.decode_jpeg gives training
    upright = read_image(tmp_path / "a.jpg", exif_orientation=True)
    np.testing.assert_array_equal(upright, np.rot90(stored, k=-1))  # clockwise


def test_gopro_samples_read_and_psnr(gopro_samples):
    blur = read_image(gopro_samples / "Istanbul_blur1.png")
    sharp = read_image(gopro_samples / "Istanbul_sharp1.png")
    assert blur.shape == sharp.shape == (720, 1280, 3)
    assert verify_image(gopro_samples / "Istanbul_blur1.png") == ImageInfo(720, 1280, 3, 8)
    # The GOPRO samples' README: Istanbul 24.05 dB, Flower 25.11 dB (blur) and 24.59 dB
    # (blur_gamma), blurry vs sharp.
    assert _psnr(blur, sharp) == pytest.approx(24.05, abs=0.01)
    flower = read_image(gopro_samples / "Flower_sharp1.png")
    linear = read_image(gopro_samples / "Flower_blur1.png")
    gamma = read_image(gopro_samples / "Flower_blur_gamma1.png")
    assert _psnr(linear, flower) == pytest.approx(25.11, abs=0.01)
    assert _psnr(gamma, flower) == pytest.approx(24.59, abs=0.01)
    # Averaging after x ** 2.2 gives a power mean >= the plain mean: GOPRO's blur_gamma is
    # never darker than its blur (to rounding), the convention the demo dataset follows.
    assert np.all(gamma >= linear - 1.0 / 255 - 1e-6) and gamma.mean() > linear.mean()


def test_missing_unreadable_and_truncated_files_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "junk.png").write_bytes(b"this is not an image at all")
    with pytest.raises(ValueError, match="junk.png"):
        read_image(tmp_path / "junk.png")
    with pytest.raises(ValueError, match="junk.png"):
        read_image_info(tmp_path / "junk.png")

    Image.fromarray(_rgb8(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    # The header is intact, so the info is there; decoding or verifying is refused.
    assert read_image_info(tmp_path / "cut.png") == ImageInfo(64, 64, 3, 8)
    with pytest.raises(ValueError, match="cut.png.*truncated"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(ValueError, match="cut.png.*truncated"):
        verify_image(tmp_path / "cut.png")
    # Only IEND missing: Pillow alone would accept it, TensorFlow's decoder would not.
    (tmp_path / "noend.png").write_bytes(data[:-12])
    with pytest.raises(ValueError, match="noend.png.*IEND"):
        read_image(tmp_path / "noend.png")
    with pytest.raises(ValueError, match="noend.png.*IEND"):
        verify_image(tmp_path / "noend.png")
    # Bytes after IEND are tolerated (as TensorFlow's decoder does).
    (tmp_path / "tail.png").write_bytes(data + b"trailing bytes")
    assert verify_image(tmp_path / "tail.png") == ImageInfo(64, 64, 3, 8)
    np.testing.assert_array_equal(
        read_image(tmp_path / "tail.png"), read_image(tmp_path / "full.png")
    )

    Image.fromarray(_rgb8(64, 64)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.jpg"):
        verify_image(tmp_path / "cut.jpg")
    assert verify_image(tmp_path / "full.jpg") == ImageInfo(64, 64, 3, 8)


def test_verify_refuses_formats_the_pipeline_cannot_decode(tmp_path):
    Image.fromarray(_rgb8()).save(tmp_path / "a.bmp")
    with pytest.raises(ValueError, match="a.bmp.*BMP"):
        verify_image(tmp_path / "a.bmp")
    Image.fromarray(_rgb8()).convert("CMYK").save(tmp_path / "c.jpg")
    with pytest.raises(ValueError, match="c.jpg.*CMYK"):
        read_image(tmp_path / "c.jpg")


def test_write_png_8bit_roundtrip_clamps_and_rounds_once(tmp_path):
    pixels = _rgb8()
    image = pixels / np.float32(255)
    path = write_image(tmp_path / "sub" / "dir" / "a.png", image)  # parents created
    np.testing.assert_array_equal(np.asarray(Image.open(path)), pixels)
    np.testing.assert_array_equal(read_image(path), image)

    values = np.array([-0.5, 0.0, 10.4 / 255, 10.6 / 255, 1.0, 7.0], np.float32)
    write_image(tmp_path / "c.png", np.tile(values, (2, 1)))  # 2-D: grayscale
    stored = np.asarray(Image.open(tmp_path / "c.png"))[0]
    np.testing.assert_array_equal(stored, [0, 0, 10, 11, 255, 255])


def test_write_png_16bit(tmp_path):
    image = np.random.default_rng(2).random((5, 6, 3)).astype(np.float32)
    write_image(tmp_path / "a.png", image, bit_depth=16)
    assert read_image_info(tmp_path / "a.png") == ImageInfo(5, 6, 3, 16)
    expected = np.rint(image.astype(np.float64) * 65535) / 65535
    np.testing.assert_allclose(read_image(tmp_path / "a.png"), expected, atol=1e-7)
    with pytest.raises(ValueError, match="a.jpg"):
        write_image(tmp_path / "a.jpg", image, bit_depth=16)


def test_write_jpeg_by_extension(tmp_path):
    image = np.full((16, 16, 3), 0.5, np.float32)
    write_image(tmp_path / "a.JPEG", image)
    with Image.open(tmp_path / "a.JPEG") as im:
        assert im.format == "JPEG"
    np.testing.assert_allclose(read_image(tmp_path / "a.JPEG"), 128 / 255, atol=2 / 255)
    with pytest.raises(ValueError, match="a.gif"):
        write_image(tmp_path / "a.gif", image)


def test_write_is_atomic_and_failures_keep_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.png"
    write_image(path, np.zeros((4, 4, 3), np.float32))
    write_image(path, np.ones((4, 4, 3), np.float32))  # overwrite
    assert sorted(os.listdir(tmp_path)) == ["out.png"]  # no temporary files left
    original = path.read_bytes()

    bad = np.zeros((4, 4, 3), np.float32)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="out.png.*NaN"):
        write_image(path, bad)
    with pytest.raises(ValueError, match="out.png.*shape"):
        write_image(path, np.zeros((4, 4, 2), np.float32))

    def failing_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        write_image(path, np.full((4, 4, 3), 0.5, np.float32))
    assert path.read_bytes() == original
    assert sorted(os.listdir(tmp_path)) == ["out.png"]
