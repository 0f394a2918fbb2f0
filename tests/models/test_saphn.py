"""SAPHN: parameter count, any-size inputs, reload in a fresh process, one training step."""

import keras
import numpy as np
import pytest

import tfdeblur
from tests.utils import load_and_run_in_fresh_process


def conv(cin, cout, k=3):
    return k * k * cin * cout + cout


def saphn_param_count(widths, m, p, c2, k, meta):
    """Sec. 2 / 3.1 counted by hand (readings in tfdeblur/models/saphn.py)."""

    def attention(c):  # f_p, f_q (1x1, C2 maps), f_M2 (1x1, C)
        return 2 * conv(c, c2, 1) + conv(c, c, 1)

    def dynamic(c):  # meta-layer conv3x3(meta) + conv3x3(k*k), filter W (k, k, C, C) + bias
        return conv(c, meta) + conv(meta, k * k) + k * k * c * c + c

    def block(c, cross):  # conv -> global-local (self [+ cross] attention + PDF) -> conv
        return 2 * conv(c, c) + attention(c) * (2 if cross else 1) + dynamic(c)

    encoder = conv(3, widths[0]) + sum(
        (conv(widths[s - 1], w) if s else 0) + m * block(w, False) for s, w in enumerate(widths)
    )
    decoder = conv(widths[0], 3) + sum(
        p * block(w, True) + (16 * w * widths[s - 1] + widths[s - 1] if s else 0)
        for s, w in enumerate(widths)
    )
    return 3 * (encoder + decoder) + 2 * attention(widths[-1])  # 3 levels + 2 cross-level


def test_paper_preset_parameter_count_and_one_run():
    model = tfdeblur.build_model("saphn")
    expected = saphn_param_count([32, 64, 128], m=2, p=2, c2=128, k=5, meta=128)
    assert model.count_params() == expected == 17_553_357
    x = np.random.default_rng(0).uniform(size=(1, 19, 13, 3)).astype(np.float32)
    y = np.asarray(model(x))
    assert y.shape == x.shape and np.isfinite(y).all()


def test_tiny_preset_parameter_count():
    config = tfdeblur.get_model_config("saphn", "tiny")
    model = tfdeblur.build_model("saphn", preset="tiny")
    expected = saphn_param_count(
        config["widths"],
        config["encoder_blocks"],
        config["decoder_blocks"],
        config["attention_maps"],
        config["filter_size"],
        config["meta_filters"],
    )
    assert model.count_params() == expected


@pytest.fixture(scope="module")
def tiny():
    return tfdeblur.build_model("saphn", preset="tiny")


@pytest.mark.parametrize("h,w", [(29, 35), (33, 47)])
def test_odd_sizes_equal_padded_computation(tiny, h, w):
    x = np.random.default_rng(h).uniform(size=(2, h, w, 3)).astype(np.float32)
    y = np.asarray(tiny(x))
    assert y.shape == x.shape
    multiple = 2 * 2 ** (len(tfdeblur.get_model_config("saphn", "tiny")["widths"]) - 1)
    ph, pw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    assert (ph, pw) != (h, w)
    padded = np.zeros((2, ph, pw, 3), np.float32)
    padded[:, :h, :w] = x
    np.testing.assert_allclose(np.asarray(tiny(padded))[:, :h, :w], y, rtol=1e-5, atol=1e-5)


def test_images_of_a_batch_are_processed_independently(tiny):
    # The patches of all images share the batch axis inside the model; they must not mix.
    rng = np.random.default_rng(5)
    x = rng.uniform(size=(2, 16, 24, 3)).astype(np.float32)
    both = np.asarray(tiny(x))
    np.testing.assert_allclose(both[1:], np.asarray(tiny(x[1:])), rtol=1e-5, atol=1e-5)


def test_save_and_load_in_fresh_process_reproduces_output(tiny, tmp_path):
    x = np.random.default_rng(3).uniform(size=(1, 21, 34, 3)).astype(np.float32)
    path = tmp_path / "saphn.keras"
    tiny.save(path)
    fresh = load_and_run_in_fresh_process(path, x, tmp_path)
    np.testing.assert_allclose(fresh, np.asarray(tiny(x)), rtol=1e-6, atol=1e-6)


def test_one_training_step_changes_weights():
    model = tfdeblur.build_model("saphn", preset="tiny")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", run_eagerly=True)
    rng = np.random.default_rng(4)
    x = rng.uniform(size=(2, 32, 32, 3)).astype(np.float32)
    target = rng.uniform(size=(2, 32, 32, 3)).astype(np.float32)
    watched = ["l3_enc_s1_rb0", "l1_dec_s1_rb0", "l2_cross_level", "l1_dec_out"]
    before = {n: [w.copy() for w in model.get_layer(n).get_weights()] for n in watched}
    history = model.fit(x, target, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    for name in watched:
        after = model.get_layer(name).get_weights()
        assert any(not np.array_equal(a, b) for a, b in zip(after, before[name], strict=True)), name


def test_train_preset_follows_section_3_1():
    preset = tfdeblur.get_train_preset("saphn")
    assert preset["batch_size"] == 6 and preset["patch_size"] == 256
    assert preset["optimizer"] == "adam" and preset["learning_rate"] == 1e-4
    assert preset["lr_schedule"] == {
        "type": "step",
        "step_size": 200_000,
        "unit": "iterations",
        "factor": 0.5,
    }


def test_bad_config_raises():
    with pytest.raises(ValueError, match="filter_size"):
        tfdeblur.build_model("saphn", preset="tiny", filter_size=4)
    with pytest.raises(ValueError, match="widths"):
        tfdeblur.build_model("saphn", preset="tiny", widths=[])
    with pytest.raises(ValueError, match="encoder_blocks"):
        tfdeblur.build_model("saphn", preset="tiny", encoder_blocks=0)
