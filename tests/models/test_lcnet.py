"""LCNet: parameter count, any-size inputs, reload in a fresh process, the registry."""

import keras
import numpy as np
import pytest

import tfdeblur
from tests.utils import load_and_run_in_fresh_process, to_numpy


def conv_params(cin, cout, k=3):
    return cin * cout * k * k + cout


def lcnet_param_count(widths, res_blocks, lc_blocks, squeeze):
    """Sec. 2.1 counted by hand: EBlock = conv + res-blocks; DBlock = LCBlocks + conv(->4 x out)."""
    total, cin = 0, 3
    for w in widths:
        total += conv_params(cin, w) + res_blocks * 2 * conv_params(w, w)
        cin = w
    for w, out in zip(widths[::-1], [widths[1], widths[0], 3], strict=True):
        inner = w // squeeze
        total += lc_blocks * (2 * conv_params(w, inner) + conv_params(inner, w))
        total += conv_params(w, 4 * out)
    return total


def test_paper_preset_parameter_count_and_size():
    model = tfdeblur.build_model("lcnet")
    expected = lcnet_param_count([18, 36, 72], 3, 2, 2)
    assert model.count_params() == expected == 700_968
    # Table 1: "2.7 MB" of float32 weights, which 2.67 MiB rounds to (2.80 in 10^6 B).
    assert round(expected * 4 / 2**20, 1) == 2.7 and round(expected * 4 / 1e6, 2) == 2.80


@pytest.mark.parametrize("h,w", [(16, 16), (17, 29), (31, 8), (5, 3)])
def test_any_input_size_equals_padded_computation(h, w):
    model = tfdeblur.build_model("lcnet", preset="tiny")
    x = np.random.default_rng(h * w).uniform(size=(1, h, w, 3)).astype(np.float32)
    y = to_numpy(model(x))
    assert y.shape == x.shape
    ph, pw = -(-h // 8) * 8, -(-w // 8) * 8
    padded = np.zeros((1, ph, pw, 3), np.float32)
    padded[:, :h, :w] = x
    np.testing.assert_allclose(to_numpy(model(padded))[:, :h, :w], y, rtol=1e-5, atol=1e-5)


def test_zero_residual_returns_input_exactly():
    # The output is input + residual (sec. 2.1): with the last conv zeroed it is the input.
    model = tfdeblur.build_model("lcnet", preset="tiny")
    layer = model.get_layer("dec1_conv")
    layer.set_weights([np.zeros_like(v) for v in layer.get_weights()])
    x = np.random.default_rng(0).uniform(size=(2, 24, 20, 3)).astype(np.float32)
    np.testing.assert_array_equal(to_numpy(model(x)), x)


def test_output_is_unclamped():
    model = tfdeblur.build_model("lcnet", preset="tiny")
    x = np.full((1, 16, 16, 3), 1.0, np.float32)
    layer = model.get_layer("dec1_conv")
    kernel, bias = layer.get_weights()
    layer.set_weights([np.zeros_like(kernel), np.full_like(bias, 0.5)])
    assert to_numpy(model(x)).max() == pytest.approx(1.5)


def test_save_and_load_in_fresh_process_reproduces_output(tmp_path):
    model = tfdeblur.build_model("lcnet", preset="tiny")
    x = np.random.default_rng(3).uniform(size=(1, 21, 34, 3)).astype(np.float32)
    path = tmp_path / "lcnet.keras"
    model.save(path)
    fresh = load_and_run_in_fresh_process(path, x, tmp_path)
    np.testing.assert_array_equal(fresh, to_numpy(model(x)))


def test_safe_mode_load_in_process(tmp_path):
    # A legacy formulation name maps to the one formulation, saved as such.
    model = tfdeblur.build_model("lcnet", preset="tiny", lc_method="slices")
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert loaded.get_layer("dec1_lc0").method == "windows"
    x = np.random.default_rng(4).uniform(size=(1, 16, 24, 3)).astype(np.float32)
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(model(x)))


def test_registry_errors_name_what_exists():
    with pytest.raises(KeyError, match="lcnet"):
        tfdeblur.build_model("nosuchnet")
    with pytest.raises(KeyError, match="tiny"):
        tfdeblur.build_model("lcnet", preset="huge")
    with pytest.raises(TypeError, match="widths"):
        tfdeblur.build_model("lcnet", preset="tiny", width=3)
    with pytest.raises(ValueError, match="already registered"):
        tfdeblur.register_model("lcnet", presets={"paper": {}})(lambda: None)
    assert "lcnet" in tfdeblur.list_models()
