"""Keras 3 multi-backend: a ``.keras`` file saved under TensorFlow loads under JAX and
PyTorch and gives the same output, and importing tfdeblur there needs no TensorFlow.

Each check runs the other backend in a fresh process (``KERAS_BACKEND`` is read once, when
Keras is imported), so these tests run from the TensorFlow test run. Fitting under every
backend is ``tests/models/test_fit.py``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tfdeblur
from tests.utils import REPO, to_numpy

pytestmark = pytest.mark.tf_only  # the files are saved under TensorFlow

BACKENDS = {"jax": "jax", "torch": "torch"}  # backend -> the package it needs

# (model, preset, input shape): every network's tiny preset and LCNet's paper preset,
# at odd sizes so that the models' pad-and-crop runs too.
CASES = [
    ("lcnet", "tiny", (1, 19, 26, 3)),
    ("lcnet", "paper", (1, 18, 22, 3)),
    ("deepdeblur", "tiny", (1, 19, 26, 3)),
    ("sarn", "tiny", (1, 19, 26, 3)),
    ("sarn_video", "tiny", (1, 3, 17, 22, 3)),
    ("saphn", "tiny", (1, 19, 26, 3)),
]

# The bound. Measured (TF 2.21 saves, JAX 0.10.2 / torch 2.13 CPU load, float32,
# AMD EPYC): at most 2.1e-6 max-abs (SARN video tiny on PyTorch; LCNet with a keras.ops
# LCBlock, 1.9e-6), far inside it.
TOLERANCE = 1e-4


def _backend_or_skip(backend: str) -> None:
    if importlib.util.find_spec(BACKENDS[backend]) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{BACKENDS[backend]} is not installed (CI installs tfdeblur[jax,torch])")
        pytest.skip(f"{BACKENDS[backend]} is not installed")


def _run(backend: str, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def saved_under_tensorflow(tmp_path_factory):
    """Every case built, saved as ``.keras`` and run under TensorFlow (this process)."""
    folder = tmp_path_factory.mktemp("tf_saved")
    cases = []
    for k, (name, preset, shape) in enumerate(CASES):
        model = tfdeblur.build_model(name, preset)
        x = np.random.default_rng(k).uniform(size=shape).astype(np.float32)
        path, x_path = folder / f"{name}_{preset}.keras", folder / f"x{k}.npy"
        model.save(path)
        np.save(x_path, x)
        expected = to_numpy(model(x, training=False))
        cases.append((f"{name}/{preset}", str(path), str(x_path), expected))
    return folder, cases


@pytest.mark.slow
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_keras_files_saved_under_tensorflow_give_the_same_output(backend, saved_under_tensorflow):
    _backend_or_skip(backend)
    folder, cases = saved_under_tensorflow
    jobs = [
        (label, path, x_path, str(folder / f"{backend}_{k}.npy"))
        for k, (label, path, x_path, _) in enumerate(cases)
    ]
    result = _run(
        backend,
        f"""
        import json, sys
        import keras, numpy as np
        import tfdeblur  # registers the custom layers
        assert keras.config.backend() == {backend!r}, keras.config.backend()
        for label, path, x_path, y_path in json.loads({json.dumps(jobs)!r}):
            model = keras.models.load_model(path, safe_mode=True)
            # predict: one compiled function on JAX (op-by-op eager dispatch is minutes).
            np.save(y_path, model.predict(np.load(x_path), verbose=0))
        """,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    for (label, _, _, expected), (_, _, _, y_path) in zip(cases, jobs, strict=True):
        got = np.load(y_path)
        assert got.shape == expected.shape, label
        error = float(np.max(np.abs(got - expected)))
        assert error <= TOLERANCE, f"{label} under {backend}: max-abs {error:.2e}"


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_import_and_build_need_no_tensorflow(backend):
    # Building and fitting every network under each backend is tests/models/test_fit.py.
    _backend_or_skip(backend)
    result = _run(
        backend,
        """
        import sys
        import keras_layers, tfdeblur, tfdeblur.models, tfdeblur.models.registry
        from tfdeblur import data  # discovery and validation only
        tfdeblur.build_model("saphn", "tiny")  # building runs every layer's call once
        loaded = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow."))
        print(len(loaded), loaded[:5])
        """,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.startswith("0 "), f"TensorFlow was imported: {result.stdout}"


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_tensorflow_only_parts_say_so(backend, tmp_path):
    _backend_or_skip(backend)
    result = _run(
        backend,
        f"""
        import sys
        import numpy as np
        import tfdeblur
        from tfdeblur.backend import BackendError
        from tfdeblur.cli import main

        code = main(["export", "--model", "lcnet", "--format", "onnx", "--output", {str(tmp_path / "m.onnx")!r}])
        assert code == 2, code
        try:
            tfdeblur.deblur(np.zeros((8, 8, 3), np.float32), model="lcnet")
        except BackendError as err:
            print("API:", err)
        """,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    cli_error = [line for line in result.stderr.splitlines() if line.startswith("tfdeblur export")]
    assert len(cli_error) == 1, result.stderr[-2000:]
    assert f"needs the TensorFlow backend, but Keras runs on '{backend}'" in cli_error[0]
    assert "KERAS_BACKEND=tensorflow" in cli_error[0]
    assert "API: tfdeblur.deblur needs the TensorFlow backend" in result.stdout
    assert not (tmp_path / "m.onnx").exists()
