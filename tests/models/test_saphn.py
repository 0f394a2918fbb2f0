"""SAPHN: parameter count, any-size inputs, reload in a fresh process, one training step."""

import keras
import numpy as np
import pytest

import tfdeblur
from tests.utils import load_and_run_in_fresh_process, to_numpy


def conv(cin, cout, k=3):
    return k * k * cin * cout + cout


def saphn_param_count(widths, m, p, c2, k, meta):
    """Sec. 2 / 3.1 counted by hand (readings in tfdeblur/models/saphn.py)."""

    def attention(c):  # f_p, f_q (1x1, C2 maps), f_M2 (1x1, C)
        return 2 * conv(c, c2, 1) + conv(c, c, 1)

    def dynamic(c):  # meta-layer conv3x3(meta) + conv3x3(k*k) [meta None: conv3x3(k*k)],
        # filter W (k, k, C, C) + bias
        generator = conv(c, k * k) if meta is None else conv(c, meta) + conv(meta, k * k)
        return generator + k * k * c * c + c

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


# Paper preset by reading of the meta-layer (see DynamicFilter): two 3x3 layers with a
# 128-wide hidden layer, or one 3x3 convolution (meta_filters=None).
PAPER_PARAMETERS = {128: 17_553_357, None: 14_020_173}


def test_paper_preset_parameter_count_and_one_run():
    model = tfdeblur.build_model("saphn")
    meta = tfdeblur.get_model_config("saphn", "paper")["meta_filters"]
    expected = saphn_param_count([32, 64, 128], m=2, p=2, c2=128, k=5, meta=meta)
    assert model.count_params() == expected == PAPER_PARAMETERS[meta]
    x = np.random.default_rng(0).uniform(size=(1, 19, 13, 3)).astype(np.float32)
    y = to_numpy(model(x))
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
    y = to_numpy(tiny(x))
    assert y.shape == x.shape
    multiple = 2 * 2 ** (len(tfdeblur.get_model_config("saphn", "tiny")["widths"]) - 1)
    ph, pw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    assert (ph, pw) != (h, w)
    # The model pads with zeros, before centring (image value 0) or after (image 0.5).
    centred_first = tiny.get_layer("pad").input is tiny.get_layer("center").output
    padded = np.full((2, ph, pw, 3), 0.5 if centred_first else 0.0, np.float32)
    padded[:, :h, :w] = x
    np.testing.assert_allclose(to_numpy(tiny(padded))[:, :h, :w], y, rtol=1e-5, atol=1e-5)


def test_images_of_a_batch_are_processed_independently(tiny):
    # The patches of all images share the batch axis inside the model; they must not mix.
    rng = np.random.default_rng(5)
    x = rng.uniform(size=(2, 16, 24, 3)).astype(np.float32)
    both = to_numpy(tiny(x))
    np.testing.assert_allclose(both[1:], to_numpy(tiny(x[1:])), rtol=1e-5, atol=1e-5)


# Quarters as SplitPatches(1) then SplitPatches(2) stack them along the batch (batch 1):
# top-left, bottom-left, top-right, bottom-right; halves: top, bottom.
QUARTERS = {"top-left": 0, "bottom-left": 1, "top-right": 2, "bottom-right": 3}


def _features(model, names, x):
    outputs = {n: model.get_layer(n).output for n in names}
    return {n: to_numpy(v) for n, v in keras.Model(model.input, outputs)(x).items()}


@pytest.mark.parametrize("quarter", ["top-left", "bottom-right"])
def test_lower_levels_see_their_patches_independently(tiny, quarter):
    # Sec. 2: level 3's encoder works on 4 non-overlapping patches, level 2 on 2 (the
    # attention is global inside a patch only). Perturb one quarter of the image and look
    # at which patches' features move. 16x24 needs no padding (multiple of 4).
    h, w = 16, 24
    rng = np.random.default_rng(7)
    x = rng.uniform(size=(1, h, w, 3)).astype(np.float32)
    perturbed = x.copy()
    top = quarter.startswith("top")
    rows = slice(0, h // 2) if top else slice(h // 2, h)
    cols = slice(0, w // 2) if quarter.endswith("left") else slice(w // 2, w)
    perturbed[:, rows, cols] = rng.uniform(size=(1, h // 2, w // 2, 3))
    names = ["l3_enc_s1_rb0", "l3_enc_s2_rb0", "l3_dec_out", "l2_enc_s1_rb0", "l2_enc_s2_rb0"]
    before, after = _features(tiny, names, x), _features(tiny, names, perturbed)

    def moved(a, b):
        return np.abs(a - b).max() > 1e-3

    # Level-3 encoder: 4 patches of H/2 x W/2; only the perturbed one changes.
    assert before["l3_enc_s1_rb0"].shape == (4, h // 2, w // 2, 4)
    assert before["l3_enc_s2_rb0"].shape == (4, h // 4, w // 4, 8)
    for name in ("l3_enc_s1_rb0", "l3_enc_s2_rb0"):
        for other, index in QUARTERS.items():
            changed = moved(before[name][index], after[name][index])
            assert changed == (other == quarter), (name, other)
            if not changed:
                np.testing.assert_allclose(after[name][index], before[name][index], atol=1e-6)

    # Level-3 decoder: runs on the halves stitched left-right from the quarters, so the
    # whole perturbed half changes (also the unperturbed quarter beside it) and the
    # other half does not.
    half, other_half = (0, 1) if top else (1, 0)
    r3_before, r3_after = before["l3_dec_out"], after["l3_dec_out"]
    assert r3_before.shape == (2, h // 2, w, 3)
    assert moved(r3_before[half, :, : w // 2], r3_after[half, :, : w // 2])
    assert moved(r3_before[half, :, w // 2 :], r3_after[half, :, w // 2 :])
    np.testing.assert_allclose(r3_after[other_half], r3_before[other_half], atol=1e-6)

    # Level-2 encoder: 2 patches (top, bottom halves) of H/2 x W; only the perturbed half
    # changes, though its input also carries the level-3 residual of that half.
    assert before["l2_enc_s1_rb0"].shape == (2, h // 2, w, 4)
    for name in ("l2_enc_s1_rb0", "l2_enc_s2_rb0"):
        assert moved(before[name][half], after[name][half]), name
        np.testing.assert_allclose(after[name][other_half], before[name][other_half], atol=1e-6)


def test_cross_level_attention_queries_upper_level_and_reads_lower_level(tiny):
    # "lower level features are adaptively fused using attention": GlobalAttention called
    # on [query, source] takes P from the query and Q, x, M2 from the source.
    def output(name):
        return tiny.get_layer(name).output

    for layer, upper, lower in [
        # Level 2: its encoder (halves stitched top-bottom) queries level 3's encoder
        # features (quarters stitched into the whole image).
        ("l2_cross_level", "l2_stitch_h_s2", "l3_stitch_h"),
        # Level 1: its encoder queries level 2's fused features.
        ("l1_cross_level", "l1_enc_s2_rb0", "l2_fuse"),
    ]:
        query, source = tiny.get_layer(layer).input
        assert query is output(upper), layer
        assert source is output(lower), layer
        # The fusion adds both levels and the attention (reading in saphn.py).
        fuse = tiny.get_layer(layer.replace("cross_level", "fuse")).input
        assert all(t is o for t, o in zip(fuse, (query, source, output(layer)), strict=True))
    # Level 3's source is its encoder's quarters stitched left-right, then top-bottom.
    assert tiny.get_layer("l3_stitch_h").input is output("l3_stitch_w_s2")
    assert tiny.get_layer("l3_stitch_w_s2").input is output("l3_enc_s2_rb0")
    # Each decoder starts from its level's fused features.
    assert tiny.get_layer("l2_dec_s2_rb0").input[0] is output("l2_fuse")
    assert tiny.get_layer("l1_dec_s2_rb0").input[0] is output("l1_fuse")

    # At run time query and source are whole-image maps of the deepest scale (1/2 in tiny).
    x = np.random.default_rng(8).uniform(size=(1, 16, 24, 3)).astype(np.float32)
    got = _features(tiny, ["l2_stitch_h_s2", "l3_stitch_h", "l2_cross_level"], x)
    assert got["l2_stitch_h_s2"].shape == got["l3_stitch_h"].shape == (1, 8, 12, 8)
    assert got["l2_cross_level"].shape == (1, 8, 12, 8)


def test_save_and_load_in_fresh_process_reproduces_output(tiny, tmp_path):
    x = np.random.default_rng(3).uniform(size=(1, 21, 34, 3)).astype(np.float32)
    path = tmp_path / "saphn.keras"
    tiny.save(path)
    fresh = load_and_run_in_fresh_process(path, x, tmp_path)
    np.testing.assert_allclose(fresh, to_numpy(tiny(x)), rtol=1e-6, atol=1e-6)


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
