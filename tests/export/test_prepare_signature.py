"""The shared input signature and the switch to export formulations."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdeblur
from export.prepare import prepare_for_export
from export.signature import as_model_input, input_signature, parse_input_size


@pytest.mark.parametrize("name", tfdeblur.list_models())
def test_input_signature_of_every_network(name):
    model = tfdeblur.build_model(name, preset="tiny")
    rank = len(model.inputs[0].shape)
    spec = input_signature(model)
    assert spec.dtype == tf.float32 and spec.name == model.inputs[0].name
    assert spec.shape.as_list() == [None] * (rank - 1) + [3]
    fixed = input_signature(model, batch_size=1, input_size="72x40")
    assert fixed.shape.as_list() == [1] + [None] * (rank - 4) + [72, 40, 3]


def test_lcnet_input_is_named_blurry():
    spec = input_signature(tfdeblur.build_model("lcnet", preset="tiny"), batch_size=1)
    assert spec.name == "blurry" and spec.shape.as_list() == [1, None, None, 3]


@pytest.mark.parametrize(
    "value, expected",
    [(None, None), ("720x1280", (720, 1280)), (" 64 X 96 ", (64, 96)), ((8, 9), (8, 9))],
)
def test_parse_input_size(value, expected):
    assert parse_input_size(value) == expected


@pytest.mark.parametrize("value", ["720", "0x5", "axb", (1, 2, 3), (0, 4), (1.5, 2), "-3x4"])
def test_parse_input_size_rejects(value):
    with pytest.raises(ValueError, match="input_size"):
        parse_input_size(value)


def test_input_signature_rejects_bad_batch():
    with pytest.raises(ValueError, match="batch_size"):
        input_signature(tfdeblur.build_model("lcnet", preset="tiny"), batch_size=0)


def test_multi_input_model_is_rejected():
    a, b = keras.Input((None, None, 3)), keras.Input((None, None, 3))
    model = keras.Model([a, b], keras.layers.Add()([a, b]))
    with pytest.raises(ValueError, match="2 inputs"):
        input_signature(model)


def test_as_model_input_layouts():
    frame = np.zeros((4, 5, 3), np.float32)
    assert as_model_input((None, None, None, 3), frame).shape == (1, 4, 5, 3)
    assert as_model_input((None, None, None, None, 3), [frame] * 3).shape == (1, 3, 4, 5, 3)
    with pytest.raises(ValueError):
        as_model_input((None, None, None, None, 3), frame)


# ----------------------------------------------------------------------- prepare


def test_lcnet_switched_to_windows_with_same_numbers():
    keras.utils.set_random_seed(1)
    model = tfdeblur.build_model("lcnet", preset="tiny")
    blocks = [layer for layer in model.layers if type(layer).__name__ == "LCBlock"]
    assert blocks and all(b.method == "depthwise" for b in blocks)
    prepared, switches = prepare_for_export(model)
    assert sorted(s.layer for s in switches) == sorted(b.name for b in blocks)
    assert all((s.key, s.old, s.new) == ("method", "depthwise", "windows") for s in switches)
    for new, old in zip(prepared.weights, model.weights, strict=True):
        np.testing.assert_array_equal(new.numpy(), old.numpy())
    x = np.random.default_rng(0).random((1, 37, 45, 3), dtype=np.float32)
    np.testing.assert_allclose(prepared(x), model(x), atol=2e-5)
    assert all(b.method == "depthwise" for b in blocks)  # the original is untouched
    # Built with the export formulation (or its legacy name): nothing to switch.
    for method in ("windows", "slices"):
        model = tfdeblur.build_model("lcnet", preset="tiny", lc_method=method)
        prepared, switches = prepare_for_export(model)
        assert prepared is model and switches == []


@keras.saving.register_keras_serializable(package="tfdeblur_export_tests")
class _Scaled(keras.layers.Layer):
    """Test layer: ``x * w`` ("train") or ``w * x`` ("export"): same numbers, same weights."""

    EXPORT_OVERRIDES = {"form": "export"}

    def __init__(self, form="train", units=3, **kwargs):
        super().__init__(**kwargs)
        self.form, self.units = form, units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(self.units,), initializer="random_normal")

    def call(self, x):
        return x * self.w if self.form == "train" else self.w * x

    def get_config(self):
        return {**super().get_config(), "form": self.form, "units": self.units}


@keras.saving.register_keras_serializable(package="tfdeblur_export_tests")
class _Resized(_Scaled):
    """Test layer whose export override changes its weights: must be refused."""

    EXPORT_OVERRIDES = {"units": 1}


def test_overrides_reach_nested_models():
    inner_in = keras.Input((None, None, 3))
    inner = keras.Model(inner_in, _Scaled(name="deep")(inner_in), name="inner")
    x = keras.Input((None, None, 3))
    model = keras.Model(x, _Scaled(name="top")(inner(x)), name="outer")
    prepared, switches = prepare_for_export(model)
    assert sorted(s.layer for s in switches) == ["deep", "top"]
    assert prepared.get_layer("inner").get_layer("deep").form == "export"
    data = np.ones((1, 2, 2, 3), np.float32)
    np.testing.assert_allclose(prepared(data), model(data), rtol=1e-6)


def test_override_that_changes_weights_is_refused():
    x = keras.Input((None, None, 3))
    model = keras.Model(x, _Resized(name="bad")(x))
    with pytest.raises(ValueError, match="must not change|changed weight"):
        prepare_for_export(model)


def test_switches_are_reported_with_same_numbers(capsys):
    x = keras.Input((None, None, 3))
    model = keras.Model(x, _Scaled(name="top")(_Scaled(name="second")(x)), name="two")
    prepared, switches = prepare_for_export(model, verbose=True)
    assert prepared is not model
    assert all((s.key, s.old, s.new) == ("form", "train", "export") for s in switches)
    printed = capsys.readouterr().out
    assert "switched 2 layer setting(s)" in printed and "'train' -> 'export'" in printed
    for new, old in zip(prepared.weights, model.weights, strict=True):
        np.testing.assert_array_equal(new.numpy(), old.numpy())
    data = np.random.default_rng(0).random((1, 3, 4, 3), dtype=np.float32)
    np.testing.assert_allclose(prepared(data), model(data), rtol=1e-6)
    # The original is untouched.
    assert model.get_layer("top").form == "train"
