"""No two weights of a network start identical (Keras 3 initializer instances repeat
their draws), and fresh_initializer keeps Keras' seeded semantics."""

import keras
import numpy as np
import pytest

import tfdeblur
from keras_layers.initializers import fresh_initializer


def test_fresh_initializer_draws_anew_unless_seeded():
    shared = keras.initializers.GlorotUniform()
    assert np.array_equal(shared((3, 3)), shared((3, 3)))  # the pitfall it exists for
    a, b = fresh_initializer(shared), fresh_initializer(shared)
    assert not np.array_equal(a((3, 3)), b((3, 3)))
    seeded = keras.initializers.GlorotUniform(seed=7)
    np.testing.assert_array_equal(fresh_initializer(seeded)((3, 3)), seeded((3, 3)))
    assert isinstance(fresh_initializer("he_normal"), keras.initializers.HeNormal)


@pytest.mark.parametrize("name", tfdeblur.list_models())
def test_no_two_random_weights_of_a_network_start_equal(name):
    # The tiny presets have the layer types of the paper presets; every kernel drawn at
    # random (constant-initialised ones, zeros and ones, are left out) must be its own.
    model = tfdeblur.build_model(name, preset="tiny")
    drawn = [(w.path, w.numpy()) for w in model.weights if np.unique(w.numpy()).size > 2]
    assert len(drawn) > 5
    for i, (path_a, a) in enumerate(drawn):
        for path_b, b in drawn[i + 1 :]:
            assert a.shape != b.shape or not np.array_equal(a, b), (path_a, path_b)
