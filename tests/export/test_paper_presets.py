"""Every network's paper preset in every float32 format agrees with Keras to <= 1e-4.

Slow: the 15 tests take ~4 min on the project's 2-core machine (SAPHN's ONNX conversion
alone 125 s, its TFLite 21 s, every other one under 17 s).

The max-abs difference is computed here, on the artifact's output from its deployment
runtime (the runners of :mod:`tfdeblur.infer.runners`: ``tf.saved_model.load``, the LiteRT
interpreter, onnxruntime) against ``model(x)``, not by ``export.verify`` (whose PSNR
bound is 45 dB). Inputs: a seeded uniform-random 64x64 image in [0, 1] (no data files
needed); the video network a 3-frame clip of them. Weights: the paper presets' own
seeded initialisation. Every exporter is called with ``verify=False``, so this file alone
decides.

The bound is on max-abs in units of the Keras output's range where that exceeds 1
(``max(1, max - min)``): float32 rounding grows with the values, and untrained SAPHN
spans 81 (trained networks output about [0, 1], where it is the plain max-abs).
Measured max-abs (AMD EPYC, AVX-512; TFLite with XNNPACK), SavedModel / TFLite / ONNX:
LCNet 0 / 1.2e-5 / 2.0e-5, DeepDeblur 0 / 2.8e-6 / 8.9e-7, SAPHN 0 / 1.8e-4 / 1.3e-4
(2.2e-6 / 1.6e-6 of its range 81), SARN 0 / 3.4e-6 / 3.9e-6, SARN video 0 / 1.9e-5 /
2.2e-5: the 1e-4 bound has a margin of 4.5x or more, and one weight off by 1%
of its kernel's range (the negative control) moves the outputs by 3.4e-4 (DeepDeblur)
to 1.1e-3 of the range (SAPHN) or more.
"""

import keras
import numpy as np
import pytest

import export
import tfdeblur
from tfdeblur.infer.runners import load_runner

ATOL = 1e-4
SIZE = 64
CLIP_LENGTH = 3
FORMATS = ("saved_model", "tflite", "onnx")
SUFFIX = {"saved_model": "", "tflite": ".tflite", "onnx": ".onnx"}

pytestmark = pytest.mark.slow


def model_input(model):
    """``(1, 64, 64, 3)`` or, for a video network, ``(1, 3, 64, 64, 3)``."""
    video = len(model.inputs[0].shape) == 5
    shape = (1, CLIP_LENGTH, SIZE, SIZE, 3) if video else (1, SIZE, SIZE, 3)
    return np.random.default_rng(0).random(shape, dtype=np.float32)


@pytest.fixture(scope="module", params=tfdeblur.list_models())
def paper(request):
    """``(name, model, x, model(x))`` for the network's paper preset."""
    keras.utils.set_random_seed(0)
    model = tfdeblur.build_model(request.param, preset="paper")
    x = model_input(model)
    return request.param, model, x, np.asarray(model(x, training=False))


def max_abs(a, b) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


@pytest.mark.parametrize("fmt", FORMATS)
def test_float32_artifact_matches_keras(paper, fmt, tmp_path):
    name, model, x, expected = paper
    path = tmp_path / f"{name}{SUFFIX[fmt]}"
    getattr(export, fmt)(model, path, verify=False, verbose=False)
    runner = load_runner(path)
    assert runner.kind == fmt and runner.input_size is None
    got = runner.run_batch(x)
    scale = max(1.0, float(np.ptp(expected)))
    error = max_abs(got, expected) / scale
    print(f"{name} {fmt}: max-abs {error * scale:.3g}, range {scale:.3g}")  # with -s
    assert error <= ATOL, f"{name} {fmt}: max-abs {error * scale:.3g} > {ATOL} x {scale:.3g}"

    # Negative control: one weight of the Keras model off by 1% of its kernel's range
    # (the largest element of the last kernel, which every network's output depends on
    # at initialisation) and the same comparison fails: the bound resolves a single wrong
    # weight. Measured change: 3.4e-4 (DeepDeblur, whose outputs are its [0, 255] latent
    # / 255) to 8.8e-2 (SAPHN, 1.1e-3 of its range).
    kernel = [w for w in model.weights if len(w.shape) >= 2][-1]
    original = kernel.numpy()
    perturbed = original.copy()
    index = np.unravel_index(np.argmax(np.abs(original)), original.shape)
    perturbed[index] += 0.01 * float(np.ptp(original))
    kernel.assign(perturbed)
    try:
        changed = np.asarray(model(x, training=False))
    finally:
        kernel.assign(original)
    assert max_abs(got, changed) / scale > ATOL, f"{name}: a perturbed weight went unnoticed"
