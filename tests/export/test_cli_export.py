"""``tfdeblur export``: flags -> exporters, verification report, errors."""

import json
import warnings

import keras
import numpy as np
import pytest

import tfdeblur
from export.verify import TOLERANCES_DB
from tfdeblur.cli import main
from tfdeblur.data import image_io
from tfdeblur.infer.runners import tflite_interpreter


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    tfdeblur.build_model("lcnet", preset="tiny").save(path)
    return path


@pytest.fixture(scope="module")
def paired_folder(tmp_path_factory, gopro_pairs):
    """A paired dataset (``blur/``, ``sharp/``) of four 256x320 GOPRO crops."""
    root = tmp_path_factory.mktemp("paired")
    blurry, sharp = gopro_pairs["Istanbul"]
    for i in range(4):
        top, left = 100 * i + 40, 200 * i + 50
        for key, image in (("blur", blurry), ("sharp", sharp)):
            image_io.write_image(
                root / key / f"{i:03d}.png", image[top : top + 256, left : left + 320]
            )
    return root


@pytest.fixture(scope="module")
def verify_folder(tmp_path_factory, verify_images):
    """A flat folder of ``*_blur.png`` / ``*_sharp.png`` crops, as a user would pass."""
    root = tmp_path_factory.mktemp("verify")
    for name, blurry, sharp in verify_images:
        image_io.write_image(root / f"{name}_blur.png", blurry)
        image_io.write_image(root / f"{name}_sharp.png", sharp)
    return root


def test_cli_int8_tflite_with_calibration_folder(
    tmp_path, tiny_file, paired_folder, verify_folder, capsys
):
    out, report = tmp_path / "m_int8.tflite", tmp_path / "report.json"
    code = main(
        [
            "export",
            "--model", str(tiny_file),
            "--format", "tflite",
            "--quantization", "int8",
            "--calibration-data", str(paired_folder),
            "--calibration-samples", "4",
            "--verify-images", str(verify_folder),
            "--output", str(out),
            "--report", str(report),
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "verify tflite/int8: PSNR vs Keras" in printed and "vs sharp" in printed
    result = json.loads(report.read_text())
    assert result["quantization"] == "int8" and result["size_bytes"] == out.stat().st_size
    verification = result["verification"]
    assert verification["passed"] and len(verification["images"]) == 2
    # Both verification images found their sharp twins.
    assert all(image["psnr_vs_sharp"] is not None for image in verification["images"])
    (inp,) = tflite_interpreter(out).get_input_details()
    assert inp["dtype"] == np.uint8


def test_cli_registry_name_builds_untrained_model(tmp_path, verify_folder, capsys):
    out = tmp_path / "lcnet.keras"
    with pytest.warns(UserWarning, match="untrained"):
        code = main(
            [
                "export", "--model", "lcnet", "--preset", "tiny", "--format", "keras",
                "--verify-images", str(verify_folder / "Flower_blur.png"), "--output", str(out),
            ]
        )  # fmt: skip
    assert code == 0 and out.is_file()
    assert "verify keras" in capsys.readouterr().out


def test_cli_reports_verification_failure(tmp_path, tiny_file, verify_folder, capsys, monkeypatch):
    """An artifact that disagrees makes the command fail with exit code 1, and leaves the
    file of an earlier export in place."""
    out = tmp_path / "m.tflite"
    out.write_bytes(b"an earlier, good export")  # stands in for one (saves a conversion)
    # float32 TFLite agrees to ~140 dB; demand more than float32 can give.
    monkeypatch.setitem(TOLERANCES_DB, ("tflite", "none"), 1000.0)
    code = main(
        [
            "export", "--model", str(tiny_file), "--format", "tflite",
            "--verify-images", str(verify_folder), "--output", str(out),
        ]
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "VERIFICATION FAILED" in err and str(out) in err
    assert out.read_bytes() == b"an earlier, good export"
    assert [p.name for p in tmp_path.iterdir()] == ["m.tflite"]  # no temporary left


def test_cli_int8_fixed_size_with_demo_calibration(
    tmp_path, tiny_file, verify_folder, demo_cache, monkeypatch, capsys
):
    """--calibration-data demo: the offline demo dataset; at a fixed --input-size the
    calibration crops are of that size (demo frames are 256x320, large enough: no
    upscaling warning)."""
    monkeypatch.setenv("TFDEBLUR_CACHE", str(demo_cache))
    out = tmp_path / "demo_int8.tflite"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(
            [
                "export", "--model", str(tiny_file), "--format", "tflite",
                "--quantization", "int8", "--calibration-data", "demo",
                "--calibration-samples", "3", "--input-size", "64x96",
                "--verify-images", str(verify_folder / "Istanbul_blur.png"),
                "--output", str(out),
            ]
        )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert not [w for w in caught if "upscaled" in str(w.message)]
    assert "verify tflite/int8" in capsys.readouterr().out
    (inp,) = tflite_interpreter(out).get_input_details()
    assert list(inp["shape_signature"]) == [1, 64, 96, 3] and inp["dtype"] == np.uint8


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--format", "keras", "--quantization", "int8"],
            "--quantization applies to --format tflite",
        ),
        (["--format", "tflite", "--input-size", "720"], "input_size must look like HxW"),
        (["--format", "keras", "--input-size", "64x64"], "--input-size does not apply"),
    ],
)
def test_cli_bad_flags(tiny_file, capsys, argv, message):
    assert main(["export", "--model", str(tiny_file), "--no-verify", *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_missing_model_file(tmp_path, capsys):
    code = main(["export", "--model", str(tmp_path / "nope.keras"), "--format", "keras"])
    assert code == 2 and "nope.keras" in capsys.readouterr().err
