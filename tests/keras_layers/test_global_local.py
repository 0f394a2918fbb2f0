"""Global-local module (eq. 8), its residual block, and the patch split/merge of SAPHN."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdeblur
from keras_layers import GlobalLocalModule, GlobalLocalResBlock, MergePatches, SplitPatches
from tests.utils import assert_converts_to_tflite_and_onnx, assert_layer_config_roundtrip, to_numpy


def softmax(v, axis):
    e = np.exp(v - v.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def conv1x1(layer, x):
    kernel, bias = (w.astype(np.float64) for w in layer.get_weights())
    return x @ kernel[0, 0] + bias


def np_attention(layer, query, source):
    """Eq. (1)-(6) in NumPy with the layer's 1x1 convolutions."""
    b, h, w, _ = query.shape
    q = softmax(conv1x1(layer.gather_conv, source).reshape(b, -1, layer.attention_maps), 1)
    descriptors = np.einsum("bik,bic->bkc", q, source.reshape(b, -1, source.shape[-1]))
    descriptors *= conv1x1(layer.channel_conv, source.mean(axis=(1, 2)))[:, None, :]
    p = softmax(conv1x1(layer.selection_conv, query).reshape(b, -1, layer.attention_maps), -1)
    return (p @ descriptors / layer.attention_maps).reshape(b, h, w, -1)


def np_dynamic(layer, x):
    """Eq. (7) in NumPy with the layer's generated kernel K and filter W."""
    adaptive = to_numpy(layer.adaptive_kernel(x.astype(np.float32)))
    kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
    k = kernel.shape[0]
    r = k // 2
    _, h, w, _ = x.shape
    padded = np.pad(x, [(0, 0), (r, r), (r, r), (0, 0)])
    out = 0.0
    for dy in range(k):
        for dx in range(k):
            neighbours = padded[:, dy : dy + h, dx : dx + w]
            out = out + (adaptive[..., dy * k + dx, None] * neighbours) @ kernel[dy, dx]
    return out + bias


def randomise_meta_kernel(dynamic_layer, rng):
    # Its last conv starts at zero (K = 1); make K really pixel-dependent.
    dynamic_layer.meta_kernel.set_weights(
        [
            rng.normal(size=w.shape).astype(np.float32)
            for w in dynamic_layer.meta_kernel.get_weights()
        ]
    )


def test_module_is_sum_of_global_and_local_branches():
    module = GlobalLocalModule(attention_maps=3, filter_size=3, meta_filters=4)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 6, 4)).astype(np.float32)
    module(x)
    randomise_meta_kernel(module.dynamic, rng)
    expected = np_attention(module.self_attention, x, x) + np_dynamic(module.dynamic, x)
    np.testing.assert_allclose(to_numpy(module(x)), expected, rtol=1e-4, atol=1e-4)


def test_decoder_module_adds_cross_attention_to_encoder_features():
    module = GlobalLocalModule(
        attention_maps=3, filter_size=3, meta_filters=4, cross_attention=True
    )
    x_in, src_in = keras.Input((None, None, 4)), keras.Input((None, None, 4))
    model = keras.Model([x_in, src_in], module([x_in, src_in]))
    rng = np.random.default_rng(1)
    randomise_meta_kernel(module.dynamic, rng)
    x = rng.normal(size=(2, 6, 5, 4)).astype(np.float32)
    source = rng.normal(size=(2, 3, 7, 4)).astype(np.float32)
    expected = (
        np_attention(module.self_attention, x, x)
        + np_attention(module.cross, x, source)
        + np_dynamic(module.dynamic, x)
    )
    np.testing.assert_allclose(to_numpy(model([x, source])), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cross", [False, True])
def test_residual_block_is_conv_module_conv_plus_identity(cross):
    block = GlobalLocalResBlock(
        attention_maps=2, filter_size=3, meta_filters=3, cross_attention=cross
    )
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 6, 7, 4)).astype(np.float32)
    source = rng.normal(size=(1, 3, 4, 4)).astype(np.float32)
    block([x, source] if cross else x)  # builds the weights
    randomise_meta_kernel(block.global_local.dynamic, rng)
    y = to_numpy(block([x, source] if cross else x))

    def conv3x3(layer, t):
        kernel, bias = layer.get_weights()
        return to_numpy(tf.nn.conv2d(t.astype(np.float32), kernel, 1, "SAME")) + bias

    h = np.maximum(conv3x3(block.conv1, x), 0.0)
    module = block.global_local
    gl = np_attention(module.self_attention, h, h) + np_dynamic(module.dynamic, h)
    if cross:
        gl = gl + np_attention(module.cross, h, source)
    np.testing.assert_allclose(y, x + conv3x3(block.conv2, gl), rtol=1e-4, atol=1e-4)


def test_split_and_merge_patches_cut_dmphn_quarters():
    x = np.arange(2 * 4 * 6 * 1, dtype=np.float32).reshape(2, 4, 6, 1)
    halves = to_numpy(SplitPatches(1)(x))
    quarters = to_numpy(SplitPatches(2)(halves))
    assert quarters.shape == (8, 2, 3, 1)
    top, bottom = x[:, :2], x[:, 2:]
    expected = np.concatenate([top[:, :, :3], bottom[:, :, :3], top[:, :, 3:], bottom[:, :, 3:]])
    np.testing.assert_array_equal(quarters, expected)
    np.testing.assert_array_equal(MergePatches(2)(quarters), halves)
    np.testing.assert_array_equal(MergePatches(1)(MergePatches(2)(quarters)), x)


def test_split_merge_with_dynamic_sizes():
    inputs = keras.Input((None, None, 2))
    split = SplitPatches(2)(SplitPatches(1)(inputs))
    model = keras.Model(inputs, [split, MergePatches(1)(MergePatches(2)(split))])
    for h, w in [(4, 6), (8, 2)]:
        x = np.random.default_rng(h).normal(size=(3, h, w, 2)).astype(np.float32)
        patches, back = model(x)
        assert patches.shape == (12, h // 2, w // 2, 2)
        np.testing.assert_array_equal(back, x)


def test_lighter_meta_layer_reaches_the_dynamic_filter():
    block = GlobalLocalResBlock(
        attention_maps=2, filter_size=5, meta_filters=None, meta_kernel_size=1
    )
    block(np.zeros((1, 4, 4, 3), np.float32))
    dynamic = block.global_local.dynamic
    assert dynamic.meta_hidden is None and dynamic.meta_kernel.kernel.shape == (1, 1, 3, 25)
    # 2 convs, self-attention (f_p, f_q to 2 maps, f_M2), 1x1 meta-layer, 5x5 filter.
    attention = 2 * (3 * 2 + 2) + 3 * 3 + 3
    assert block.count_params() == 2 * (9 * 9 + 3) + attention + (3 * 25 + 25) + (75 * 3 + 3)


def test_configs_roundtrip_and_errors():
    rng = np.random.default_rng(0)
    x, source = (rng.normal(size=(1, 6, 8, 4)).astype(np.float32) for _ in range(2))
    assert_layer_config_roundtrip(GlobalLocalModule(5, 3, 6, cross_attention=True), [x, source])
    assert_layer_config_roundtrip(
        GlobalLocalResBlock(3, 5, 3, 6, cross_attention=True), [x, source]
    )
    assert_layer_config_roundtrip(GlobalLocalResBlock(3, 5, 3, None, meta_kernel_size=1), x)
    assert_layer_config_roundtrip(SplitPatches(2), x)
    assert_layer_config_roundtrip(MergePatches(1), np.concatenate([x, source]))
    with pytest.raises(ValueError, match="axis"):
        SplitPatches(3)
    with pytest.raises(ValueError, match=r"\[x, source\]"):
        GlobalLocalModule(cross_attention=True)(np.zeros((1, 4, 4, 2), np.float32))
    with pytest.raises(ValueError, match="one tensor"):
        GlobalLocalModule()([np.zeros((1, 4, 4, 2), np.float32)] * 2)
    with pytest.raises(ValueError, match="channels of x"):
        GlobalLocalModule(cross_attention=True)(
            [np.zeros((1, 4, 4, 2), np.float32), np.zeros((1, 4, 4, 3), np.float32)]
        )


@pytest.mark.tf_only
@pytest.mark.slow
def test_blocks_convert_to_tflite_builtins_and_onnx_with_dynamic_size():
    # An encoder block (self-attention) feeding a decoder block (self + cross attention
    # to a source of another size), pixel-dependent filters with a random meta-layer.
    x_in, src_in = keras.Input((None, None, 4)), keras.Input((None, None, 4))
    encoder = GlobalLocalResBlock(attention_maps=3, filter_size=5, meta_filters=4, name="enc")
    decoder = GlobalLocalResBlock(
        attention_maps=3, filter_size=3, meta_filters=4, cross_attention=True, name="dec"
    )
    model = keras.Model([x_in, src_in], decoder([encoder(x_in), src_in]))
    rng = np.random.default_rng(6)
    for block in (encoder, decoder):
        randomise_meta_kernel(block.global_local.dynamic, rng)
    runs = [
        [rng.normal(size=(1, *size, 4)), rng.normal(size=(1, *source_size, 4))]
        for size, source_size in [((9, 13), (5, 6)), ((6, 5), (6, 5))]
    ]
    assert_converts_to_tflite_and_onnx(model, runs)


@pytest.mark.parametrize("channels", [32, 128])
def test_global_and_local_branches_start_at_comparable_magnitude(channels):
    """At initialisation eq. (8) sums two branches of similar size: the global branch's
    1/C2 (eq. 6) is compensated by M2's initial value (it once started ~500x weaker, RMS
    0.0012 vs 0.65, and the sum was the local branch alone). Paper widths: C2 = 128, 5x5
    filters, one-conv meta-layer, the block's ReLU features as input."""
    keras.utils.set_random_seed(0)
    config = tfdeblur.get_model_config("saphn", "paper")
    block = GlobalLocalResBlock(
        3, config["attention_maps"], config["filter_size"], config["meta_filters"],
        cross_attention=True,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 32, 32, channels)).astype(np.float32)
    source = np.maximum(rng.normal(size=x.shape), 0).astype(np.float32)  # encoder features
    block([x, source])
    h = block.act(block.conv1(x))
    module = block.global_local

    def rms(t):
        return float(np.sqrt(np.mean(np.square(to_numpy(t)))))

    local = rms(module.dynamic(h))
    for name, branch in [("self", module.self_attention(h)), ("cross", module.cross([h, source]))]:
        ratio = rms(branch) / local
        assert 0.3 < ratio < 3, (name, ratio)  # measured 0.58-0.60 (0.002 before)
