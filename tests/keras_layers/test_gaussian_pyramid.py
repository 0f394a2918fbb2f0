"""GaussianPyramid / gaussian_pyramid against scikit-image's pyramid_gaussian."""

import keras
import numpy as np
import pytest
from skimage.transform import pyramid_gaussian

from keras_layers import GaussianPyramid, gaussian_pyramid
from tests.utils import assert_layer_config_roundtrip, import_or_skip, to_numpy


def skimage_pyramid(image, levels):
    """The official DeepDeblur loader's pyramid (one image, H x W x C)."""
    return list(
        pyramid_gaussian(image, levels - 1, downscale=2, preserve_range=True, channel_axis=-1)
    )


@pytest.mark.parametrize("h,w", [(24, 40), (29, 35), (5, 7), (2, 5), (64, 3)])
def test_matches_skimage_including_odd_sizes(h, w):
    x = np.random.default_rng(h * 100 + w).uniform(size=(2, h, w, 3)).astype(np.float32)
    levels = 4
    ours = [to_numpy(level) for level in gaussian_pyramid(x, levels)]
    assert len(ours) == levels
    for b in range(2):
        reference = skimage_pyramid(x[b].astype(np.float64), levels)
        for k, (got, want) in enumerate(zip(ours, reference, strict=True)):
            # Level k has size ceil(n / 2**k), reduced level by level like skimage.
            assert got[b].shape == want.shape, (k, got.shape, want.shape)
            np.testing.assert_allclose(got[b], want, rtol=0, atol=2e-6)


def test_values_in_0_255_as_the_official_loader():
    # The official loader feeds float32 [0, 255] images without preserve_range (skimage
    # leaves float input unscaled); the pyramid is linear, so units do not matter.
    x = np.random.default_rng(7).integers(0, 256, size=(1, 20, 28, 3)).astype(np.float32)
    reference = list(pyramid_gaussian(x[0], 2, channel_axis=-1))
    for got, want in zip(gaussian_pyramid(x, 3), reference, strict=True):
        np.testing.assert_allclose(to_numpy(got)[0], want, rtol=0, atol=2e-4)


def test_smaller_than_the_filter_reflects_like_scipy():
    # 2 x 2 and 1 x 3 images are smaller than the 7-tap kernel's radius-3 extension.
    for shape in [(2, 2), (1, 3)]:
        x = np.random.default_rng(1).uniform(size=(1, *shape, 2)).astype(np.float32)
        got = to_numpy(gaussian_pyramid(x, 2)[1])[0]
        want = skimage_pyramid(x[0].astype(np.float64), 2)[1]
        np.testing.assert_allclose(got, want, atol=2e-6)


def test_layer_edge_pads_like_the_official_demo_loader():
    # DeepDeblur-PyTorch's demo mode: numpy.pad(mode="edge") at bottom/right to a multiple
    # of 2**(K-1), then the pyramid.
    x = np.random.default_rng(2).uniform(size=(1, 21, 30, 3)).astype(np.float32)
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, GaussianPyramid(3, pad_to_multiple=4)(inputs))
    ours = [to_numpy(level) for level in model(x)]
    padded = np.pad(x[0], ((0, 3), (0, 2), (0, 0)), mode="edge").astype(np.float64)
    reference = skimage_pyramid(padded, 3)
    assert [o.shape[1:3] for o in ours] == [(24, 32), (12, 16), (6, 8)]
    for got, want in zip(ours, reference, strict=True):
        np.testing.assert_allclose(got[0], want, atol=2e-6)


def test_compute_output_shape_matches_call():
    layer = GaussianPyramid(4, pad_to_multiple=2)
    x = np.zeros((1, 13, 7, 3), np.float32)
    shapes = layer.compute_output_shape((1, 13, 7, 3))
    assert [tuple(o.shape) for o in layer(x)] == [tuple(s) for s in shapes]
    assert shapes == [(1, 14, 8, 3), (1, 7, 4, 3), (1, 4, 2, 3), (1, 2, 1, 3)]
    assert layer.compute_output_shape((None, None, None, 3))[2] == (None, None, None, 3)


def test_validates_and_round_trips_config():
    with pytest.raises(ValueError, match="levels"):
        GaussianPyramid(0)
    with pytest.raises(ValueError, match="pad_to_multiple"):
        GaussianPyramid(3, pad_to_multiple=0)
    with pytest.raises(ValueError, match="levels"):
        gaussian_pyramid(np.zeros((1, 4, 4, 3), np.float32), 0)
    with pytest.raises(ValueError, match="image"):
        gaussian_pyramid(np.zeros((4, 4, 3), np.float32), 2)
    assert_layer_config_roundtrip(
        GaussianPyramid(3, pad_to_multiple=4),
        np.random.default_rng(0).normal(size=(1, 9, 13, 3)).astype(np.float32),
    )


def coarsest_level_model(pad_to_multiple):
    inputs = keras.Input((None, None, 3))
    levels = GaussianPyramid(3, pad_to_multiple=pad_to_multiple)(inputs)
    return keras.Model(inputs, levels[-1])


def serving_function(model):
    import tensorflow as tf

    spec = tf.TensorSpec([None, None, None, 3], tf.float32, name="image")
    return tf.function(lambda x: model(x), input_signature=[spec]), spec


@pytest.mark.tf_only
@pytest.mark.parametrize("pad_to_multiple", [1, 4])
def test_tflite_builtins_with_dynamic_size(pad_to_multiple):
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    litert = import_or_skip("ai_edge_litert.interpreter")
    model = coarsest_level_model(pad_to_multiple)
    function, _ = serving_function(model)
    frozen = convert_variables_to_constants_v2(function.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex ops
    interpreter = litert.Interpreter(model_content=converter.convert())
    for shape in [(1, 21, 30, 3), (2, 3, 2, 3)]:
        x = np.random.default_rng(shape[1]).uniform(size=shape).astype(np.float32)
        detail = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(detail["index"], x.shape, strict=False)
        interpreter.allocate_tensors()
        interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        np.testing.assert_allclose(y, to_numpy(model(x)), atol=1e-6)


@pytest.mark.tf_only
@pytest.mark.parametrize("pad_to_multiple", [1, 4])
def test_onnx_with_dynamic_size(pad_to_multiple):
    # Regression: tf2onnx lowers integer FloorMod with a truncating Div, which once made
    # the edge padding take 21 rows to 20 instead of 24.
    tf2onnx = import_or_skip("tf2onnx")
    ort = import_or_skip("onnxruntime")
    model = coarsest_level_model(pad_to_multiple)
    function, spec = serving_function(model)
    proto, _ = tf2onnx.convert.from_function(function, input_signature=[spec], opset=17)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for shape in [(1, 21, 30, 3), (2, 3, 2, 3)]:
        x = np.random.default_rng(shape[1]).uniform(size=shape).astype(np.float32)
        y = session.run(None, {session.get_inputs()[0].name: x})[0]
        np.testing.assert_allclose(y, to_numpy(model(x)), atol=1e-6)
