"""Every network trains with plain ``model.fit`` under JAX and PyTorch.

CI runs the model tests under JAX and PyTorch too (``KERAS_BACKEND``): the layers are
trainable there, not only runnable. A few Adam steps on one tiny batch with the L1 loss
must lower that batch's loss. On TensorFlow, training is ``tfdeblur.train.loop``'s and is
tested in ``tests/test_training.py``.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfdeblur

# (model, input shape): tiny presets, the clip network on 2-frame clips.
CASES = [
    ("lcnet", (2, 16, 16, 3)),
    ("deepdeblur", (2, 16, 16, 3)),
    ("sarn", (2, 16, 16, 3)),
    ("sarn_video", (1, 2, 16, 16, 3)),
    ("saphn", (2, 16, 16, 3)),
]
STEPS = 3


@pytest.mark.skipif(
    keras.config.backend() == "tensorflow", reason="TensorFlow training: tests/test_training.py"
)
@pytest.mark.parametrize("name,shape", CASES, ids=[c[0] for c in CASES])
def test_fit_lowers_the_l1_loss(name, shape):
    keras.utils.set_random_seed(0)
    model = tfdeblur.build_model(name, "tiny")
    rng = np.random.default_rng(0)
    sharp = rng.uniform(size=shape).astype(np.float32)
    blurry = np.clip(sharp + rng.normal(scale=0.1, size=shape), 0, 1).astype(np.float32)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mean_absolute_error")
    before = model.evaluate(blurry, sharp, batch_size=shape[0], verbose=0)
    history = model.fit(blurry, sharp, batch_size=shape[0], epochs=STEPS, verbose=0)
    after = model.evaluate(blurry, sharp, batch_size=shape[0], verbose=0)
    losses = history.history["loss"]
    assert len(losses) == STEPS and np.isfinite(losses).all(), losses
    assert after < before, f"{name} on {keras.config.backend()}: L1 {before:.4f} -> {after:.4f}"
