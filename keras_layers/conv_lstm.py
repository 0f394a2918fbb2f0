"""One step of a convolutional LSTM from plain convolutions, and the loop over a clip.

Reference:
    Shi et al., "Convolutional LSTM Network", NeurIPS 2015 (SARN's [47]); SARN sec. 2.2,
    eq. (7) (``../shared/papers/sarn_spatially_adaptive_residual.txt``).

``keras.layers.ConvLSTM2D`` loops over time inside itself: it refuses inputs whose
spatial size is unknown and lowers to a TFLite ``WHILE`` loop. This cell does a single
step with its state passed in and returned, so the time loop lives in the caller (a clip
model unrolls it, streaming inference carries the state between calls), every H and W
is dynamic, and it converts to TFLite with builtin ops only (CONV_2D, LOGISTIC, TANH,
MUL, ADD, SPLIT, CONCATENATION).

:class:`FrameRecurrence` runs such a step network (the video network's whole time step,
ConvLSTM included) over a clip, so that a clip model trains with plain ``model.fit``
while the step network alone is exported and streamed.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_layers.initializers import sublayer_conv


@keras.saving.register_keras_serializable(package="tfdeblur")
class ConvLSTMCell2D(keras.layers.Layer):
    """``(x_t, h_{t-1}, c_{t-1}) -> (h_t, c_t)`` of a ConvLSTM, gates as in Keras.

    ::

        [i, f, g, o] = split(conv_x(x_t) + conv_h(h_{t-1}), 4)      (k x k, 'same')
        c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
        h_t = sigmoid(o) * tanh(c_t)

    ``conv_x`` has the bias and ``conv_h`` none, and the gate order is ``i, f, g, o``:
    the weights are those of ``keras.layers.ConvLSTM2D`` (``kernel`` = ``conv_x``,
    ``recurrent_kernel`` = ``conv_h``), which gives the same numbers for one step. No
    peephole connections (Keras has none; SARN does not mention any). The forget-gate
    bias starts at 1 (Keras' ``unit_forget_bias``).

    Call with ``[x, h, c]``; returns ``[h_new, c_new]`` (in SARN's eq. (7) the output
    ``g_i`` is ``h_i``).

    Args:
        filters: int, channels of the hidden and cell states.
        kernel_size: odd int, side of both convolutions. Default 3.
        kernel_initializer: initializer of ``conv_x``. Default Xavier uniform.
        recurrent_initializer: initializer of ``conv_h``. Default orthogonal (Keras).
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(filters, int) or filters < 1:
            raise ValueError(f"filters must be a positive integer, got {filters!r}.")
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}.")
        self.filters = filters
        self.kernel_size = kernel_size
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)

    def build(self, input_shape):
        x_shape, h_shape, c_shape = (tuple(s) for s in input_shape)
        if x_shape[-1] is None:
            raise ValueError(f"ConvLSTMCell2D needs a known input channel count, got {x_shape}.")
        for name, shape in (("h", h_shape), ("c", c_shape)):
            if shape[-1] is not None and shape[-1] != self.filters:
                raise ValueError(
                    f"state {name} must have filters={self.filters} channels, got {shape}."
                )
        f = self.filters
        # Forget-gate bias 1 (gate order i, f, g, o).
        forget_one = keras.initializers.Constant([0.0] * f + [1.0] * f + [0.0] * 2 * f)
        self.input_conv = sublayer_conv(
            self, 4 * f, self.kernel_size, "input_conv",
            padding="same", bias_initializer=forget_one,
        )  # fmt: skip
        self.recurrent_conv = sublayer_conv(
            self, 4 * f, self.kernel_size, "recurrent_conv", self.recurrent_initializer,
            padding="same", use_bias=False,
        )  # fmt: skip
        self.input_conv.build(x_shape)
        self.recurrent_conv.build(x_shape[:-1] + (f,))

    def call(self, inputs):
        x, h, c = inputs
        gates = self.input_conv(x) + self.recurrent_conv(h)
        i, f, g, o = ops.split(gates, 4, axis=-1)
        c_new = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
        h_new = ops.sigmoid(o) * ops.tanh(c_new)
        return [h_new, c_new]

    def compute_output_shape(self, input_shape):
        x_shape = tuple(input_shape[0])
        state = x_shape[:-1] + (self.filters,)
        return [state, state]

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": keras.initializers.serialize(self.recurrent_initializer),
        }


@keras.saving.register_keras_serializable(package="tfdeblur")
class FrameRecurrence(keras.layers.Layer):
    """Runs a step network over a clip with frame- and feature-level recurrence.

    The step network (a ``keras.Model``) maps ``[frames, *states]`` to
    ``[estimate, *new_states]``, where ``frames`` is the channel concatenation of the
    ``num_past`` previous estimates (oldest first), the current input frame and the
    ``num_future`` next input frames, and each state is
    ``(B, ceil(H/s), ceil(W/s), C_k)`` with ``s = state_downsampling``. This layer maps
    a clip ``(B, T, H, W, C)`` to the clip of estimates ``(B, T, H, W, C)``:

    * states start at zero;
    * a past estimate before the first frame is the first input frame (frame 0 sees
      ``[x_0, x_0, x_0, x_1, x_2]`` for 2 past and 2 future frames, frame 1
      ``[x_0, I_0, x_1, x_2, x_3]``);
    * a future frame after the last one is the last input frame;
    * estimates are fed back as they are (unclamped, gradients flowing), so training
      back-propagates through the whole clip.

    A clip whose length T is known when the graph is traced (training clips, eager
    calls, every call on JAX and PyTorch) is unrolled in Python, which XLA compiles; an
    unknown T (a TensorFlow graph traced with ``None`` frames) runs a ``tf.while_loop``
    (same numbers) that converts to TFLite (WHILE) and ONNX (Loop).
    Streaming inference (:mod:`tfdeblur.infer.video`) follows the same rules frame by frame.

    Reference:
        SARN sec. 2.2, eq. (7): "previously deblurred estimates are provided at the input
        to the network that processes subsequent frames", "5 frames at each time-step
        (early fusion), of which 2 frames are deblurred estimates from past and 2 are
        blurred frames from future".

    Args:
        step_model: the step network, a ``keras.Model`` (or its serialized config).
        num_past: int, past estimates fed to each step. Default 2.
        num_future: int, future input frames fed to each step. Default 2.
        state_downsampling: int s, the states' resolution divisor. Default 4.
    """

    def __init__(self, step_model, num_past=2, num_future=2, state_downsampling=4, **kwargs):
        super().__init__(**kwargs)
        if isinstance(step_model, dict):
            step_model = keras.saving.deserialize_keras_object(step_model)
        if not isinstance(step_model, keras.Model):
            raise ValueError(f"step_model must be a keras.Model, got {type(step_model)!r}.")
        for name, value, low in (
            ("num_past", num_past, 0),
            ("num_future", num_future, 0),
            ("state_downsampling", state_downsampling, 1),
        ):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
        if len(step_model.inputs) != len(step_model.outputs):
            raise ValueError(
                "step_model must map [frames, *states] to [estimate, *new_states], got "
                f"{len(step_model.inputs)} inputs and {len(step_model.outputs)} outputs."
            )
        self.step_model = step_model
        self.num_past = num_past
        self.num_future = num_future
        self.state_downsampling = state_downsampling
        self.state_channels = [int(t.shape[-1]) for t in step_model.inputs[1:]]
        self.frame_channels = int(step_model.outputs[0].shape[-1])
        expected = (num_past + 1 + num_future) * self.frame_channels
        if step_model.inputs[0].shape[-1] != expected:
            raise ValueError(
                f"step_model's first input must have (num_past + 1 + num_future) * "
                f"{self.frame_channels} = {expected} channels, got {step_model.inputs[0].shape}."
            )

    def build(self, input_shape):
        # A functional step model has its weights from construction on.
        self.built = True

    def initial_states(self, batch, height, width, dtype="float32"):
        """Zero states for frames of ``height x width``."""
        s = self.state_downsampling
        return [
            ops.zeros((batch, (height + s - 1) // s, (width + s - 1) // s, ch), dtype)
            for ch in self.state_channels
        ]

    def _step(self, past, frames, states, clip_dtype, training):
        """One time step: ``(past, frames, states) -> (new past, estimate, new states)``."""
        estimate, *states = self.step_model(
            [ops.concatenate(list(past) + list(frames), axis=-1), *states], training=training
        )
        # Loop variables keep the clip's dtype (mixed precision computes in float16).
        estimate = ops.cast(estimate, clip_dtype)
        states = [ops.cast(state, clip_dtype) for state in states]
        past = (list(past) + [estimate])[1:] if self.num_past else []
        return past, estimate, states

    def call(self, inputs, training=None):
        clip = ops.convert_to_tensor(inputs)
        if len(clip.shape) != 5:
            raise ValueError(f"FrameRecurrence expects clips (B, T, H, W, C), got {clip.shape}.")
        shape = ops.shape(clip)
        batch, height, width = shape[0], shape[2], shape[3]
        states = self.initial_states(batch, height, width, clip.dtype)
        static_length = clip.shape[1]
        if static_length is None:
            # Only TensorFlow traces an unknown T (JAX and PyTorch always know it).
            return self._while_loop(clip, states, training)
        # Known T (training clips, eager calls, every JAX / PyTorch call): unrolled in
        # Python, which XLA compiles.
        past, outputs = [clip[:, 0]] * self.num_past, []
        for t in range(static_length):
            frames = [clip[:, min(t + k, static_length - 1)] for k in range(self.num_future + 1)]
            past, estimate, states = self._step(past, frames, states, clip.dtype, training)
            outputs.append(estimate)
        return ops.stack(outputs, axis=1)

    def _while_loop(self, clip, states, training):
        """Unknown T (TensorFlow only): a ``tf.while_loop``, same numbers as the unrolled loop."""
        import tensorflow as tf

        length = tf.shape(clip)[1]

        def frame(t):
            return tf.gather(clip, tf.minimum(t, length - 1), axis=1)

        def body(t, past, states, outputs):
            frames = [frame(t + k) for k in range(self.num_future + 1)]
            past, estimate, states = self._step(past, frames, states, clip.dtype, training)
            if outputs is None:
                return t + 1, past, list(states), estimate
            return t + 1, past, list(states), tf.concat([outputs, estimate[:, None]], axis=1)

        # The first step, then a while loop appending each estimate to the output clip --
        # a growing tensor instead of a TensorArray, so the loop converts to a TFLite
        # WHILE of builtin ops (a TensorList with unknown frame shape cannot be lowered),
        # and never an empty one (the XNNPACK delegate mishandles those).
        frame_shape = tf.TensorShape([None, None, None, self.frame_channels])
        clip_shape = tf.TensorShape([None, None, None, None, self.frame_channels])
        _, past, states, estimate = body(0, [clip[:, 0]] * self.num_past, states, None)
        *_, outputs = tf.while_loop(
            lambda t, *_: t < length,
            body,
            # [:, :length] keeps the clip axis dynamic for the TFLite converter.
            (tf.constant(1), past, states, estimate[:, None][:, :length]),
            shape_invariants=(
                tf.TensorShape([]),
                [frame_shape] * self.num_past,
                [tf.TensorShape([None, None, None, ch]) for ch in self.state_channels],
                clip_shape,
            ),
            maximum_iterations=length - 1,
        )
        return outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.frame_channels,)

    def get_config(self):
        return {
            **super().get_config(),
            "step_model": keras.saving.serialize_keras_object(self.step_model),
            "num_past": self.num_past,
            "num_future": self.num_future,
            "state_downsampling": self.state_downsampling,
        }
