"""Properties of the artifacts beyond agreement: failures caught, layouts, mappings."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import export
import tfdeblur
from export.signature import input_signature, serving_function
from export.tflite import convert
from export.verify import (
    ExportVerificationError,
    dequantize_output,
    load_artifact,
    psnr,
    quantize_input,
    tflite_interpreter,
)


@pytest.fixture(scope="module")
def lcnet():
    keras.utils.set_random_seed(0)
    return tfdeblur.build_model("lcnet", preset="tiny")


def test_verification_catches_an_artifact_of_other_weights(lcnet, tmp_path, verify_images):
    keras.utils.set_random_seed(1)
    other = tfdeblur.build_model("lcnet", preset="tiny")
    path = export.tflite(other, tmp_path / "other.tflite", verify=False, verbose=False).path
    with pytest.raises(ExportVerificationError, match="disagrees with the Keras model"):
        export.verify(lcnet, path, verify_images, quantization="none")
    report = export.verify(lcnet, path, verify_images, raise_on_failure=False)
    assert not report.passed and report.min_psnr_vs_keras < 45


def test_verification_catches_the_resource_variable_trap(lcnet, tmp_path, verify_images):
    """``from_concrete_functions(..., trackable_obj)`` keeps Keras 3 variables as
    uninitialised TFLite resource variables: the file converts and runs, and returns NaN."""
    prepared, _ = export.prepare_for_export(lcnet)
    spec = input_signature(prepared, batch_size=1)
    concrete = serving_function(prepared, spec).get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], prepared)
    path = tmp_path / "trap.tflite"
    path.write_bytes(converter.convert())
    assert "READ_VARIABLE" in export.tflite_model_info(path)["ops"]
    with pytest.raises(ExportVerificationError, match="nan dB"):
        export.verify(lcnet, path, verify_images)
    # The exporter's frozen path has no variables left.
    ours = export.tflite(lcnet, tmp_path / "ours.tflite", images=verify_images, verbose=False)
    assert "READ_VARIABLE" not in export.tflite_model_info(ours.path)["ops"]


def test_non_builtin_ops_are_refused(lcnet):
    """Converting the training formulation (ExtractImagePatches) without the switch fails
    with the op named: no silent Flex fallback."""
    patches = tfdeblur.build_model("lcnet", preset="tiny", lc_method="patches")
    with pytest.raises(ValueError, match="ExtractImagePatches"):
        convert(patches)


def test_fixed_input_size(lcnet, tmp_path, gopro_pairs):
    blurry, sharp = gopro_pairs["Istanbul"]
    images = [(blurry[:200, :300], sharp[:200, :300])]
    result = export.tflite(
        lcnet, tmp_path / "fixed.tflite", input_size="48x72", images=images, verbose=False
    )
    (inp,) = tflite_interpreter(result.path).get_input_details()
    assert list(inp["shape_signature"]) == [1, 48, 72, 3]
    assert result.verification.images[0].shape == (1, 48, 72, 3)  # verified on a 48x72 crop


def test_int8_with_int8_io(lcnet, tmp_path, verify_images, calibration_images):
    result = export.tflite(
        lcnet,
        tmp_path / "int8io.tflite",
        quantization="int8",
        representative_data=calibration_images,
        io_type="int8",
        images=verify_images,
        verbose=False,
    )
    interpreter = tflite_interpreter(result.path)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    scale, zero_point = inp["quantization"]
    assert zero_point == -128 and scale == pytest.approx(1 / 255, rel=1e-6)  # q = pixel - 128
    assert result.verification.passed

    # The int8 tolerance catches a wrong float<->int mapping: reading the output as
    # (q + 128) / 255, i.e. ignoring the output's own scale and zero point.
    def wrong_mapping(x):
        interpreter.resize_tensor_input(inp["index"], x.shape, strict=False)
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], quantize_input(x, inp))
        interpreter.invoke()
        return (interpreter.get_tensor(out["index"]).astype(np.float32) + 128) / 255

    with pytest.raises(ExportVerificationError):
        export.verify(lcnet, result.path, verify_images, quantization="int8", runner=wrong_mapping)


def test_int8_needs_calibration_data(lcnet, tmp_path):
    with pytest.raises(ValueError, match="representative_data is required"):
        export.tflite(lcnet, tmp_path / "x.tflite", quantization="int8", verify=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"quantization": "int4"}, "quantization must be one of"),
        (
            {
                "io_type": "int16",
                "quantization": "int8",
                "representative_data": [np.zeros((8, 8, 3))],
            },
            "io_type",
        ),
    ],
)
def test_bad_tflite_arguments(lcnet, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        export.tflite(lcnet, tmp_path / "x.tflite", verify=False, verbose=False, **kwargs)


def test_bad_output_paths(lcnet, tmp_path):
    with pytest.raises(ValueError, match=r"\.tflite"):
        export.tflite(lcnet, tmp_path / "x.onnx", verify=False)
    with pytest.raises(ValueError, match=r"\.keras"):
        export.keras_file(lcnet, tmp_path / "x.h5", verify=False)
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        load_artifact(tmp_path / "missing.tflite")


def test_quantization_mapping_formulas():
    detail = {"dtype": np.uint8, "quantization": (0.5, 10)}
    x = np.array([-10.0, 0.0, 0.26, 1.0, 200.0], np.float32)
    # q = clip(round(x / s) + z): -20+10 -> 0 (clipped), 10, round(0.52)+10=11, 12, 255.
    np.testing.assert_array_equal(quantize_input(x, detail), [0, 10, 11, 12, 255])
    q = np.array([0, 10, 12, 255], np.uint8)
    np.testing.assert_allclose(dequantize_output(q, detail), [-5.0, 0.0, 1.0, 122.5])


def test_psnr_reference_values():
    a = np.zeros((4, 4, 3), np.float32)
    assert psnr(a, a) == float("inf")
    assert psnr(a + 0.1, a) == pytest.approx(20.0)  # MSE 0.01 -> 20 dB
    assert np.isnan(psnr(a * np.nan, a))


def test_saved_model_runs_without_tfdeblur(lcnet, tmp_path, verify_images):
    """The SavedModel is standalone: a fresh process without tfdeblur serves it."""
    export.saved_model(lcnet, tmp_path / "sm", verify=False, verbose=False)
    x = verify_images[1][1][None]
    np.save(tmp_path / "x.npy", x)
    code = textwrap.dedent(
        f"""
        import os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
        import sys, numpy as np, tensorflow as tf
        serve = tf.saved_model.load({str(tmp_path / "sm")!r}).signatures["serving_default"]
        y = serve(blurry=tf.constant(np.load({str(tmp_path / "x.npy")!r})))["deblurred"]
        np.save({str(tmp_path / "y.npy")!r}, y.numpy())
        assert "tfdeblur" not in sys.modules and "keras_layers" not in sys.modules
        """
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), lcnet(x), atol=1e-5)


@keras.saving.register_keras_serializable(package="tfdeblur_export_tests")
class _AddHalf(keras.layers.Layer):
    def call(self, x):
        return x + tf.constant(0.5)  # a 0-d constant


def test_onnx_conv_then_scalar_add_converts_in_one_pass(tmp_path, monkeypatch, verify_images):
    """tf2onnx 1.17's transpose optimizer crashes on Conv -> Add(scalar); the exporter's
    patch lets the strict first pass (no fallback) convert it."""
    import tf2onnx

    from export.onnx import _patch_transpose_optimizer

    x = keras.Input((None, None, 3), name="blurry")
    model = keras.Model(x, _AddHalf()(keras.layers.Conv2D(3, 3, padding="same", use_bias=False)(x)))
    _patch_transpose_optimizer()
    spec = input_signature(model)
    monkeypatch.setenv("TF2ONNX_CATCH_ERRORS", "FALSE")  # any value: optimizer errors raise
    tf2onnx.convert.from_function(
        serving_function(model, spec), input_signature=[spec], output_path=str(tmp_path / "m.onnx")
    )
    report = export.verify(model, tmp_path / "m.onnx", verify_images)
    assert report.min_psnr_vs_keras > 100
