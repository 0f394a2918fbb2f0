"""Every registered network (tiny preset) to every format and quantization, verified.

Each export runs its artifact in the deployment runtime (tf.saved_model.load, Keras
load_model(safe_mode=True), the LiteRT interpreter, onnxruntime) on two real GOPRO crops
of different sizes, neither a multiple of 8, and compares with the Keras model. The
networks come from the registry, so a newly registered network is tested here without
edits.
"""

import keras
import numpy as np
import pytest

import export
import tfdeblur
from export.verify import TOLERANCES_DB
from tfdeblur.infer.runners import default_num_threads, load_runner, tflite_interpreter

MODELS = tfdeblur.list_models()


@pytest.fixture(scope="module", params=MODELS)
def tiny(request):
    """``(name, model)``: the network's tiny preset with seeded random weights."""
    keras.utils.set_random_seed(0)
    return request.param, tfdeblur.build_model(request.param, preset="tiny")


def _assert_verified(result, verify_images, fmt, quantization="none"):
    report = result.verification
    assert report is not None and report.passed, report.summary()
    assert report.format == fmt and report.quantization == quantization
    assert report.path == str(result.path)  # verified before the move, named by its final path
    assert report.min_psnr_vs_keras >= TOLERANCES_DB[(fmt, quantization)]
    # Both crops ran (two different input shapes through one artifact).
    assert len({r.shape for r in report.images}) == len(verify_images) == 2
    # Every result has its sharp comparison.
    assert all(r.psnr_vs_sharp is not None for r in report.images)


def test_saved_model(tiny, tmp_path, verify_images):
    import tensorflow as tf

    name, model = tiny
    result = export.saved_model(model, tmp_path / "sm", images=verify_images, verbose=False)
    _assert_verified(result, verify_images, "saved_model")
    assert result.verification.min_psnr_vs_keras >= 100  # same graph, same kernels
    signature = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    (spec,) = signature.structured_input_signature[1].values()
    rank = len(model.inputs[0].shape)
    assert spec.shape.as_list() == [None] * (rank - 1) + [3]
    assert list(signature.structured_outputs) == ["deblurred"]


def test_keras_file(tiny, tmp_path, verify_images):
    name, model = tiny
    result = export.keras_file(
        model, tmp_path / f"{name}.keras", images=verify_images, verbose=False
    )
    _assert_verified(result, verify_images, "keras")
    assert result.verification.min_psnr_vs_keras == float("inf")  # identical weights and ops


@pytest.mark.parametrize("quantization", ["none", "float16", "dynamic", "int8"])
def test_tflite(tiny, tmp_path, verify_images, calibration_images, quantization):
    name, model = tiny
    options = dict(
        quantization=quantization,
        representative_data=calibration_images if quantization == "int8" else None,
        num_calibration_samples=len(calibration_images),
        images=verify_images,
        verbose=False,
    )
    if (name, quantization) == ("saphn", "int8"):
        # Known limitation, asserted: TFLite's int8 softmax has a fixed output scale of
        # 1/256, which rounds the spatial-softmax weights of SAPHN's global attention
        # (~1 / HW each, eq. 1) to 0 or 1/256, so the gathered descriptors are wrong
        # (17 dB). It passed only while that branch started ~500x too weak to matter.
        from export.verify import ExportVerificationError

        with pytest.raises(ExportVerificationError, match="below the 25.0 dB tolerance"):
            export.tflite(model, tmp_path / f"{name}_{quantization}.tflite", **options)
        return
    result = export.tflite(model, tmp_path / f"{name}_{quantization}.tflite", **options)
    _assert_verified(result, verify_images, "tflite", quantization)

    info = export.tflite_model_info(result.path)
    assert info["custom_ops"] == []  # builtin ops only: no Flex
    interpreter = tflite_interpreter(result.path)
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    rank = len(model.inputs[0].shape)
    assert list(inp["shape_signature"]) == [1] + [-1] * (rank - 2) + [3]  # dynamic H, W
    assert load_runner(result.path).input_size is None

    weights = info["weight_bytes"]
    # The converter stores identical constants once (e.g. the zero-initialised biases).
    float32_bytes = sum(len(b) for b in {w.numpy().tobytes() for w in model.weights})
    if quantization == "none":
        assert inp["dtype"] == np.float32 and weights.get("float32", 0) >= float32_bytes
    elif quantization == "float16":
        # Every weight stored in half precision (to within the few small constants the
        # converter folds into neighbouring ops, e.g. a bias before a residual add).
        assert weights.get("float16", 0) >= 0.95 * float32_bytes / 2
        assert weights.get("float32", 0) < float32_bytes / 10
    elif quantization == "int8":
        assert inp["dtype"] == np.uint8 and out["dtype"] == np.uint8
        # Calibration pinned to [0, 1]: the uint8 input is the 8-bit pixel itself.
        scale, zero_point = inp["quantization"]
        assert zero_point == 0 and scale == pytest.approx(1 / 255, rel=1e-6)
        # Every weight int8 (biases int32), none left in float; the ~4x smaller file is
        # checked by `tfdeblur bench` on full-size models, where biases are negligible.
        assert weights.get("int8", 0) > 0
        assert weights.get("float32", 0) == 0 and weights.get("float16", 0) == 0


def test_onnx(tiny, tmp_path, verify_images):
    name, model = tiny
    result = export.onnx(model, tmp_path / f"{name}.onnx", images=verify_images, verbose=False)
    _assert_verified(result, verify_images, "onnx")
    runner = load_runner(result.path)  # what deblur, bench and verification run
    (inp,) = runner.session.get_inputs()
    assert inp.name == model.inputs[0].name
    # Batch, (T,) H and W symbolic; channels fixed.
    assert all(not isinstance(d, int) for d in inp.shape[:-1]) and inp.shape[-1] == 3
    # Every core unless told otherwise.
    options = runner.session.get_session_options()
    assert options.intra_op_num_threads == default_num_threads()
    one = load_runner(result.path, num_threads=1).session.get_session_options()
    assert one.intra_op_num_threads == 1
