"""The GOPRO evaluation protocol: MATLAB-compatible SSIM, per-image/per-sequence results."""

import csv
import json

import keras
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from tfdeblur.cli import main
from tfdeblur.data.image_io import read_image, write_image
from tfdeblur.metrics import rgb_to_y_matlab, ssim_matlab


def naive_ssim_index(a: np.ndarray, b: np.ndarray) -> float:
    """ssim_index.m written out: every 11x11 window inside the image, Gaussian weights."""
    coords = np.arange(-5, 6)
    window = np.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * 1.5**2))
    window /= window.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            mu_a, mu_b = (window * pa).sum(), (window * pb).sum()
            var_a = (window * (pa - mu_a) ** 2).sum()
            var_b = (window * (pb - mu_b) ** 2).sum()
            cov = (window * (pa - mu_a) * (pb - mu_b)).sum()
            values.append(
                (2 * mu_a * mu_b + c1)
                * (2 * cov + c2)
                / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
            )
    return float(np.mean(values))


def naive_y(rgb: np.ndarray, quantize: bool) -> np.ndarray:
    """MATLAB rgb2ycbcr's first row, pixel by pixel (uint8 path when quantizing)."""
    out = np.empty(rgb.shape[:2])
    for i in range(rgb.shape[0]):
        for j in range(rgb.shape[1]):
            r, g, b = rgb[i, j]
            if quantize:
                r, g, b = (int(np.floor(min(max(v, 0), 1) * 255 + 0.5)) for v in (r, g, b))
                y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
                out[i, j] = int(np.floor(y + 0.5))
            else:
                out[i, j] = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    return out


@pytest.mark.parametrize("quantize", [True, False])
@pytest.mark.parametrize("shape", [(16, 19, 3), (11, 14, 3)])
def test_ssim_matlab_matches_naive_ssim_index(shape, quantize):
    rng = np.random.default_rng(shape[0] + quantize)
    a = rng.uniform(size=shape)
    b = np.clip(a + rng.normal(scale=0.1, size=shape), 0, 1)
    expected = naive_ssim_index(naive_y(a, quantize), naive_y(b, quantize))
    assert float(ssim_matlab(a, b, quantize=quantize)) == pytest.approx(expected, abs=1e-10)


# SSIM of Wang et al. on the MATLAB luma of the pair below, computed independently with
# GNU Octave 7.3.0 (Debian bookworm package `octave`) from the paper's equations, written
# for this test (no MATLAB code was used): eq. (13) with the normalised 11x11 Gaussian
# window of sigma 1.5 (sec. III-C), K = [0.01 0.03], L = 255, 'valid' filtering, the mean
# of the SSIM map, on Y = round(16 + (65.481 R + 128.553 G + 24.966 B) / 255). The script:
#
#   H = 16; W = 19; [j, i] = meshgrid(0:W-1, 0:H-1); a = zeros(H, W, 3); b = a;
#   for c = 0:2
#     a(:, :, c+1) = mod(i * 9 + j * 4 + c * 40, 200) + 20;
#     b(:, :, c+1) = min(max(a(:, :, c+1) + mod(i .* j * 7 + c * 3, 61) - 30, 0), 255);
#   end
#   luma = @(p) round(16 + (65.481*p(:,:,1) + 128.553*p(:,:,2) + 24.966*p(:,:,3)) / 255);
#   x = luma(a); y = luma(b);                         % sum(x(:)) = 39176, sum(y(:)) = 38513
#   [u, v] = meshgrid(-5:5); w = exp(-(u.^2 + v.^2) / (2 * 1.5^2)); w = w / sum(w(:));
#   C1 = (0.01 * 255)^2; C2 = (0.03 * 255)^2;
#   mx = filter2(w, x, 'valid'); my = filter2(w, y, 'valid');
#   sx = filter2(w, x.*x, 'valid') - mx.^2; sy = filter2(w, y.*y, 'valid') - my.^2;
#   sxy = filter2(w, x.*y, 'valid') - mx.*my;
#   m = ((2*mx.*my + C1) .* (2*sxy + C2)) ./ ((mx.^2 + my.^2 + C1) .* (sx + sy + C2));
#   printf("%.15f\n", mean(m(:)))                    % 0.605117342022975
OCTAVE_SSIM = 0.605117342022975


def test_ssim_matlab_matches_an_octave_reference():
    i, j, c = np.meshgrid(np.arange(16), np.arange(19), np.arange(3), indexing="ij")
    a = np.mod(i * 9 + j * 4 + c * 40, 200) + 20
    b = np.clip(a + np.mod(i * j * 7 + c * 3, 61) - 30, 0, 255)
    assert rgb_to_y_matlab(a / 255).sum() == 39176  # the same luma as Octave's
    assert rgb_to_y_matlab(b / 255).sum() == 38513
    assert float(ssim_matlab(a / 255, b / 255)) == pytest.approx(OCTAVE_SSIM, abs=1e-12)


def test_ssim_matlab_is_skimage_on_the_y_channel_and_batches():
    rng = np.random.default_rng(5)
    a = rng.uniform(size=(2, 24, 30, 3))
    b = np.clip(a + rng.normal(scale=0.05, size=a.shape), 0, 1)
    got = ssim_matlab(a, b)
    for k in range(2):
        ya, yb = rgb_to_y_matlab(a[k]), rgb_to_y_matlab(b[k])
        ref = structural_similarity(
            ya, yb, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
        )
        assert got[k] == pytest.approx(ref, abs=1e-9)


def test_rgb_to_y_matlab_known_values():
    rgb = np.array([[[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 0, 1]]], dtype=np.float64)
    np.testing.assert_array_equal(rgb_to_y_matlab(rgb), [[16, 235, 81, 41]])
    np.testing.assert_allclose(rgb_to_y_matlab(rgb, quantize=False), [[16, 235, 81.481, 40.966]])


def test_ssim_matlab_rejects_small_or_mismatched():
    with pytest.raises(ValueError, match="H, W >= 11"):
        ssim_matlab(np.zeros((10, 20, 3)), np.zeros((10, 20, 3)))
    with pytest.raises(ValueError, match="shapes differ"):
        ssim_matlab(np.zeros((12, 20, 3)), np.zeros((12, 21, 3)))


# --------------------------------------------------------------------------- eval CLI


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="tanh")(inputs)
    x = keras.layers.Conv2D(3, 3, padding="same")(x)
    model = keras.Model(inputs, keras.layers.Add()([inputs, x]), name="small")
    path = tmp_path_factory.mktemp("model") / "small.keras"
    model.save(path)
    return path, model


def make_gopro_tree(root, sequences, size=(24, 32)):
    """test/<seq>/{blur,blur_gamma,sharp}/NNNNNN.png with random images."""
    rng = np.random.default_rng(7)
    for seq, count in sequences.items():
        for i in range(count):
            sharp = rng.uniform(size=size + (3,))
            blur = np.clip(sharp + rng.normal(scale=0.08, size=sharp.shape), 0, 1)
            gamma = np.clip(sharp + rng.normal(scale=0.15, size=sharp.shape), 0, 1)
            for key, image in (("sharp", sharp), ("blur", blur), ("blur_gamma", gamma)):
                write_image(root / "test" / seq / key / f"{i:06d}.png", image)


def test_eval_gopro_tree_end_to_end(tmp_path, small_model, capsys):
    model_path, model = small_model
    root = tmp_path / "GOPRO_Large"
    make_gopro_tree(root, {"GOPR0001_00": 2, "GOPR0002_00": 1})
    csv_path = tmp_path / "out" / "eval.csv"
    rc = main([
        "eval", "--model", str(model_path), "--data", str(root), "--csv", str(csv_path),
        "--blur-key", "blur_gamma", "--network", "deepdeblur", "-q",
    ])  # fmt: skip
    assert rc == 0
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == [
        "GOPR0001_00/000000.png", "GOPR0001_00/000001.png", "GOPR0002_00/000000.png",
    ]  # fmt: skip
    for row in rows:
        seq, name = row["name"].split("/")
        blur = read_image(root / "test" / seq / "blur_gamma" / name)
        sharp = read_image(root / "test" / seq / "sharp" / name)
        out = np.clip(np.asarray(model(blur[None]))[0], 0, 1).astype(np.float64)
        assert row["sequence"] == seq
        assert float(row["psnr"]) == pytest.approx(
            peak_signal_noise_ratio(sharp.astype(np.float64), out, data_range=1), abs=1e-3
        )
        assert float(row["ssim"]) == pytest.approx(
            structural_similarity(out, sharp.astype(np.float64), channel_axis=-1,
                                  gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False, data_range=1),
            abs=1e-4,
        )  # fmt: skip
        assert float(row["ssim_matlab"]) == pytest.approx(float(ssim_matlab(out, sharp)), abs=1e-4)
        assert float(row["psnr_blurry"]) == pytest.approx(
            peak_signal_noise_ratio(sharp, blur, data_range=1), abs=1e-3
        )
        assert float(row["seconds"]) > 0

    with open(tmp_path / "out" / "eval_sequences.csv") as f:
        seq_rows = {r["sequence"]: r for r in csv.DictReader(f)}
    assert set(seq_rows) == {"GOPR0001_00", "GOPR0002_00", "ALL"}
    for seq, members in (("GOPR0001_00", rows[:2]), ("GOPR0002_00", rows[2:]), ("ALL", rows)):
        assert int(seq_rows[seq]["count"]) == len(members)
        for key in ("psnr", "ssim", "ssim_matlab", "seconds"):
            expected = np.mean([float(r[key]) for r in members])
            assert float(seq_rows[seq][key]) == pytest.approx(expected, rel=1e-9)

    record = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert record["settings"]["blur_key"] == "blur_gamma"
    assert record["settings"]["split"] == "test"
    assert record["results"]["count"] == 3
    table = (tmp_path / "out" / "eval_table.md").read_text()
    lines = table.splitlines()
    assert lines[2].startswith("| deepdeblur | this run (3 images) | blur_gamma |")
    assert "| deepdeblur | official DeepDeblur-PyTorch | blur_gamma | 30.40 | 0.9018 |" in table
    for numbers in ("28.69 | 0.9204", "29.08 | 0.9135", "31.13 | 0.947", "31.85 | 0.948"):
        assert numbers in table
    assert table in capsys.readouterr().out


def test_eval_quantize_scores_the_8bit_output(tmp_path, small_model):
    from tfdeblur import data
    from tfdeblur.evaluate.protocol import evaluate

    model_path, model = small_model
    make_gopro_tree(tmp_path, {"SEQ": 1})
    pairs = data.find_pairs(tmp_path, "test", "blur")
    result = evaluate(model, pairs, quantize=True)
    blur, sharp = data.load_pair(pairs[0])
    out = np.rint(np.clip(np.asarray(model(blur[None]))[0], 0, 1) * 255) / 255
    assert result["psnr"] == pytest.approx(
        peak_signal_noise_ratio(sharp, out, data_range=1), abs=1e-3
    )
    assert result["sequences"]["SEQ"]["count"] == 1


def test_eval_bad_arguments(tmp_path, small_model, capsys):
    model_path, _ = small_model
    make_gopro_tree(tmp_path, {"SEQ": 1})
    assert main(["eval", "--model", str(model_path), "--data", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["eval", "--model", str(model_path), "--data", str(tmp_path), "--limit", "0"]) == 2
    # --tile goes through the one tile parser (shared with tfdeblur deblur).
    with pytest.raises(SystemExit):
        main(["eval", "--model", str(model_path), "--data", str(tmp_path), "--tile", "big"])
    assert "--tile" in capsys.readouterr().err
    rc = main([
        "eval", "--model", str(model_path), "--data", str(tmp_path), "--tile", "64",
        "--overlap", "40",
    ])  # fmt: skip
    assert rc == 2 and "at most half the tile" in capsys.readouterr().err


def test_eval_on_tflite_and_onnx_models(tmp_path, small_model, capsys):
    """``tfdeblur eval`` on exported .tflite and .onnx files scores what the Keras model
    scores (float32 artifacts: PSNR within 1e-3 dB, SSIM within 1e-5), records the
    format, and names a missing artifact."""
    from tests.utils import import_or_skip

    export = import_or_skip("export")
    import_or_skip("ai_edge_litert")
    import_or_skip("onnxruntime")
    model_path, model = small_model
    root = tmp_path / "GOPRO_Large"
    make_gopro_tree(root, {"SEQ": 2})
    paths = {
        "keras": model_path,
        "tflite": export.tflite(model, tmp_path / "m.tflite", verify=False, verbose=False).path,
        "onnx": export.onnx(model, tmp_path / "m.onnx", verify=False, verbose=False).path,
    }
    rows = {}
    for fmt, path in paths.items():
        csv_path = tmp_path / fmt / "eval.csv"
        assert (
            main(["eval", "--model", str(path), "--data", str(root), "--csv", str(csv_path), "-q"])
            == 0
        )
        with open(csv_path) as f:
            rows[fmt] = list(csv.DictReader(f))
        record = json.loads((tmp_path / fmt / "eval.json").read_text())
        assert record["settings"]["model_format"] == fmt
    capsys.readouterr()
    for fmt in ("tflite", "onnx"):
        assert [r["name"] for r in rows[fmt]] == [r["name"] for r in rows["keras"]]
        for got, want in zip(rows[fmt], rows["keras"], strict=True):
            assert float(got["psnr"]) == pytest.approx(float(want["psnr"]), abs=1e-3), fmt
            assert float(got["ssim"]) == pytest.approx(float(want["ssim"]), abs=1e-5), fmt
    for missing in ("gone.tflite", "gone.onnx"):
        assert main(["eval", "--model", str(tmp_path / missing), "--data", str(root)]) == 2
        assert missing in capsys.readouterr().err
