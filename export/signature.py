"""The one input signature every exporter shares, and the serving function built on it.

Every tfdeblur network takes one float32 image tensor in [0, 1], channels last, any
H x W: ``(B, H, W, 3)`` for image networks, ``(B, T, H, W, 3)`` for video networks. The
exporters keep every dimension the model leaves open (``None``) dynamic, except what the
format needs fixed: TFLite fixes the batch to 1 (the interpreter resizes it on demand),
and ``input_size=(H, W)`` fixes the two spatial axes (the last two before channels).

The artifact's input is named after the model's input (``"blurry"`` for image networks)
and its one output ``"deblurred"``. A network returning several outputs (DeepDeblur
built with ``multi_scale_outputs=True``, finest scale first) is served by its first.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

DEFAULT_INPUT_NAME = "blurry"
OUTPUT_NAME = "deblurred"


def parse_input_size(value) -> tuple[int, int] | None:
    """``"720x1280"``, ``(720, 1280)`` or None -> ``(H, W)`` or None.

    Raises:
        ValueError: anything else, naming ``input_size``.
    """
    if value is None:
        return None
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", value)
        if not match:
            raise ValueError(f"input_size must look like HxW (e.g. 720x1280), got {value!r}.")
        value = (int(match.group(1)), int(match.group(2)))
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
        or min(value) < 1
    ):
        raise ValueError(f"input_size must be (H, W) with positive ints, or None, got {value!r}.")
    return int(value[0]), int(value[1])


def model_input(model):
    """The one Keras input of ``model``, checked to be a float image tensor."""
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise ValueError(
            f"model {getattr(model, 'name', model)!r} has no known inputs; build it (call it "
            "once or use a functional model) before exporting."
        )
    if len(inputs) != 1:
        raise ValueError(
            f"model {model.name!r} has {len(inputs)} inputs; the exporters take networks with "
            "one image (or clip) input."
        )
    tensor = inputs[0]
    shape = tuple(tensor.shape)
    if len(shape) not in (4, 5) or shape[-1] is None:
        raise ValueError(
            f"model {model.name!r} input must be (B, H, W, C) or (B, T, H, W, C) with known C, "
            f"got {shape}."
        )
    return tensor


def input_signature(model, *, batch_size: int | None = None, input_size=None) -> tf.TensorSpec:
    """The exporters' input signature for ``model``.

    Args:
        model: a Keras model with one input ``(B, H, W, C)`` or ``(B, T, H, W, C)``.
        batch_size: None (dynamic, SavedModel/ONNX) or 1 (TFLite).
        input_size: ``(H, W)`` (or ``"HxW"``) to fix the spatial size, None to keep it
            dynamic.

    Returns:
        ``tf.TensorSpec`` float32, e.g. ``(None, None, None, 3)`` named ``"blurry"``.
    """
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be None or a positive int, got {batch_size!r}.")
    tensor = model_input(model)
    shape = list(tensor.shape)
    shape[0] = batch_size
    size = parse_input_size(input_size)
    if size is not None:
        shape[-3], shape[-2] = size
    name = getattr(tensor, "name", None) or DEFAULT_INPUT_NAME
    # Keras may suffix auto-generated names; an explicit keras.Input(name=...) stays as is.
    return tf.TensorSpec(shape, tf.float32, name=name)


def first_output(outputs):
    """The served output: the model's only output, or its first (finest scale)."""
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    if isinstance(outputs, (list, tuple)):
        outputs = outputs[0]
    return outputs


def serving_function(model, spec: tf.TensorSpec) -> tf.types.experimental.GenericFunction:
    """``tf.function`` mapping the signature's tensor to ``{"deblurred": output}``."""

    @tf.function(input_signature=[spec], autograph=False)
    def serve(blurry):
        return {OUTPUT_NAME: first_output(model(blurry, training=False))}

    return serve


def as_model_input(spec_shape, frames) -> np.ndarray:
    """Stack image(s) into the model's input layout with batch 1.

    Args:
        spec_shape: the model's input shape (rank 4 or 5).
        frames: ``(H, W, C)`` for image networks, a list of ``T`` such images (or a
            ``(T, H, W, C)`` array) for video networks.

    Returns:
        float32 ``(1, H, W, C)`` or ``(1, T, H, W, C)``.
    """
    array = np.asarray(frames, dtype=np.float32)
    rank = len(spec_shape)
    if array.ndim != rank - 1:
        raise ValueError(
            f"frames of shape {array.shape} do not fit a rank-{rank} input {tuple(spec_shape)}."
        )
    return array[None]
