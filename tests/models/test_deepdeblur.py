"""DeepDeblur: parameter counts, equality with the official PyTorch network, any-size
inputs, the multi-scale training form, reload in a fresh process, training presets.

How ``tests/data_files/deepdeblur_reference.npz`` was made (the official code is not in
this repository; only its outputs are). With ``SeungjunNah/DeepDeblur-PyTorch`` at commit
26047f7 ("DDP bugfix"), torch 2.13.0 (CPU) and scikit-image 0.26, outside this repository:

1. ``torch.manual_seed(2017)``; ``model = src/model/MSResNet.MSResNet(args)`` with
   ``args.rgb_range=255, n_scales=3, n_resblocks=2, n_feats=8, kernel_size=5`` (its own
   default PyTorch initialisation, biases included), ``.eval()``. Its ``state_dict()``
   is stored as float32 arrays under ``state_dict/<official key>``; ``config`` holds
   ``[n_scales, n_resblocks, n_feats, kernel_size]``.
2. Input images, uint8 as ``imageio.imread`` gives: with
   ``numpy.random.default_rng(2017)``, a random 4x4-block image plus N(0, 20) noise,
   clipped and rounded; ``input`` is 24 x 40, ``odd_input`` 21 x 30 (both stored as
   ``(1, H, W, 3)``).
3. The official loader's path (``src/data/dataset.py``, ``src/data/common.py``):
   ``img.astype(float32)``; for ``odd_input`` first the demo mode's
   ``common.pad(img, divisor=4)`` (``numpy.pad(mode="edge")``); then
   ``pyramid_gaussian(img, 2, channel_axis=-1)`` (the loader's ``multichannel=True`` under
   its current name); each level to a ``(1, 3, h, w)`` tensor.
4. ``outputs = model(pyramid)`` under ``torch.no_grad()``: ``output_k`` is scale ``k``
   (0 = finest) as ``(1, h, w, 3)`` float32 in [0, 255]; ``odd_output_0`` is the finest
   output cropped back to 21 x 30 as the demo mode does.
"""

import pathlib

import numpy as np
import pytest

import tfdeblur
from tests.utils import load_and_run_in_fresh_process, to_numpy
from tfdeblur.models.weights import load_deepdeblur_torch

REFERENCE = pathlib.Path(__file__).resolve().parents[1] / "data_files" / "deepdeblur_reference.npz"
# Max |Keras - official| in the official [0, 255] units: measured 4.6e-5 (finest),
# 3.1e-5, 1.5e-5 (coarser scales) and 3.1e-5 (odd size, demo padding) on an AMD EPYC CPU
# (AVX-512); float32 summation order only. A wrong weight, layout or pyramid is >= 0.1.
OFFICIAL_ATOL = 2e-4


def conv_params(cin, cout, k):
    return cin * cout * k * k + cout


def deepdeblur_param_count(n_scales, n_resblocks, n_feats, k):
    """Sec. 3.1 counted by hand: per scale conv(in -> F), ResBlocks of two F -> F convs,
    conv(F -> 3); the coarsest takes 3 channels, finer ones 6; a 5x5 conv(3 -> 12) per
    up-convolution."""
    body = n_resblocks * 2 * conv_params(n_feats, n_feats, k) + conv_params(n_feats, 3, k)
    total = body + conv_params(3, n_feats, k)
    total += (n_scales - 1) * (body + conv_params(6, n_feats, k) + conv_params(3, 12, 5))
    return total


@pytest.fixture(scope="module")
def reference():
    data = np.load(REFERENCE)
    state_dict = {
        k[len("state_dict/") :]: data[k] for k in data.files if k.startswith("state_dict/")
    }
    return data, state_dict


def test_paper_preset_parameter_count_and_one_small_run():
    model = tfdeblur.build_model("deepdeblur")
    assert model.count_params() == deepdeblur_param_count(3, 19, 64, 5) == 11_721_321
    x = np.random.default_rng(0).uniform(size=(1, 13, 18, 3)).astype(np.float32)
    y = to_numpy(model(x))
    assert y.shape == x.shape and np.isfinite(y).all()


@pytest.mark.parametrize(
    "preset,config",
    [("k1", (1, 59, 64, 5)), ("k2", (2, 29, 64, 5)), ("tiny", (3, 1, 8, 3))],
)
def test_other_presets_parameter_counts(preset, config):
    # K = 1, 2 keep 120 convolutions in total (sec. 3.1); the up-convolution stays 5x5.
    assert tfdeblur.build_model("deepdeblur", preset).count_params() == deepdeblur_param_count(
        *config
    )


def test_equals_official_pytorch_network_at_every_scale(reference):
    data, state_dict = reference
    n_scales, n_resblocks, n_feats, kernel_size = (int(v) for v in data["config"])
    model = tfdeblur.build_model(
        "deepdeblur",
        "tiny",
        n_scales=n_scales,
        n_resblocks=n_resblocks,
        n_feats=n_feats,
        kernel_size=kernel_size,
        multi_scale_outputs=True,
    )
    load_deepdeblur_torch(state_dict, model)
    outputs = model(data["input"].astype(np.float32) / 255.0)
    assert len(outputs) == n_scales
    for k, output in enumerate(outputs):
        official = data[f"output_{k}"]
        got = to_numpy(output) * 255.0  # the model's [0, 1] units -> official [0, 255]
        assert got.shape == official.shape
        np.testing.assert_allclose(got, official, rtol=0, atol=OFFICIAL_ATOL, err_msg=f"scale {k}")


def test_odd_size_equals_official_demo_padding(reference):
    # The official demo mode edge-pads 21 x 30 to 24 x 32 and crops the output back.
    data, state_dict = reference
    model = load_deepdeblur_torch(state_dict)
    got = to_numpy(model(data["odd_input"].astype(np.float32) / 255.0)) * 255.0
    assert got.shape == data["odd_output_0"].shape == (1, 21, 30, 3)
    np.testing.assert_allclose(got, data["odd_output_0"], rtol=0, atol=OFFICIAL_ATOL)


@pytest.mark.parametrize("h,w", [(29, 35), (16, 17), (3, 5)])
def test_any_input_size_equals_padded_then_cropped_computation(h, w):
    model = tfdeblur.build_model("deepdeblur", "tiny")
    x = np.random.default_rng(h * w).uniform(size=(1, h, w, 3)).astype(np.float32)
    y = to_numpy(model(x))
    assert y.shape == x.shape
    padded = np.pad(x, ((0, 0), (0, -h % 4), (0, -w % 4), (0, 0)), mode="edge")
    np.testing.assert_allclose(to_numpy(model(padded))[:, :h, :w], y, rtol=0, atol=1e-5)


def test_multi_scale_outputs_shapes_and_finest_equals_inference_form():
    train_form = tfdeblur.build_model("deepdeblur", "tiny", multi_scale_outputs=True)
    inference = tfdeblur.build_model("deepdeblur", "tiny")
    inference.set_weights(train_form.get_weights())
    x = np.random.default_rng(5).uniform(size=(2, 32, 48, 3)).astype(np.float32)
    outputs = train_form(x)
    assert isinstance(outputs, list)
    assert [tuple(o.shape) for o in outputs] == [(2, 32, 48, 3), (2, 16, 24, 3), (2, 8, 12, 3)]
    np.testing.assert_array_equal(to_numpy(outputs[0]), to_numpy(inference(x)))


def test_zero_network_returns_mid_grey_in_unit_range():
    # With every weight zero the official network outputs 0 + 127.5, i.e. 0.5 in [0, 1]:
    # the [0, 1] <-> [0, 255] - 127.5 mapping is inside the model.
    model = tfdeblur.build_model("deepdeblur", "tiny", multi_scale_outputs=True)
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    x = np.random.default_rng(6).uniform(size=(1, 16, 16, 3)).astype(np.float32)
    for output in model(x):
        np.testing.assert_allclose(to_numpy(output), 0.5, atol=1e-7)


def test_save_and_load_in_fresh_process_reproduces_output(tmp_path, reference):
    _, state_dict = reference
    model = load_deepdeblur_torch(state_dict)
    x = np.random.default_rng(3).uniform(size=(1, 21, 34, 3)).astype(np.float32)
    path = tmp_path / "deepdeblur.keras"
    model.save(path)
    fresh = load_and_run_in_fresh_process(path, x, tmp_path)
    np.testing.assert_array_equal(fresh, to_numpy(model(x)))


def test_builder_validates_arguments():
    with pytest.raises(ValueError, match="n_scales"):
        tfdeblur.build_model("deepdeblur", "tiny", n_scales=0)
    with pytest.raises(ValueError, match="kernel_size"):
        tfdeblur.build_model("deepdeblur", "tiny", kernel_size=4)


@pytest.mark.parametrize("preset", ["paper", "official"])
def test_train_presets_follow_the_schema(preset):
    from tfdeblur.train.losses import MULTISCALE_TERMS

    settings = tfdeblur.get_train_preset("deepdeblur", preset)
    assert settings["optimizer"] == "adam"
    assert ("epochs" in settings) != ("iterations" in settings)
    schedule = settings["lr_schedule"]
    assert schedule["type"] == "multistep" and schedule["unit"] in ("epochs", "iterations")
    # Milestones fall inside the run, counted in the unit the run's length is given in.
    length = settings[schedule["unit"]]
    assert all(0 < m < length for m in schedule["milestones"])
    assert set(settings["augment"]) == {"flip", "rotate", "channel_shuffle", "saturation", "noise"}
    assert settings["blur_key"] == "blur_gamma" and settings["patch_size"] % 4 == 0
    # Every scale is supervised (sec. 3.2 / the official code): a multi-scale term.
    assert any(term in MULTISCALE_TERMS for term in settings["loss"])
