"""ConvLSTMCell2D against keras.layers.ConvLSTM2D and the gate equations; FrameRecurrence."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_layers import ConvLSTMCell2D, FrameRecurrence
from tests.utils import assert_layer_config_roundtrip, to_numpy


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def test_one_step_equals_keras_convlstm2d():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 7, 9, 5)).astype(np.float32)
    h = rng.normal(size=(2, 7, 9, 6)).astype(np.float32)
    c = rng.normal(size=(2, 7, 9, 6)).astype(np.float32)
    cell = ConvLSTMCell2D(6, kernel_size=3)
    cell([x, h, c])
    for w in cell.weights:
        w.assign(rng.normal(scale=0.3, size=w.shape).astype(np.float32))
    h_new, c_new = (to_numpy(t) for t in cell([x, h, c]))

    reference = keras.layers.ConvLSTM2D(6, 3, padding="same", return_state=True)
    reference(x[:, None], initial_state=[h, c])
    reference.set_weights(
        [
            cell.input_conv.kernel.numpy(),
            cell.recurrent_conv.kernel.numpy(),
            cell.input_conv.bias.numpy(),
        ]
    )
    _, h_ref, c_ref = reference(x[:, None], initial_state=[h, c])
    np.testing.assert_allclose(h_new, to_numpy(h_ref), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(c_new, to_numpy(c_ref), rtol=1e-5, atol=1e-5)

    # The gate equations written out, with 1x1 convolutions = matrix products.
    cell1 = ConvLSTMCell2D(6, kernel_size=1)
    cell1([x, h, c])
    gates = (
        x @ cell1.input_conv.kernel.numpy()[0, 0]
        + cell1.input_conv.bias.numpy()
        + h @ cell1.recurrent_conv.kernel.numpy()[0, 0]
    )
    i, f, g, o = np.split(gates, 4, axis=-1)
    c_expected = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h_expected = _sigmoid(o) * np.tanh(c_expected)
    h1, c1 = cell1([x, h, c])
    np.testing.assert_allclose(to_numpy(c1), c_expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(h1), h_expected, rtol=1e-5, atol=1e-5)


def test_parameters_forget_bias_and_config():
    cell = ConvLSTMCell2D(64, kernel_size=3)
    cell([np.zeros((1, 4, 4, 128), np.float32), *[np.zeros((1, 4, 4, 64), np.float32)] * 2])
    assert cell.count_params() == 4 * (9 * (128 + 64) * 64 + 64) == 442_624
    np.testing.assert_array_equal(cell.input_conv.bias.numpy()[64:128], 1.0)
    np.testing.assert_array_equal(cell.input_conv.bias.numpy()[:64], 0.0)
    rng = np.random.default_rng(0)
    x, h, c = (rng.normal(size=(1, 5, 6, ch)).astype(np.float32) for ch in (3, 8, 8))
    assert_layer_config_roundtrip(ConvLSTMCell2D(8, kernel_size=5), [x, h, c])
    with pytest.raises(ValueError, match="filters"):
        ConvLSTMCell2D(0)
    with pytest.raises(ValueError, match="state h"):
        ConvLSTMCell2D(8)(
            [np.zeros((1, 4, 4, 3), np.float32)] + [np.zeros((1, 4, 4, 5), np.float32)] * 2
        )


def _toy_step(frame_channels=1, state_channels=2):
    """A step network whose every output depends on every input: frames + state -> (estimate, state)."""
    frames = keras.Input((None, None, 5 * frame_channels))
    h = keras.Input((None, None, state_channels))
    pooled = keras.layers.AveragePooling2D(2, padding="same")(frames)
    new_h = keras.layers.Add()([keras.layers.Conv2D(state_channels, 1)(pooled), h])
    up = keras.layers.UpSampling2D(2)(keras.layers.Conv2D(frame_channels, 1)(new_h))
    estimate = keras.layers.Add()([keras.layers.Conv2D(frame_channels, 1)(frames), up])
    return keras.Model([frames, h], [estimate, new_h])


def naive_recurrence(step, clip):
    """The rules of FrameRecurrence written as a plain loop."""
    length = clip.shape[1]
    h = np.zeros((clip.shape[0], clip.shape[2] // 2, clip.shape[3] // 2, 2), np.float32)
    past, outputs = [clip[:, 0], clip[:, 0]], []
    for t in range(length):
        future = [clip[:, min(t + k, length - 1)] for k in (1, 2)]
        estimate, h = step([np.concatenate(past + [clip[:, t]] + future, -1), h])
        estimate, h = to_numpy(estimate), to_numpy(h)
        past = [past[1], estimate]
        outputs.append(estimate)
    return np.stack(outputs, axis=1)


@pytest.mark.tf_only
def test_frame_recurrence_rules_static_and_dynamic_length():
    step = _toy_step()
    layer = FrameRecurrence(step, num_past=2, num_future=2, state_downsampling=2)
    clip = np.random.default_rng(2).normal(size=(2, 4, 6, 8, 1)).astype(np.float32)
    expected = naive_recurrence(step, clip)
    np.testing.assert_allclose(to_numpy(layer(clip)), expected, rtol=1e-5, atol=1e-5)
    # Unknown T: the tf.while_loop path gives the same numbers.
    dynamic = tf.function(layer, input_signature=[tf.TensorSpec([None, None, None, None, 1])])
    np.testing.assert_allclose(to_numpy(dynamic(clip)), expected, rtol=1e-5, atol=1e-5)
    # A one-frame clip: every neighbour is the frame itself.
    np.testing.assert_allclose(
        to_numpy(layer(clip[:, :1])), naive_recurrence(step, clip[:, :1]), rtol=1e-5, atol=1e-5
    )


def test_frame_recurrence_validates_and_roundtrips():
    with pytest.raises(ValueError, match="channels"):
        FrameRecurrence(_toy_step(), num_past=1)
    with pytest.raises(ValueError, match="keras.Model"):
        FrameRecurrence("step")
    layer = FrameRecurrence(_toy_step(), state_downsampling=2)
    clone = FrameRecurrence.from_config(layer.get_config())
    assert clone.state_channels == [2] and clone.num_future == 2


@pytest.mark.tf_only
@pytest.mark.slow
def test_frame_recurrence_converts_to_tflite_with_dynamic_length():
    # Unknown T, H, W: the while loop must convert to builtin ops and give T frames under
    # the default (XNNPACK) delegate too.
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    step = _toy_step()
    layer = FrameRecurrence(step, state_downsampling=2)

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, None, 1], tf.float32)])
    def serve(clip):
        return layer(clip)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [convert_variables_to_constants_v2(serve.get_concrete_function())]
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    content = converter.convert()
    for resolver in (OpResolverType.AUTO, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES):
        for shape in [(1, 3, 6, 8, 1), (1, 1, 4, 4, 1), (1, 5, 8, 6, 1)]:
            clip = np.random.default_rng(shape[1]).normal(size=shape).astype(np.float32)
            interpreter = Interpreter(model_content=content, experimental_op_resolver_type=resolver)
            detail = interpreter.get_input_details()[0]
            interpreter.resize_tensor_input(detail["index"], shape)
            interpreter.allocate_tensors()
            interpreter.set_tensor(detail["index"], clip)
            interpreter.invoke()
            got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
            np.testing.assert_allclose(got, naive_recurrence(step, clip), rtol=1e-5, atol=1e-5)
