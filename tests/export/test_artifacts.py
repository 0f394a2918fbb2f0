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
from export.prepare import prepare_for_export
from export.signature import input_signature, serving_function
from export.tflite import convert, representative_dataset
from export.verify import ExportVerificationError, load_artifact, psnr
from keras_layers import LCBlock
from tfdeblur.data import image_io
from tfdeblur.infer.runners import (
    SavedModelRunner,
    TFLiteRunner,
    dequantize_output,
    load_runner,
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


class _ExtractPatches(keras.layers.Layer):
    def call(self, x):
        return tf.image.extract_patches(x, [1, 3, 3, 1], [1, 1, 1, 1], [1, 1, 1, 1], "SAME")


def test_non_builtin_ops_are_refused():
    """A layer needing a Flex op (ExtractImagePatches) fails with the op named: no silent
    Flex fallback."""
    x = keras.Input((None, None, 3))
    with pytest.raises(ValueError, match="ExtractImagePatches"):
        convert(keras.Model(x, _ExtractPatches()(x)))


def _op_counts(content) -> dict:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
    counts = {}
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex]
        name = names[max(code.builtinCode, code.deprecatedBuiltinCode)]
        counts[name] = counts.get(name, 0) + 1
    return counts


def test_lcblock_tflite_graph_is_a_handful_of_ops_and_int8_stays_integer(
    lcnet, calibration_images, verify_images, tmp_path
):
    # The exported LCBlock costs 4 + 2 (2k + 4) + 7 builtin operators (31 for the tiny
    # preset's k = 3, 39 for the paper's 5): 3 convolutions and the shortcut add; per
    # gather a pad, a reshape, 2k slices and 2 concatenations; 2 reshapes, 2 multiplies,
    # 2 reductions and a softmax. The former shifted-slice formulation took ~190 for k = 5.
    base = tfdeblur.build_model("lcnet", preset="tiny", num_lc_blocks=0)
    blocks = sum(isinstance(layer, LCBlock) for layer in lcnet.layers)
    size = (64, 96)
    prepared, _ = prepare_for_export(lcnet)
    ops = _op_counts(convert(prepared, input_size=size))
    per_block = (
        sum(ops.values()) - sum(_op_counts(convert(base, input_size=size)).values())
    ) / blocks
    assert blocks == 3 and per_block <= 31 and "DIV" not in ops and ops["SOFTMAX"] == blocks
    # Full-integer int8: the only (de)quantization is the uint8 <-> int8 of input and
    # output; no operator falls back to float.
    content = convert(prepared, "int8", calibration_images, size)
    int8_ops = _op_counts(content)
    assert int8_ops.get("QUANTIZE") == 2 and "DEQUANTIZE" not in int8_ops
    path = tmp_path / "lc_int8.tflite"
    path.write_bytes(content)
    _, blurry, _ = verify_images[0]  # the 64x96 crop
    got = load_artifact(path, "tflite").run_batch(blurry[None])
    # Measured 34.8 dB against Keras (untrained tiny LCNet, 8 calibration crops).
    assert psnr(got, np.asarray(lcnet(blurry[None]))) >= 33.5


def test_fixed_input_size(lcnet, tmp_path, gopro_pairs):
    blurry, sharp = gopro_pairs["Istanbul"]
    images = [(blurry[:200, :300], sharp[:200, :300])]
    result = export.tflite(
        lcnet, tmp_path / "fixed.tflite", input_size="48x72", images=images, verbose=False
    )
    (inp,) = tflite_interpreter(result.path).get_input_details()
    assert list(inp["shape_signature"]) == [1, 48, 72, 3]
    assert result.verification.images[0].shape == (1, 48, 72, 3)  # verified on a 48x72 crop
    # The runner does not resize a fixed-size file to other images: a clear error instead.
    runner = load_runner(result.path)
    assert runner.input_size == (48, 72)
    assert runner(blurry[:48, :72]).shape == (48, 72, 3)
    with pytest.raises(ValueError, match=r"fixed\.tflite.*48x72.*40x56"):
        runner(blurry[:40, :56])


def _int8_export(model, path, io_type, verify_images, calibration_images):
    """A verified full-integer export with the given input/output type."""
    return export.tflite(
        model,
        path,
        quantization="int8",
        representative_data=calibration_images,
        io_type=io_type,
        images=verify_images,
        verbose=False,
    )


def test_int8_with_int8_io(lcnet, tmp_path, verify_images, calibration_images):
    result = _int8_export(
        lcnet, tmp_path / "int8io.tflite", "int8", verify_images, calibration_images
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
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
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


# ----------------------------------------------------------------------- runners


def test_saved_model_runner_matches_keras(lcnet, tmp_path, verify_images):
    path = export.saved_model(lcnet, tmp_path / "sm", verify=False, verbose=False).path
    runner = load_runner(path)
    assert (runner.kind, runner.name, runner.is_video) == ("saved_model", "sm", False)
    image = verify_images[1][1]
    np.testing.assert_allclose(runner(image), lcnet(image[None])[0], atol=1e-5)
    np.testing.assert_allclose(runner.run_batch(image[None]), lcnet(image[None]), atol=1e-5)


def test_upper_case_suffix_is_refused_everywhere(lcnet, tmp_path):
    """One rule: exact lower-case suffixes (Keras itself refuses ``.KERAS``)."""
    with pytest.raises(ValueError, match=r"lower case.*'m\.keras'"):
        export.keras_file(lcnet, tmp_path / "m.KERAS", verify=False)
    with pytest.raises(ValueError, match=r"lower case.*'m\.tflite'"):
        export.tflite(lcnet, tmp_path / "m.TFLite", verify=False)
    (tmp_path / "m.ONNX").write_bytes(b"")
    with pytest.raises(ValueError, match=r"lower case.*'m\.onnx'"):
        load_runner(tmp_path / "m.ONNX")
    assert list(tmp_path.iterdir()) == [tmp_path / "m.ONNX"]  # nothing was written


# ----------------------------------------------------------------------- replacing


@pytest.mark.parametrize("fmt", ["tflite", "saved_model"])
def test_failed_export_leaves_the_good_artifact_in_place(
    lcnet, tmp_path, verify_images, monkeypatch, fmt
):
    """Verification runs on the temporary artifact: a failing one never replaces a good
    earlier export (same inode, same bytes), and no temporary is left behind."""
    write = {
        "tflite": lambda **kw: export.tflite(lcnet, tmp_path / "m.tflite", **kw),
        "saved_model": lambda **kw: export.saved_model(lcnet, tmp_path / "m", **kw),
    }[fmt]
    good = write(images=verify_images, verbose=False)
    assert good.path == tmp_path / ("m.tflite" if fmt == "tflite" else "m")
    assert good.verification.path == str(good.path)  # the report names the final path
    main = good.path / "saved_model.pb" if fmt == "saved_model" else good.path
    before = (main.stat().st_ino, main.read_bytes())
    # The runtime now returns garbage for this format: the next export must fail.
    runner_class = {"tflite": TFLiteRunner, "saved_model": SavedModelRunner}[fmt]
    monkeypatch.setattr(runner_class, "_run", lambda self, x: np.zeros_like(x))
    with pytest.raises(ExportVerificationError, match=str(good.path)):
        write(images=verify_images, verbose=False)
    assert (main.stat().st_ino, main.read_bytes()) == before
    assert [p.name for p in tmp_path.iterdir()] == [good.path.name]


def test_saved_model_refuses_to_replace_other_folders(lcnet, tmp_path):
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    (deploy / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"deploy.*without saved_model\.pb"):
        export.saved_model(lcnet, deploy, verify=False, verbose=False)
    assert [p.name for p in deploy.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("mine")
    with pytest.raises(ValueError, match="is a file"):
        export.saved_model(lcnet, tmp_path / "file", verify=False, verbose=False)
    # An existing SavedModel, or an empty folder, is replaced.
    sm = tmp_path / "sm"
    export.saved_model(lcnet, sm, verify=False, verbose=False)
    (sm / "stale").write_text("from the old export")
    export.saved_model(lcnet, sm, verify=False, verbose=False)
    assert (sm / "saved_model.pb").is_file() and not (sm / "stale").exists()
    (tmp_path / "empty").mkdir()
    export.saved_model(lcnet, tmp_path / "empty", verify=False, verbose=False)
    assert (tmp_path / "empty" / "saved_model.pb").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy", "empty", "file", "sm"]


# ----------------------------------------------------------------------- tflite details


def test_int8_with_float32_io(lcnet, tmp_path, verify_images, calibration_images):
    """io_type="float32": the model quantizes its input and dequantizes its output itself."""
    result = _int8_export(
        lcnet, tmp_path / "int8f.tflite", "float32", verify_images, calibration_images
    )
    assert result.verification.passed
    interpreter = tflite_interpreter(result.path)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert inp["dtype"] == np.float32 and out["dtype"] == np.float32
    info = export.tflite_model_info(result.path)
    assert {"QUANTIZE", "DEQUANTIZE"} <= set(info["ops"])
    assert info["weight_bytes"].get("int8", 0) > 0 and info["weight_bytes"].get("float32", 0) == 0


def test_dynamic_range_weights_are_4x_smaller(tmp_path, verify_images):
    """``dynamic`` stores int8 weights: ~1/4 of float32 for a model with large kernels
    (the converter keeps tensors under 1024 values, such as biases, in float)."""
    keras.utils.set_random_seed(0)
    x = keras.Input((None, None, 3), name="blurry")
    y = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    y = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(y)
    y = keras.layers.Conv2D(3, 3, padding="same")(y)
    model = keras.Model(x, keras.layers.Add()([x, y]))
    sizes = {}
    for quantization in ("none", "dynamic"):
        result = export.tflite(
            model,
            tmp_path / f"{quantization}.tflite",
            quantization=quantization,
            images=verify_images,
            verbose=False,
        )
        assert result.verification.passed
        sizes[quantization] = sum(export.tflite_model_info(result.path)["weight_bytes"].values())
    kernel_values = sum(int(np.prod(w.shape)) for w in model.weights if len(w.shape) == 4)
    assert sizes["none"] >= 4 * kernel_values  # (zero biases are stored once)
    assert 3.5 < sizes["none"] / sizes["dynamic"] <= 4.0, sizes


def test_frozen_cache_traces_once_and_does_not_keep_the_model_alive(tmp_path, monkeypatch):
    import gc
    import importlib
    import weakref

    tflite_module = importlib.import_module("export.tflite")
    traced = []
    original = tflite_module.frozen_function
    monkeypatch.setattr(
        tflite_module, "frozen_function", lambda *a: traced.append(1) or original(*a)
    )
    # "windows": nothing to switch, the case where the cache used to hold the model itself.
    model = tfdeblur.build_model("lcnet", preset="tiny", lc_method="windows")
    for quantization in ("none", "float16"):
        export.tflite(model, tmp_path / f"{quantization}.tflite", quantization, verify=False)
    assert len(traced) == 1  # the second quantization reused the frozen function
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None and len(tflite_module._FROZEN_CACHE) == 0


def _is_window_of(crop: np.ndarray, images) -> bool:
    h, w = crop.shape[:2]
    for image in images:
        if image.shape[0] >= h and image.shape[1] >= w:
            windows = np.lib.stride_tricks.sliding_window_view(image, (h, w, 3))[..., 0, :, :, :]
            # Compare away from the two pixels pinned to 0 and 1 (first and last).
            if np.any(np.all(windows[..., 1:-1, :, :] == crop[1:-1], axis=(-3, -2, -1))):
                return True
    return False


def test_calibration_at_a_fixed_input_size_uses_crops_of_that_size(tmp_path, gopro_pairs):
    """A fixed-size model calibrates on random crops of its own size from the dataset
    (not smaller crops upscaled); images too small for it are upscaled, with a warning."""
    blurry, sharp = gopro_pairs["Istanbul"]
    frames = []
    for i in range(3):
        frame = blurry[100 * i : 100 * i + 96, 200 * i : 200 * i + 128]
        frames.append(frame)
        image_io.write_image(tmp_path / "blur" / f"{i}.png", frame)
        image_io.write_image(tmp_path / "sharp" / f"{i}.png", sharp[:96, :128])
    frames = [image_io.read_image(tmp_path / "blur" / f"{i}.png") for i in range(3)]  # 8-bit
    model = tfdeblur.build_model("lcnet", preset="tiny")
    samples = [
        x for (x,) in representative_dataset(model, tmp_path, num_samples=4, input_size=(64, 80))()
    ]
    assert len(samples) == 4 and all(x.shape == (1, 64, 80, 3) for x in samples)
    assert all(_is_window_of(x[0], frames) for x in samples)
    with pytest.warns(UserWarning, match="4 of 4 calibration images are smaller than the input"):
        samples = list(
            representative_dataset(model, tmp_path, num_samples=4, input_size=(100, 200))()
        )
    assert all(x.shape == (1, 100, 200, 3) for (x,) in samples)
