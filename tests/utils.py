"""Helpers shared by the tests (import as ``from tests.utils import ...``)."""

from __future__ import annotations

import importlib
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def skip_or_fail(reason: str):
    """``pytest.skip(reason)``; under ``CI=true`` ``pytest.fail`` instead, so that CI
    never passes with a test silently left out (missing torch, missing ``../shared``)."""
    if os.environ.get("CI", "").strip().lower() in ("true", "1"):
        pytest.fail(f"{reason} (CI=true: required, not skipped)", pytrace=False)
    pytest.skip(reason)


def import_or_skip(name: str):
    """``importlib.import_module(name)``, or :func:`skip_or_fail` when it is missing."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        skip_or_fail(f"{name} is not installed ({err})")


def load_and_run_in_fresh_process(model_path, inputs: np.ndarray, tmp_path) -> np.ndarray:
    """Load ``model_path`` with ``keras.models.load_model(safe_mode=True)`` in a new Python
    process (after ``import tfdeblur`` only) and return its output on ``inputs``."""
    tmp_path = pathlib.Path(tmp_path)
    x_path, y_path = tmp_path / "fresh_in.npy", tmp_path / "fresh_out.npy"
    np.save(x_path, inputs)
    code = textwrap.dedent(
        f"""
        import os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
        import numpy as np, keras
        import tfdeblur  # registers the custom layers
        model = keras.models.load_model({str(model_path)!r}, safe_mode=True)
        y = model(np.load({str(x_path)!r}), training=False)
        y = y[0] if isinstance(y, (list, tuple)) else y
        np.save({str(y_path)!r}, keras.ops.convert_to_numpy(y))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return np.load(y_path)


def to_numpy(x) -> np.ndarray:
    """A tensor of any Keras backend (or an array) as NumPy (``keras.ops.convert_to_numpy``:
    ``np.asarray`` refuses PyTorch tensors that require grad)."""
    import keras

    return keras.ops.convert_to_numpy(x)


def assert_layer_config_roundtrip(layer, inputs) -> None:
    """``from_config(get_config())`` rebuilds a layer that computes what ``layer`` does.

    The clone has the same config; built on ``inputs`` it has the same weights (count,
    names, shapes); with ``layer``'s weight values copied in it returns exactly
    ``layer(inputs)``, bit for bit (same ops on the same numbers).

    Args:
        layer: a Keras layer (built or not).
        inputs: what the layer is called on (an array, or a list for multi-input layers).
    """
    import keras

    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config
    expected = keras.tree.map_structure(to_numpy, layer(inputs))
    clone(inputs)  # builds it
    assert [(w.name, tuple(w.shape)) for w in clone.weights] == [
        (w.name, tuple(w.shape)) for w in layer.weights
    ]
    clone.set_weights(layer.get_weights())
    got = keras.tree.map_structure(to_numpy, clone(inputs))
    keras.tree.assert_same_structure(got, expected)
    for a, b in zip(keras.tree.flatten(got), keras.tree.flatten(expected), strict=True):
        np.testing.assert_array_equal(a, b)


def _serving_function(model):
    """``tf.function`` of ``model`` with batch 1 and the inputs' H, W (and C) as declared
    (``None`` = dynamic): one argument per model input, named ``input_<i>``."""
    import tensorflow as tf

    specs = [
        tf.TensorSpec((1, *t.shape[1:]), t.dtype, name=f"input_{i}")
        for i, t in enumerate(model.inputs)
    ]

    @tf.function(input_signature=specs)
    def serve(*args):
        return model(list(args) if len(args) > 1 else args[0])

    return serve, specs


def assert_converts_to_tflite_and_onnx(model, runs, rtol=1e-4, atol=1e-4) -> None:
    """Convert ``model`` to TFLite (builtin ops only) and ONNX, both with dynamic sizes,
    and check that they reproduce the Keras output on every entry of ``runs``.

    TFLite: the serving function is frozen first (``convert_variables_to_constants_v2``;
    kept as TFLite resource variables the weights would read NaN) and converted with
    ``supported_ops = [TFLITE_BUILTINS]``, which fails on any non-builtin op; each run
    resizes the inputs (``resize_tensor_input`` + ``allocate_tensors``). ONNX:
    ``tf2onnx.convert.from_function``, opset 17, run with onnxruntime.

    Args:
        model: Keras model with one output and one or more inputs ``(B, ..., C)``.
        runs: list of runs; a run is one array per model input, batch 1. Use at least two
            different spatial sizes.
        rtol, atol: tolerances of the comparison with ``model(inputs)``.
    """
    import onnxruntime
    import tensorflow as tf
    import tf2onnx
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    serve, specs = _serving_function(model)
    frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = Interpreter(model_content=converter.convert())
    proto, _ = tf2onnx.convert.from_function(serve, input_signature=specs, opset=17)
    session = onnxruntime.InferenceSession(proto.SerializeToString())

    def by_spec_name(items, key):
        # TFLite names inputs "input_0" or "serving_default_input_0:0", ONNX "input_0:0".
        return [
            next(item for item in items if key(item).split(":")[0].endswith(spec.name))
            for spec in specs
        ]

    tflite_inputs = by_spec_name(interpreter.get_input_details(), lambda d: d["name"])
    onnx_inputs = by_spec_name(session.get_inputs(), lambda i: i.name)
    for run in runs:
        run = [np.asarray(a, np.float32) for a in run]
        expected = np.asarray(model(run if len(run) > 1 else run[0]))
        for detail, array in zip(tflite_inputs, run, strict=True):
            interpreter.resize_tensor_input(detail["index"], array.shape)
        interpreter.allocate_tensors()
        for detail, array in zip(tflite_inputs, run, strict=True):
            interpreter.set_tensor(detail["index"], array)
        interpreter.invoke()
        got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, err_msg="TFLite")
        feed = {i.name: a for i, a in zip(onnx_inputs, run, strict=True)}
        got = session.run(None, feed)[0]
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, err_msg="ONNX")
