"""Any-size files: the default export resized to a size equals a file fixed at that size
and the Keras model, through the runners, on a size that is not a multiple of the
network's (the networks pad and crop inside, so the file contract is any H x W)."""

import keras
import numpy as np
import pytest

import export
import tfdeblur
from tfdeblur.evaluate.bench import tflite_operator_count
from tfdeblur.infer.runners import load_runner

pytestmark = pytest.mark.slow  # three SAPHN exports: about a minute on 2 idle cores


@pytest.fixture(scope="module")
def saphn_files(tmp_path_factory):
    """SAPHN ``tiny`` (patch split, global attention, pad/crop to 8): any-size TFLite and
    ONNX files, and a TFLite file fixed at 20 x 28 (not a multiple of 8)."""
    directory = tmp_path_factory.mktemp("any_size")
    keras.utils.set_random_seed(0)
    model = tfdeblur.build_model("saphn", preset="tiny")
    quiet = dict(verify=False, verbose=False)
    files = {
        "tflite": export.tflite(model, directory / "any.tflite", **quiet).path,
        "tflite_fixed": export.tflite(
            model, directory / "fixed.tflite", input_size=(20, 28), **quiet
        ).path,
        "onnx": export.onnx(model, directory / "any.onnx", **quiet).path,
        "onnx_fixed": export.onnx(
            model, directory / "fixed.onnx", input_size=(20, 28), **quiet
        ).path,
    }
    return model, files


def test_any_size_files_equal_fixed_ones_and_keras_on_a_non_multiple_size(saphn_files):
    model, files = saphn_files
    x = np.random.default_rng(0).random((1, 20, 28, 3), dtype=np.float32)
    keras_out = np.asarray(model(x))
    # float32 rounding scales with the output: tolerances are relative to its peak.
    # Measured up to 6.6e-7 of the peak from Keras (TFLite with XNNPACK, onnxruntime) and
    # up to 9.2e-7 between the any-size and the fixed TFLite file, over seeds and CPUs
    # (AVX2 and AVX-512 kernels round differently).
    atol = 1.5e-6 * float(np.abs(keras_out).max())
    outputs = {name: load_runner(path).run_batch(x) for name, path in files.items()}
    for name, out in outputs.items():
        assert out.shape == x.shape, name
        np.testing.assert_allclose(out, keras_out, rtol=0, atol=atol, err_msg=name)
    # The same graph but for the static shapes.
    np.testing.assert_allclose(outputs["tflite"], outputs["tflite_fixed"], rtol=0, atol=atol)
    # The any-size file runs other sizes too, and still agrees with Keras.
    y = np.random.default_rng(1).random((1, 17, 40, 3), dtype=np.float32)
    keras_y = np.asarray(model(y))
    np.testing.assert_allclose(
        load_runner(files["tflite"]).run_batch(y),
        keras_y,
        rtol=0,
        atol=1.5e-6 * float(np.abs(keras_y).max()),
    )


def test_any_size_graph_has_no_more_shape_arithmetic_than_pad_crop_and_upsampling(saphn_files):
    # What a dynamic H, W adds to the graph: one SHAPE for the pad-to-multiple, one for
    # the crop and one per transposed convolution (Keras computes its output shape);
    # the patch split and the attention reshapes use none (an even SPLIT, constant
    # reshape targets; before, SAPHN tiny's graph had 25 SHAPE operators).
    model, files = saphn_files
    upsamplings = sum(type(layer).__name__ == "Conv2DTranspose" for layer in model.layers)
    dynamic = tflite_operator_count(files["tflite"])["by_type"]
    fixed = tflite_operator_count(files["tflite_fixed"])["by_type"]
    assert upsamplings > 0 and dynamic["SHAPE"] == 2 + upsamplings and "SHAPE" not in fixed
    assert dynamic["SPLIT"] == fixed["SPLIT"] > 0
    assert dynamic["BATCH_MATMUL"] == fixed["BATCH_MATMUL"]
