"""Shared test set-up: quiet TensorFlow, two logical CPU devices, the GOPRO samples, the
``tf_only`` marker and one random seed per test.

The layer and model tests also run under ``KERAS_BACKEND=jax`` and ``KERAS_BACKEND=torch``;
a test marked ``@pytest.mark.tf_only`` (it traces a ``tf.function``, takes TensorFlow
gradients or converts to TFLite / ONNX) is skipped there.
"""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

import keras  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.config.backend()

if BACKEND == "tensorflow":
    import tensorflow as tf

    # Two logical CPU devices so MirroredStrategy can be tested without a GPU. This must
    # happen before TensorFlow initialises its devices, i.e. before any test runs an op.
    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )


def pytest_collection_modifyitems(config, items):
    if BACKEND == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"needs the TensorFlow backend (KERAS_BACKEND={BACKEND})")
    for item in items:
        if "tf_only" in item.keywords:
            item.add_marker(skip)


REPO = pathlib.Path(__file__).resolve().parents[1]
GOPRO_SAMPLES = REPO.parent / "shared" / "gopro_samples"


@pytest.fixture(scope="session")
def gopro_samples() -> pathlib.Path:
    """Folder of real GOPRO pairs (``../shared/gopro_samples``); skips when absent (fails
    under ``CI=true``, see :func:`tests.utils.skip_or_fail`)."""
    from tests.utils import skip_or_fail

    if not (GOPRO_SAMPLES / "Istanbul_blur1.png").is_file():
        skip_or_fail(f"GOPRO samples not found at {GOPRO_SAMPLES}")
    return GOPRO_SAMPLES


@pytest.fixture(autouse=True)
def _seed_and_clear_keras_session():
    # Every test starts from the same seed, so that weights a test does not seed itself
    # (and with them, the size of its float32 rounding) are the same on every run: a
    # failure reproduces instead of coming and going with the draw.
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session(free_memory=False)  # gc.collect() costs ~0.4 s a test
