"""SARN image and video networks: Table 2/3 sizes, any-size inputs, reload in a fresh
process, gradients through the recurrence, streaming inference and ``deblur-video``."""

import functools
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tfdeblur
from tests.utils import REPO, to_numpy

# Table 3 (image network, float32 MB) and Table 2 ("Ours-Recurrent").
TABLE_MB = {"drm0_sa": 10.7, "drm3": 10.9, "drm6": 11.2, "paper": 11.2}
VIDEO_MB = 12.4


def conv(cin, cout, k=3):
    return cin * cout * k * k + cout


def sarn_param_count(
    n=32, r=3, mid=6, drms=6, sa=True, reduction=8, in_ch=3, lstm=None, mid_conv=True
):
    """Sec. 2 / Fig. 1 / Fig. 2 counted by hand (see tfdeblur.models.sarn.sarn)."""
    c = 4 * n
    res = lambda ch: 2 * conv(ch, ch)  # noqa: E731
    total = conv(in_ch, n) + r * res(n) + conv(n, 2 * n) + r * res(2 * n) + conv(2 * n, c)
    total += (mid - drms) * res(c) + drms * (res(c) + conv(c, 18))  # DRM = ResBlock + offsets
    if sa:
        total += 3 * conv(c, c // reduction, 1) + conv(c // reduction, c, 1) + 1
    total += conv(c, c) if mid_conv else 0  # the mid-level's closing conv (a size fit)
    dec_in = c
    if lstm:
        total += 4 * (9 * (c + lstm) * lstm + lstm)
        dec_in = lstm
    total += conv(dec_in, 2 * n) + r * res(2 * n) + conv(2 * n, n) + r * res(n) + conv(n, 3)
    return total


@functools.cache
def built_count(preset):
    return tfdeblur.build_model("sarn", preset).count_params()


@pytest.mark.parametrize("preset", sorted(TABLE_MB))
def test_image_presets_match_table3(preset):
    config = tfdeblur.get_model_config("sarn", preset)
    expected = sarn_param_count(drms=config["num_drms"], sa=config["use_attention"])
    assert built_count(preset) == expected
    size_mb = expected * 4 / 1e6  # float32, MB = 1e6 bytes
    assert abs(size_mb - TABLE_MB[preset]) / TABLE_MB[preset] < 0.05, size_mb


def test_table3_differences_are_offset_convolutions():
    counts = {p: built_count(p) for p in TABLE_MB}
    offset_conv = conv(128, 18)
    assert counts["drm6"] - counts["drm3"] == 3 * offset_conv
    assert counts["paper"] - counts["drm6"] == 8_369  # the SA module
    assert counts["paper"] - counts["drm0_sa"] == 6 * offset_conv
    # build_model(..., num_drms=6, use_attention=True) is the paper preset.
    override = tfdeblur.build_model("sarn", num_drms=6, use_attention=True).count_params()
    assert override == counts["paper"] == 2_791_968


def test_video_preset_matches_table2():
    model = tfdeblur.build_model("sarn_video")
    expected = sarn_param_count(in_ch=15, lstm=64)
    assert model.count_params() == expected == 3_201_184
    assert abs(expected * 4 / 1e6 - VIDEO_MB) / VIDEO_MB < 0.05
    step = model.get_layer("recurrence").step_model
    assert step.count_params() == expected  # the clip model is the step network's weights


def test_literal_presets_parameter_counts():
    """The paper as written: no mid-level closing conv; the video ConvLSTM at the width of
    the encoder features it takes (4n = 128). Both are what the size-fit readings change."""
    image = built_count("literal")
    assert image == sarn_param_count(mid_conv=False) == 2_644_384
    assert built_count("paper") - image == conv(128, 128)  # only the closing conv
    video = tfdeblur.build_model("sarn_video", "literal").count_params()
    assert video == sarn_param_count(in_ch=15, lstm=128, mid_conv=False) == 3_828_000
    # Neither matches Table 3's 11.2 MB / Table 2's 12.4 MB within 5%: why the defaults differ.
    assert abs(image * 4 / 1e6 - 11.2) / 11.2 > 0.05
    assert abs(video * 4 / 1e6 - VIDEO_MB) / VIDEO_MB > 0.05
    x = np.random.default_rng(0).uniform(size=(1, 13, 18, 3)).astype(np.float32)
    assert tfdeblur.build_model("sarn", "literal")(x).shape == x.shape


def test_bad_configurations_raise():
    with pytest.raises(ValueError, match="num_drms"):
        tfdeblur.build_model("sarn", num_drms=7)
    with pytest.raises(ValueError, match="attention_reduction"):
        tfdeblur.build_model("sarn", "tiny", attention_reduction=5)


@pytest.mark.parametrize("name", ["sarn", "sarn_video"])
@pytest.mark.parametrize("preset", ["paper", "tiny"])
def test_train_presets_follow_the_schema(name, preset):
    settings = tfdeblur.get_train_preset(name, preset)
    if name == "sarn":
        assert settings["data"] == "images" and "clip_length" not in settings
    else:
        assert settings["data"] == "clips"
        assert isinstance(settings["clip_length"], int) and settings["clip_length"] >= 3
    assert settings["optimizer"] == "adam"
    assert settings["lr_schedule"]["type"] in ("constant", "step", "multistep")
    assert ("epochs" in settings) != ("iterations" in settings)
    assert set(settings["loss"]) <= {"l1", "mse", "charbonnier", "perceptual"}
    assert settings["blur_key"] in ("blur", "blur_gamma")


@pytest.mark.parametrize("h,w", [(17, 29), (8, 5)])
def test_any_input_size_equals_padded_computation(h, w):
    model = tfdeblur.build_model("sarn", "tiny")
    x = np.random.default_rng(h * w).uniform(size=(1, h, w, 3)).astype(np.float32)
    y = to_numpy(model(x))
    assert y.shape == x.shape
    padded = np.zeros((1, -(-h // 4) * 4, -(-w // 4) * 4, 3), np.float32)
    padded[:, :h, :w] = x
    np.testing.assert_allclose(to_numpy(model(padded))[:, :h, :w], y, rtol=1e-5, atol=1e-5)


def _nonzero_gradients(model, x, y):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((model(x, training=True) - y) ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    return {
        v.path: g is not None and float(tf.reduce_max(tf.abs(g))) > 0
        for v, g in zip(model.trainable_variables, grads, strict=True)
    }


@pytest.mark.tf_only
def test_video_gradients_reach_every_weight_through_the_recurrence():
    model = tfdeblur.build_model("sarn_video", "tiny")
    rng = np.random.default_rng(0)
    clip = rng.uniform(size=(1, 3, 16, 20, 3)).astype(np.float32)
    flows = _nonzero_gradients(model, clip, clip[::-1])
    # The SA projections get no gradient while its residual scale gamma is 0 (SAGAN init);
    # everything else does: the offsets of the DRMs, the ConvLSTM's recurrent kernel (the
    # state is zero only at the first step), every ResBlock.
    dead = sorted(p for p, ok in flows.items() if not ok)
    assert dead and all("mid_attention" in p and "gamma" not in p for p in dead), dead
    assert any("offset_conv" in p for p, ok in flows.items() if ok)
    assert any("recurrent_conv" in p for p, ok in flows.items() if ok)


def _run_saved_models_in_fresh_process(cases, tmp_path):
    """Like tests.utils.load_and_run_in_fresh_process for several models in one process
    (one TensorFlow start-up): ``load_model(safe_mode=True)`` after ``import tfdeblur``."""
    tmp_path = pathlib.Path(tmp_path)
    lines = [
        "import os",
        "os.environ['TF_CPP_MIN_LOG_LEVEL'] = '2'",
        "import numpy as np, keras",
        "import tfdeblur",
    ]
    for k, (path, x) in enumerate(cases):
        np.save(tmp_path / f"in{k}.npy", x)
        lines += [
            f"model = keras.models.load_model({str(path)!r}, safe_mode=True)",
            f"x = np.load({str(tmp_path / f'in{k}.npy')!r})",
            f"np.save({str(tmp_path / f'out{k}.npy')!r}, keras.ops.convert_to_numpy(model(x, training=False)))",
        ]
    result = subprocess.run(
        [sys.executable, "-c", "\n".join(lines)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return [np.load(tmp_path / f"out{k}.npy") for k in range(len(cases))]


def test_image_and_video_models_reload_in_fresh_process(tmp_path):
    image = tfdeblur.build_model("sarn", "tiny")
    # Non-zero offsets and attention, so a reload that lost them would show.
    for layer in image.layers:
        if layer.name.startswith("mid_drm"):
            for w in layer.deform.offset_conv.weights:
                w.assign(np.random.default_rng(2).normal(0, 0.3, w.shape).astype(np.float32))
    image.get_layer("mid_attention").gamma.assign(0.5)
    video = _trained_looking_video_model()
    x = np.random.default_rng(3).uniform(size=(1, 19, 22, 3)).astype(np.float32)
    clip = np.random.default_rng(4).uniform(size=(1, 4, 13, 18, 3)).astype(np.float32)
    image.save(tmp_path / "sarn.keras")
    video.save(tmp_path / "sarn_video.keras")
    got_image, got_video = _run_saved_models_in_fresh_process(
        [(tmp_path / "sarn.keras", x), (tmp_path / "sarn_video.keras", clip)], tmp_path
    )
    np.testing.assert_allclose(got_image, to_numpy(image(x)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_video, to_numpy(video(clip)), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_full_size_networks_run_at_small_size():
    x = np.random.default_rng(5).uniform(size=(1, 20, 28, 3)).astype(np.float32)
    y = to_numpy(tfdeblur.build_model("sarn")(x))
    assert y.shape == x.shape and np.isfinite(y).all()
    clip = np.stack([x, x[:, ::-1]], axis=1)
    y = to_numpy(tfdeblur.build_model("sarn_video")(clip))
    assert y.shape == clip.shape and np.isfinite(y).all()


# --------------------------------------------------------------------- streaming / CLI


def _trained_looking_video_model():
    model = tfdeblur.build_model("sarn_video", "tiny")
    rng = np.random.default_rng(6)
    step = model.get_layer("recurrence").step_model
    for layer in step.layers:
        if layer.name.startswith("mid_drm"):
            for w in layer.deform.offset_conv.weights:
                w.assign(rng.normal(0, 0.3, w.shape).astype(np.float32))
    step.get_layer("mid_attention").gamma.assign(0.5)
    return model


@pytest.mark.tf_only
@pytest.mark.parametrize("num_frames", [1, 2, 6])
def test_streaming_equals_clip_model(num_frames):
    from tfdeblur.infer.video import stream_deblur

    model = _trained_looking_video_model()
    clip = np.random.default_rng(num_frames).uniform(size=(1, num_frames, 14, 19, 3))
    clip = clip.astype(np.float32)
    expected = to_numpy(model(clip))[0]
    streamed = np.stack(list(stream_deblur(model, iter(clip[0]))))
    np.testing.assert_allclose(streamed, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.tf_only
def test_streaming_rejects_frames_of_different_sizes():
    from tfdeblur.infer.video import stream_deblur

    model = tfdeblur.build_model("sarn_video", "tiny")
    frames = [np.zeros((8, 8, 3), np.float32), np.zeros((8, 12, 3), np.float32)]
    with pytest.raises(ValueError, match="one size"):
        list(stream_deblur(model, frames))


@pytest.mark.tf_only
def test_deblur_video_command_end_to_end(tmp_path):
    import imageio.v3 as iio

    from tfdeblur.cli import main
    from tfdeblur.data.image_io import read_image, write_image
    from tfdeblur.data.video_io import iter_frames

    model = _trained_looking_video_model()
    model_path = tmp_path / "sarn_video.keras"
    model.save(model_path)

    rng = np.random.default_rng(7)
    pixels = (rng.uniform(size=(5, 32, 48, 3)) * 255).astype(np.uint8)
    video = tmp_path / "in.mp4"
    iio.imwrite(video, pixels, plugin="FFMPEG", fps=12, codec="libx264rgb",
                pixelformat="rgb24", output_params=["-crf", "0"], macro_block_size=1)  # fmt: skip
    frames = np.stack([f for _, f in iter_frames(video)])
    assert frames.shape == (5, 32, 48, 3)
    expected = to_numpy(model(frames[None]))[0]
    expected_u8 = np.rint(np.clip(expected, 0, 1) * 255)

    # Video file -> folder of PNGs.
    out_dir = tmp_path / "out_frames"
    code = main(["deblur-video", str(video), "-o", str(out_dir), "--model", str(model_path), "-q"])
    assert code == 0
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == [f"frame_{i:06d}.png" for i in range(1, 6)]
    got = np.stack([read_image(out_dir / n) for n in names]) * 255
    assert np.abs(got - expected_u8).max() <= 1  # one float rounding tie at most

    # Folder of frames -> lossless video (frame rate given), same numbers.
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(pixels, start=1):
        write_image(folder / f"f{i}.png", frame.astype(np.float32) / 255)
    out_video = tmp_path / "out.mkv"
    code = main(["deblur-video", str(folder), "-o", str(out_video), "--model", str(model_path),
                 "--fps", "8", "--codec", "lossless", "-q"])  # fmt: skip
    assert code == 0
    decoded = np.stack(list(iio.imiter(out_video, plugin="FFMPEG"))).astype(np.float64)
    assert decoded.shape == (5, 32, 48, 3)
    assert iio.immeta(out_video, plugin="FFMPEG")["fps"] == 8
    assert np.abs(decoded - expected_u8).max() <= 1

    # Bad input: one error line, exit status 2.
    assert main(["deblur-video", str(tmp_path / "missing.mp4"), "-o", str(out_dir),
                 "--model", str(model_path), "-q"]) == 2  # fmt: skip
