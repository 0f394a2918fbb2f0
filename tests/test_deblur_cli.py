"""``tfdeblur deblur`` end to end and the Python API ``tfdeblur.deblur``."""

import os
import subprocess
import sys

import imageio.v2 as imageio
import keras
import numpy as np
import pytest
from PIL import Image

import tfdeblur
from tests.utils import REPO, import_or_skip
from tfdeblur.cli import main
from tfdeblur.data.image_io import read_image, read_image_info, write_image
from tfdeblur.infer.files import plan_jobs
from tfdeblur.infer.runners import KerasRunner, Runner, load_runner
from tfdeblur.infer.video import deblur_video as deblur_video_file
from tfdeblur.infer.video import stream_video_model

LSB8 = 1 / 255


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """Residual 2-conv network saved as .keras: output = x + conv(tanh(conv(x)))."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="tanh")(inputs)
    x = keras.layers.Conv2D(3, 3, padding="same")(x)
    model = keras.Model(inputs, keras.layers.Add()([inputs, x]), name="small")
    path = tmp_path_factory.mktemp("model") / "small.keras"
    model.save(path)
    return path, model


def reference(model, image):
    """The network's output on a float image, clamped: what every output must hold."""
    return np.clip(np.asarray(model(image[None].astype(np.float32)))[0], 0, 1)


def write_video(path, frames, fps=12.5, lossless=True):
    options = (
        {"codec": "libx264rgb", "pixelformat": "rgb24", "output_params": ["-crf", "0"]}
        if lossless
        else {"codec": "libx264", "pixelformat": "yuv444p"}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio.get_writer(
        str(path), format="FFMPEG", fps=fps, quality=None, macro_block_size=1,
        ffmpeg_log_level="error", **options,
    )  # fmt: skip
    for frame in frames:
        writer.append_data(frame)
    writer.close()


def read_video(path):
    with imageio.get_reader(str(path), format="FFMPEG") as reader:
        return reader.get_meta_data(), [np.asarray(f) for f in reader]


def test_folder_end_to_end(tmp_path, small_model, capsys):
    model_path, model = small_model
    rng = np.random.default_rng(0)
    src = tmp_path / "photos"
    rgb = rng.uniform(size=(33, 47, 3))
    deep = rng.uniform(size=(21, 19, 3))
    gray = rng.uniform(size=(25, 30))
    write_image(src / "odd.png", rgb)
    write_image(src / "trip" / "day1" / "deep.png", deep, bit_depth=16)
    write_image(src / "trip" / "gray.png", gray)
    write_image(src / "trip" / "photo.jpg", rng.uniform(size=(40, 41, 3)))
    (src / "trip" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    (src / "notes.txt").write_text("not an image")
    frames = [(rng.uniform(size=(29, 37, 3)) * 255).astype(np.uint8) for _ in range(4)]
    write_video(src / "clips" / "shaky.mkv", frames)

    out = tmp_path / "sharp"
    rc = main(
        ["deblur", str(src), "-o", str(out), "--model", str(model_path), "--codec", "lossless"]
    )
    captured = capsys.readouterr()
    assert rc == 1  # one file failed
    assert "broken.png" in captured.err and "5 of 6" in captured.out

    produced = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert produced == [
        "clips/shaky.mkv",
        "odd.png",
        "trip/day1/deep.png",
        "trip/gray.png",
        "trip/photo.jpg",
    ]  # fmt: skip  (tree mirrored, no temporary files left, nothing for the broken file)

    # 8-bit RGB, odd size: the model output rounded once.
    got = read_image(out / "odd.png")
    np.testing.assert_allclose(
        got, reference(model, read_image(src / "odd.png")), atol=0.5 * LSB8 + 1e-6
    )
    # 16-bit stays 16-bit, with 16-bit precision.
    assert read_image_info(out / "trip/day1/deep.png").bit_depth == 16
    expected = reference(model, read_image(src / "trip/day1/deep.png"))
    np.testing.assert_allclose(read_image(out / "trip/day1/deep.png"), expected, atol=1e-4)
    # Grayscale stays grayscale: the mean of the network's three output channels.
    assert read_image_info(out / "trip/gray.png").channels == 1
    expected = reference(model, read_image(src / "trip/gray.png")).mean(axis=-1)
    np.testing.assert_allclose(
        read_image(out / "trip/gray.png")[..., 0], expected, atol=0.5 * LSB8 + 1e-6
    )
    # JPEG stays JPEG (lossy: loose check of size and values).
    assert read_image_info(out / "trip/photo.jpg").height == 40
    # Video: frame count, size and frame rate kept; frames are the network's output.
    meta, got_frames = read_video(out / "clips" / "shaky.mkv")
    assert meta["fps"] == pytest.approx(12.5) and len(got_frames) == 4
    for frame, result in zip(frames, got_frames, strict=True):
        expected = np.rint(reference(model, frame.astype(np.float32) / 255) * 255)
        assert np.abs(result.astype(np.float64) - expected).max() <= 1


def test_single_file_with_tiles_and_compare(tmp_path, small_model):
    model_path, model = small_model
    image = np.random.default_rng(1).uniform(size=(70, 90, 3))
    write_image(tmp_path / "in.png", image)
    rc = main([
        "deblur", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"),
        "--model", str(model_path), "--tile", "32", "--overlap", "16", "--compare", "-q",
    ])  # fmt: skip
    assert rc == 0
    # 2 convs see 2 px < overlap / 4: tiled == untiled, up to float rounding before the
    # 8-bit rounding.
    expected = np.rint(reference(model, read_image(tmp_path / "in.png")) * 255)
    got = read_image(tmp_path / "out.png") * 255
    assert np.abs(got - expected).max() <= 1
    assert np.mean(got != expected) < 0.001
    compare = read_image(tmp_path / "out.compare.png")
    # Layout: two 90-px panels + gap on top; crop of 17 px zoomed 5x below.
    assert compare.shape == (70 + 8 + 85, 2 * 90 + 8, 3)


def test_sideways_phone_photo_comes_out_upright(tmp_path, small_model):
    """A JPEG stored sideways with an EXIF Orientation tag: the output (which has no EXIF)
    holds the upright pixels, as a viewer shows the input."""
    model_path, model = small_model
    pixels = (np.random.default_rng(10).uniform(size=(20, 30, 3)) * 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(pixels).save(tmp_path / "phone.jpg", exif=exif, quality=100)
    rc = main(["deblur", str(tmp_path / "phone.jpg"), "-o", str(tmp_path / "out.png"),
               "--model", str(model_path), "-q"])  # fmt: skip
    assert rc == 0
    upright = np.rot90(read_image(tmp_path / "phone.jpg"), k=-1)
    got = read_image(tmp_path / "out.png")
    assert got.shape == (30, 20, 3)
    assert np.abs(got - reference(model, upright)).max() <= 0.5 * LSB8 + 1e-6


def test_refuses_to_overwrite_an_input_and_names_it(tmp_path, small_model, capsys):
    model_path, _ = small_model
    write_image(tmp_path / "a.png", np.full((20, 20, 3), 0.5))
    before = (tmp_path / "a.png").read_bytes()
    rc = main(["deblur", str(tmp_path), "-o", str(tmp_path), "--model", str(model_path)])
    assert rc == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (tmp_path / "a.png").read_bytes() == before


def test_plan_jobs_layouts_and_collisions(tmp_path):
    for rel in ("x/a.png", "x/sub/b.tif", "y/a.png", "c.mp4"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    jobs = plan_jobs([tmp_path / "x"], tmp_path / "o")
    assert [(j.target.relative_to(tmp_path).as_posix(), j.kind) for j in jobs] == [
        ("o/a.png", "image"), ("o/sub/b.png", "image"),  # TIFF cannot be written: PNG
    ]  # fmt: skip
    jobs = plan_jobs([tmp_path / "x", tmp_path / "y", tmp_path / "c.mp4"], tmp_path / "o", "jpg")
    assert [j.target.relative_to(tmp_path).as_posix() for j in jobs] == [
        "o/x/a.jpg", "o/x/sub/b.jpg", "o/y/a.jpg", "o/c.mp4",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="would both be written"):
        plan_jobs([tmp_path / "x" / "a.png", tmp_path / "y" / "a.png"], tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="missing"):
        plan_jobs([tmp_path / "missing.png"], tmp_path / "o")
    with pytest.raises(ValueError, match="video input needs a video output"):
        plan_jobs([tmp_path / "c.mp4"], tmp_path / "o.png")


def test_plan_jobs_checks_compare_images(tmp_path):
    """--compare writes NAME.compare.png beside each output: those paths may neither
    collide nor overwrite an input."""
    for rel in ("p/a.png", "p/a.jpg", "q/b.png", "q/b.compare.png", "r/c.png", "r/c.mp4"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    # a.png and a.jpg have distinct outputs, but one comparison image.
    assert len(plan_jobs([tmp_path / "p"], tmp_path / "o")) == 2
    with pytest.raises(ValueError, match=r"would both be written to .*a\.compare\.png"):
        plan_jobs([tmp_path / "p"], tmp_path / "o", compare=True)
    # b.png's comparison image is where the input b.compare.png's output goes.
    with pytest.raises(ValueError, match=r"would both be written to .*b\.compare\.png"):
        plan_jobs([tmp_path / "q"], tmp_path / "o", compare=True)
    # An image and a video of one name: again one comparison image.
    with pytest.raises(ValueError, match=r"c\.compare\.png"):
        plan_jobs([tmp_path / "r"], tmp_path / "o", compare=True)
    # Writing next to the input: the comparison image of q/b.png would be the input.
    with pytest.raises(ValueError, match="is an input file"):
        plan_jobs([tmp_path / "q" / "b.compare.png"], tmp_path / "q" / "b.png", compare=True)
    # The CLI plans with --compare before loading the model: exit 2, nothing written.
    rc = main(["deblur", str(tmp_path / "p"), "-o", str(tmp_path / "o2"), "--model", "nope.keras",
               "--compare"])  # fmt: skip
    assert rc == 2 and not (tmp_path / "o2").exists()


def test_python_api(tmp_path, small_model):
    model_path, model = small_model
    rng = np.random.default_rng(2)
    image8 = (rng.uniform(size=(37, 45, 3)) * 255).astype(np.uint8)
    expected = reference(model, image8.astype(np.float32) / 255)

    out8 = tfdeblur.deblur(image8, model=str(model_path))
    assert out8.dtype == np.uint8 and out8.shape == image8.shape
    np.testing.assert_array_equal(out8, np.rint(expected * 255).astype(np.uint8))

    out_f = tfdeblur.deblur(image8.astype(np.float32) / 255, model=model_path, tile=32, overlap=16)
    assert out_f.dtype == np.float32
    np.testing.assert_allclose(out_f, expected, atol=1e-5)

    out_auto = tfdeblur.deblur(image8, model=model_path, tile="auto")  # fits: one pass
    np.testing.assert_array_equal(out_auto, out8)

    gray = rng.uniform(size=(30, 31)).astype(np.float32)
    out_g = tfdeblur.deblur(gray, model=model)
    assert out_g.shape == (30, 31)
    expected_g = reference(model, np.repeat(gray[..., None], 3, -1)).mean(-1)
    np.testing.assert_allclose(out_g, expected_g, atol=1e-6)
    # The input's layout and dtype: (H, W, 1) stays (H, W, 1), float64 stays float64,
    # uint16 is rounded once to 16 bits.
    out_g1 = tfdeblur.deblur(gray[..., None].astype(np.float64), model=model)
    assert out_g1.shape == (30, 31, 1) and out_g1.dtype == np.float64
    np.testing.assert_allclose(out_g1[..., 0], expected_g, atol=1e-6)
    gray16 = np.rint(gray * 65535).astype(np.uint16)[..., None]
    out16 = tfdeblur.deblur(gray16, model=model)
    assert out16.shape == (30, 31, 1) and out16.dtype == np.uint16
    expected16 = reference(model, np.repeat(gray16.astype(np.float32) / 65535, 3, -1)).mean(-1)
    # rounded once: at most one 16-bit level from float32 noise between two runs
    assert np.abs(out16[..., 0] - np.rint(expected16 * 65535)).max() <= 1

    write_image(tmp_path / "p.png", image8)
    np.testing.assert_allclose(
        tfdeblur.deblur(tmp_path / "p.png", model=model_path), expected, atol=1e-6
    )
    with pytest.raises(ValueError, match="shape"):
        tfdeblur.deblur(np.zeros((4, 4, 2), np.float32), model=model)
    with pytest.raises(ValueError, match="tile"):
        tfdeblur.deblur(gray, model=model, tile="big")
    with pytest.raises(ValueError, match="overlap"):  # checked even when one tile suffices
        tfdeblur.deblur(gray, model=model, tile=64, overlap=40)


def test_tflite_and_onnx_models(tmp_path, small_model):
    export = import_or_skip("export")
    import_or_skip("ai_edge_litert")
    import_or_skip("onnxruntime")
    _, model = small_model
    image = np.random.default_rng(3).uniform(size=(27, 35, 3)).astype(np.float32)
    expected = np.asarray(model(image[None]))[0]
    export.tflite(model, tmp_path / "m.tflite", verify=False, verbose=False)
    export.onnx(model, tmp_path / "m.onnx", verify=False, verbose=False)
    calib = [
        np.random.default_rng(i).uniform(size=(32, 32, 3)).astype(np.float32) for i in range(4)
    ]
    export.tflite(
        model, tmp_path / "m_int8.tflite", quantization="int8", representative_data=calib,
        verify=False, verbose=False,
    )  # fmt: skip
    for name, atol in (("m.tflite", 1e-5), ("m.onnx", 1e-5), ("m_int8.tflite", 0.05)):
        runner = load_runner(tmp_path / name)
        assert runner.kind == name.rsplit(".", 1)[1]
        np.testing.assert_allclose(runner(image), expected, atol=atol, err_msg=name)
        # a second shape: the input is resized
        np.testing.assert_allclose(
            runner(image[:20, :21]), np.asarray(model(image[None, :20, :21]))[0], atol=atol
        )
    assert (
        load_runner(tmp_path / "m_int8.tflite").interpreter.get_input_details()[0]["dtype"]
        == np.uint8
    )

    write_image(tmp_path / "in.png", np.random.default_rng(4).uniform(size=(45, 70, 3)))
    rc = main(["deblur", str(tmp_path / "in.png"), "-o", str(tmp_path / "o.png"),
               "--model", str(tmp_path / "m.onnx"), "--tile", "32", "--overlap", "16", "-q"])  # fmt: skip
    assert rc == 0
    expected = np.rint(reference(model, read_image(tmp_path / "in.png")) * 255)
    got = read_image(tmp_path / "o.png") * 255
    # An .onnx model cannot be inspected: tiles start on multiples of 16 and the image is
    # zero-padded to that grid, which may only change the last 2 px (the receptive field)
    # before the bottom/right border.
    assert np.abs(got - expected)[:-2, :-2].max() <= 1


def test_fixed_size_tflite_runs_any_image_in_tiles(tmp_path, small_model, capsys):
    """A model exported with --input-size runs on other sizes: tiles of its fixed size,
    and an image smaller than it is zero-padded up to it."""
    export = import_or_skip("export")
    import_or_skip("ai_edge_litert")
    model_path, model = small_model
    export.tflite(
        model, tmp_path / "fixed.tflite", input_size=(32, 40), verify=False, verbose=False
    )
    assert load_runner(tmp_path / "fixed.tflite").input_size == (32, 40)
    rng = np.random.default_rng(7)
    write_image(tmp_path / "in" / "big.png", rng.uniform(size=(45, 70, 3)))
    write_image(tmp_path / "in" / "small.png", rng.uniform(size=(20, 25, 3)))
    write_image(tmp_path / "in" / "exact.png", rng.uniform(size=(32, 40, 3)))
    rc = main(["deblur", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
               "--model", str(tmp_path / "fixed.tflite"), "--overlap", "16"])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "big.png" in captured.err and "tiles of 32x40" in captured.err
    for name in ("big.png", "small.png", "exact.png"):
        source = read_image(tmp_path / "in" / name)
        got = read_image(tmp_path / "out" / name) * 255
        assert got.shape == source.shape
        expected = np.rint(reference(model, source) * 255)
        # Exact up to the bottom/right receptive field (2 px), where the zero padding to
        # the tile shows.
        assert np.abs(got - expected)[:-2, :-2].max() <= 1, name


def test_sarn_video_streams_its_recurrence(tmp_path):
    """Streaming (frame by frame with look-ahead) equals the clip model; the CLI path too."""
    keras.utils.set_random_seed(0)
    model = tfdeblur.build_model("sarn_video", preset="tiny")
    rng = np.random.default_rng(4)
    frames8 = [(rng.uniform(size=(20, 22, 3)) * 255).astype(np.uint8) for _ in range(5)]
    clip = np.stack(frames8)[None].astype(np.float32) / 255
    expected = np.asarray(model(clip))[0]
    streamed = np.stack(list(stream_video_model(model, list(clip[0]))))
    np.testing.assert_allclose(streamed, expected, atol=1e-5)

    write_video(tmp_path / "in.mkv", frames8, fps=24)
    info = deblur_video_file(
        KerasRunner(model), tmp_path / "in.mkv", tmp_path / "out.mkv", codec="lossless"
    )
    assert info["frames"] == 5 and info["fps"] == pytest.approx(24)
    _, got = read_video(tmp_path / "out.mkv")
    target = np.rint(np.clip(expected, 0, 1) * 255)
    assert (
        max(np.abs(g.astype(np.float64) - t).max() for g, t in zip(got, target, strict=True)) <= 1
    )


def test_default_mp4_odd_size_and_corrupt_video(tmp_path, small_model, capsys):
    model_path, _ = small_model
    rng = np.random.default_rng(5)
    frames = [(rng.uniform(size=(27, 35, 3)) * 255).astype(np.uint8) for _ in range(3)]
    write_video(tmp_path / "in" / "a.mp4", frames, fps=30, lossless=False)
    (tmp_path / "in" / "b.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    rc = main(
        [
            "deblur",
            str(tmp_path / "in"),
            "-o",
            str(tmp_path / "out"),
            "--model",
            str(model_path),
            "-q",
        ]
    )
    assert rc == 1
    assert "b.mp4" in capsys.readouterr().err
    meta, got = read_video(tmp_path / "out" / "a.mp4")
    assert meta["fps"] == pytest.approx(30) and len(got) == 3 and got[0].shape == (27, 35, 3)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.mp4"]


def test_console_script_end_to_end(tmp_path, small_model):
    """The installed entry point, in a fresh process: one photo in, one photo out."""
    model_path, model = small_model
    write_image(tmp_path / "photo.jpg", np.random.default_rng(6).uniform(size=(31, 33, 3)))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1"}
    result = subprocess.run(
        [sys.executable, "-m", "tfdeblur", "deblur", str(tmp_path / "photo.jpg"),
         "-o", str(tmp_path / "photo_sharp.jpg"), "--model", str(model_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 of 1 file(s) deblurred" in result.stdout
    assert read_image_info(tmp_path / "photo_sharp.jpg")[:2] == (31, 33)


def test_comparison_crop_is_where_the_output_changed():
    from tfdeblur.infer.compare import GAP, comparison_image, pick_crop

    before = np.full((60, 80, 3), 0.2, np.float32)
    after = before.copy()
    after[30:40, 50:62] = 0.9  # the only change: a 10 x 12 block
    # Every 15 x 15 window holding the whole block scores the same; the first one in
    # row-major order starts at (40 - 15, 62 - 15).
    assert pick_crop(before, after, 15) == (25, 47)
    image = comparison_image(before, after, labels=None)
    size = 16  # clip(min(60, 80) // 4, 16, 256)
    top, left = pick_crop(before, after, size)
    zoom = 80 // size
    below = image[60 + GAP :, 80 + GAP :][: size * zoom, : size * zoom]
    expected = np.repeat(np.repeat(after[top : top + size, left : left + size], zoom, 0), zoom, 1)
    np.testing.assert_array_equal(below, expected)
    # the crop is outlined on the top panels
    assert np.allclose(image[top - 1, left + 3], (1.0, 0.15, 0.1))


class FailingRunner(Runner):
    """An image network (the identity) that fails on its third frame."""

    def __init__(self):
        super().__init__("failing")
        self.calls = 0

    def _run(self, x):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("out of memory on frame 3")
        return x


def test_video_written_atomically(tmp_path):
    """A failure after some frames were encoded leaves neither the output nor a temporary
    file; an existing output is kept as it was."""
    rng = np.random.default_rng(8)
    frames = [(rng.uniform(size=(16, 18, 3)) * 255).astype(np.uint8) for _ in range(4)]
    write_video(tmp_path / "in.mkv", frames)
    with pytest.raises(RuntimeError, match="frame 3"):
        deblur_video_file(FailingRunner(), tmp_path / "in.mkv", tmp_path / "out" / "new.mkv")
    assert list((tmp_path / "out").iterdir()) == []
    (tmp_path / "out" / "old.mkv").write_bytes(b"previous result")
    with pytest.raises(RuntimeError, match="frame 3"):
        deblur_video_file(FailingRunner(), tmp_path / "in.mkv", tmp_path / "out" / "old.mkv")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["old.mkv"]
    assert (tmp_path / "out" / "old.mkv").read_bytes() == b"previous result"


def test_frame_folder_checks_its_outputs(tmp_path):
    """Frames are any image read_image reads (TIFF too); two frames that would become one
    PNG, or a comparison image landing on a frame, are refused before anything runs."""
    rng = np.random.default_rng(9)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        pixels = (rng.uniform(size=(12, 14, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(frames / f"f{i}.tif")
    info = deblur_video_file(FailingRunner(), frames, tmp_path / "sharp")  # 2 frames: no failure
    assert info["frames"] == 2
    assert sorted(p.name for p in (tmp_path / "sharp").iterdir()) == ["f0.png", "f1.png"]
    np.testing.assert_allclose(
        read_image(tmp_path / "sharp" / "f1.png"), read_image(frames / "f1.tif"), atol=1e-6
    )
    write_image(frames / "f1.png", np.zeros((12, 14, 3)))
    with pytest.raises(ValueError, match="several extensions"):
        deblur_video_file(FailingRunner(), frames, tmp_path / "sharp2")
    (frames / "f1.png").unlink()
    write_image(frames / "out.compare.png", np.zeros((12, 14, 3)))
    with pytest.raises(ValueError, match="would overwrite an input"):
        deblur_video_file(FailingRunner(), frames, frames / "out", compare=True)
    assert not (frames / "out").exists()


def smooth_image(h, w, seed):
    """A photo-like smooth RGB image in [0.1, 0.9]: a few low-frequency sinusoids."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    channels = []
    for _ in range(3):
        fy, fx, phase = rng.uniform(0.3, 1.2), rng.uniform(0.3, 1.2), rng.uniform(0, 2 * np.pi)
        channels.append(0.5 + 0.4 * np.sin(2 * np.pi * (fy * yy + fx * xx) + phase))
    return np.stack(channels, axis=-1)


@pytest.fixture(scope="module")
def smooth_model(tmp_path_factory):
    """A 1x1 network that keeps smooth images smooth (a 3x3 conv's zero padding makes
    sharp borders, which lossy codecs ring at): ``y = 0.6 * x[..., ::-1] + 0.2``, so the
    output differs from the input and a channel swap shows."""
    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(3, 1)
    model = keras.Model(inputs, conv(inputs), name="smooth")
    conv.set_weights([0.6 * np.eye(3, dtype=np.float32)[::-1][None, None], np.full(3, 0.2)])
    path = tmp_path_factory.mktemp("smooth") / "smooth.keras"
    model.save(path)
    return path, model


def test_jpeg_and_mp4_outputs_hold_the_network_output(tmp_path, smooth_model):
    """Lossy outputs by value, against the network's output on the decoded input, in
    levels of 255: the JPEG (quality 95, 4:2:0) within mean 1.5 / max 14 (measured 0.94
    / 9.2), the MP4 frames (H.264 CRF 16, 4:2:0) within mean 4 / max 26 (measured
    2.0-2.6 / 10-17); about 1.5x the measurement, the chroma subsampling of this
    colourful content dominating. Writing the input instead, or swapping channels, is
    off by tens of levels on average."""
    model_path, model = smooth_model
    image = smooth_image(48, 64, 0)
    write_image(tmp_path / "in.png", image)
    assert main(["deblur", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.jpg"),
                 "--model", str(model_path), "-q"]) == 0  # fmt: skip
    expected = reference(model, read_image(tmp_path / "in.png")) * 255
    error = np.abs(read_image(tmp_path / "out.jpg") * 255 - expected)
    assert error.mean() < 1.5 and error.max() <= 14

    frames = [(smooth_image(48, 64, 1 + t) * 255).round().astype(np.uint8) for t in range(3)]
    write_video(tmp_path / "clip.mp4", frames, fps=25)  # lossless input
    assert main(["deblur", str(tmp_path / "clip.mp4"), "-o", str(tmp_path / "out.mp4"),
                 "--model", str(model_path), "-q"]) == 0  # fmt: skip
    meta, got = read_video(tmp_path / "out.mp4")
    assert meta["fps"] == pytest.approx(25) and len(got) == 3
    for frame, result in zip(frames, got, strict=True):
        expected = reference(model, frame.astype(np.float32) / 255) * 255
        error = np.abs(result.astype(np.float64) - expected)
        assert error.mean() < 4 and error.max() <= 26


def test_model_argument_errors(tmp_path, capsys):
    """``--model`` missing, unknown or not a file; ``--tile`` on a video network: exit 2
    with the argument named, nothing written."""
    write_image(tmp_path / "in.png", smooth_image(16, 16, 0))
    args = ["deblur", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png")]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert "required: --model" in capsys.readouterr().err
    assert main([*args, "--model", "nosuchnet"]) == 2
    assert "Unknown model 'nosuchnet'. Registered models: deepdeblur, lcnet" in (
        capsys.readouterr().err
    )
    assert main([*args, "--model", str(tmp_path / "missing.keras")]) == 2
    assert "missing.keras" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="untrained weights"):
        rc = main([*args, "--model", "sarn_video", "--preset", "tiny", "--tile", "32",
                   "--overlap", "8"])  # fmt: skip
    assert rc == 2
    assert "--tile: 'sarn_video' is a recurrent video network" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]
