"""TFLite (LiteRT) export with builtin ops only, float32 / float16 / dynamic-range / int8.

Conversion path. The model's serving function (input ``(1, H, W, 3)``, H and W dynamic
unless ``input_size`` fixes them) is traced, its variables are frozen into constants
(``convert_variables_to_constants_v2``) and the frozen function is converted with
``TFLiteConverter.from_concrete_functions([frozen])``. The two obvious alternatives
silently produce garbage with Keras 3 models in TF 2.21: ``from_saved_model`` and
``from_concrete_functions(..., trackable_obj)`` keep the Keras variables as TFLite
resource variables (``READ_VARIABLE`` ops) that no initialiser fills, so the
interpreter returns NaN (float) or fails (int8). Freezing first leaves no variables;
the verification after every export would catch a regression.

Builtin ops only. ``target_spec.supported_ops`` is ``TFLITE_BUILTINS`` (or
``TFLITE_BUILTINS_INT8`` for full-integer int8), never the select-TF-ops set: the LiteRT
interpreters users install from PyPI (``ai-edge-litert``) and the Android/iOS runtimes
without the Flex delegate cannot run Flex ops. Layers whose training formulation needs
other ops are switched to their builtin-only twin first (:mod:`export.prepare`), and the
written file is checked to contain builtin operators only.

Speed. With dynamic H and W (the default) the file runs at any size after
``resize_tensor_input`` + ``allocate_tensors``. Operators whose sizes are computed in the
graph (pads, slices and reshapes to sizes derived from ``SHAPE``) are not taken by the
XNNPACK delegate and split its partitions; the layers avoid them where a formulation
without them exists (SAPHN's patch split is an even ``SPLIT``, its attention reshapes to
constant shapes), and what is left (the models' pad-to-multiple and crop, on 3-channel
images) costs little: LCNet without LCBlocks, SARN, SAPHN and DeepDeblur files resized
to 256x256 run within the noise (1.0-1.35x) of files fixed at that size (2-core AMD EPYC,
loaded by other jobs). The
``"slices"`` formulation of LCBlock slices shifted windows at computed sizes and is
what makes LCNet's any-size file slower (2.7x at 256x256). ``input_size`` fixes the
size for a fully static graph.

Quantization:

* ``"none"``: float32.
* ``"float16"``: float16 weights (half the size), computed in float32 on CPU, float16
  on GPU delegates.
* ``"dynamic"``: int8 weights of the large tensors, float activations (about 4x smaller
  weights, no calibration).
* ``"int8"``: full integer, weights and activations int8, calibrated on
  ``representative_data`` (random crops: 256 px squares for a dynamic-size model,
  crops of the input size itself for a fixed-size one); input and output ``uint8``
  (default), ``int8`` or ``float32`` (``io_type``).

Float pre/post-processing of an int8 model. A quantized input/output tensor holds
``q`` with ``x = (q - zero_point) * scale``, its ``scale`` and ``zero_point`` read from
the interpreter's tensor details (``get_input_details()[0]["quantization"]``). The
calibration samples are pinned to the range [0, 1] (one pixel of each is set to 0 and
one to 1), so the input's range is exactly the image range:

* ``uint8`` input: ``scale = 1/255``, ``zero_point = 0``; ``q`` is the 8-bit RGB pixel.
* ``int8`` input: ``scale = 1/255``, ``zero_point = -128``; ``q = pixel - 128``.
* output: ``pixel = clip(round(255 * (q - zero_point) * scale), 0, 255)`` with the
  output's own scale and zero point (its calibrated range, which exceeds [0, 1]
  slightly because the networks' outputs are unclamped).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import pathlib
import warnings
import weakref
from collections.abc import Callable, Iterable

import numpy as np
import tensorflow as tf

from export.prepare import prepare_for_export
from export.result import ExportResult, check_output_path, finish_export
from export.signature import input_signature, model_input, parse_input_size, serving_function
from tfdeblur.fileio import write_bytes_synced

QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
IO_TYPES = {"uint8": tf.uint8, "int8": tf.int8, "float32": tf.float32}

DEFAULT_CALIBRATION_SAMPLES = 32
DEFAULT_CALIBRATION_PATCH = 256


def frozen_function(model, spec: tf.TensorSpec):
    """The serving function of ``model`` traced for ``spec`` with its variables as constants."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    concrete = serving_function(model, spec).get_concrete_function()
    return convert_variables_to_constants_v2(concrete)


def _weights_digest(model) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for weight in model.weights:
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return digest.hexdigest()


# Cache of the last exported model: (input size, weights digest) -> (its switched copy or
# None, switches, frozen function). Exporting one model to several quantizations then
# prepares and traces it once; the digest of the weights makes a model trained further be
# traced again. Weakly keyed, and no value refers to the model itself (None stands for
# "the model, nothing switched"; a frozen function holds constants, not the model), so
# the entry goes away with the model instead of keeping it alive. One model at a time:
# the cache is cleared before each new entry.
_FROZEN_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _prepared_and_frozen(model, input_size, verbose: bool):
    key = (input_size, _weights_digest(model))
    cached = _FROZEN_CACHE.get(model)
    if cached is not None and cached[0] == key:
        _, rebuilt, switches, frozen = cached
        if verbose and switches:
            print(f"export: using {len(switches)} export-formulation switch(es) of {model.name!r}:")
            for switch in switches:
                print(f"  {switch}")
        return (model if rebuilt is None else rebuilt), switches, frozen
    prepared, switches = prepare_for_export(model, verbose=verbose)
    frozen = frozen_function(
        prepared, input_signature(prepared, batch_size=1, input_size=input_size)
    )
    _FROZEN_CACHE.clear()
    _FROZEN_CACHE[model] = (key, None if prepared is model else prepared, switches, frozen)
    return prepared, switches, frozen


# ----------------------------------------------------------------------- calibration


def _pin_range(x: np.ndarray) -> np.ndarray:
    """Set one pixel to 0 and one to 1 so the calibrated input range is exactly [0, 1]."""
    x = np.array(x, dtype=np.float32, copy=True)
    flat = x.reshape(-1, x.shape[-1])
    flat[0] = 0.0
    flat[-1] = 1.0
    return x


def _cover(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` upscaled (bilinear, aspect kept) to at least ``height x width``."""
    scale = max(height / image.shape[0], width / image.shape[1])
    if scale <= 1:
        return image
    size = (math.ceil(image.shape[0] * scale), math.ceil(image.shape[1] * scale))
    return tf.image.resize(image, size, method="bilinear").numpy().clip(0, 1)


def _pipeline_images(
    spec, num_samples: int, patch_size: int, seed: int, crop=None
) -> list[np.ndarray]:
    """``num_samples`` random blurry crops from the dataset ``spec`` (its train split).

    Dynamic-size models (``crop`` None): ``patch_size`` squares from the training pipeline
    (:func:`tfdeblur.data.train_dataset`) without augmentation. Fixed-size models: random
    ``crop = (h, w)`` windows, the model's own input size, of full frames read by
    :func:`tfdeblur.data.eval_dataset` (the same decoding; the training pipeline crops
    squares only), so calibration sees the content at the scale it will be deployed at.
    A frame smaller than ``crop`` is returned whole, and :func:`representative_dataset`
    upscales it and says so.
    """
    from tfdeblur import data

    root = data.resolve_data(spec)
    try:
        pairs = data.find_pairs(root, "train")
    except FileNotFoundError:
        pairs = data.find_pairs(root, "test")
    if crop is None:
        data.validate_pairs(pairs, min_size=patch_size)
        dataset = data.train_dataset(
            pairs,
            batch_size=1,
            patch_size=patch_size,
            flip=False,
            rotate=False,
            channel_shuffle=False,
            seed=seed,
        )
        return [blur[0].numpy() for blur, _ in dataset.take(num_samples)]
    data.validate_pairs(pairs)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pairs))
    chosen = [pairs[order[i % len(pairs)]] for i in range(num_samples)]
    images = []
    for blur, _ in data.eval_dataset(chosen):
        frame = blur[0].numpy()
        h, w = min(crop[0], frame.shape[0]), min(crop[1], frame.shape[1])
        top = int(rng.integers(0, frame.shape[0] - h + 1))
        left = int(rng.integers(0, frame.shape[1] - w + 1))
        images.append(frame[top : top + h, left : left + w])
    return images


def representative_dataset(
    model,
    data,
    *,
    num_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    patch_size: int = DEFAULT_CALIBRATION_PATCH,
    input_size=None,
    seed: int = 0,
) -> Callable[[], Iterable[list[np.ndarray]]]:
    """A TFLite ``representative_dataset`` for ``model``.

    Args:
        model: the Keras model (its input layout: image or clip).
        data: ``"demo"`` or a dataset folder (GOPRO or paired; its ``train`` split, read
            with :func:`tfdeblur.data.train_dataset`, the training pipeline's random
            crops without augmentation); or blurry images: an iterable of ``(H, W, 3)``
            arrays, a ``tf.data.Dataset`` of images or ``(blurry, sharp)`` batches, or
            a callable returning such an iterable.
        num_samples: calibration samples. Default 32.
        patch_size: side of the crops taken from a dataset folder for a dynamic-size
            model. Default 256.
        input_size: ``(H, W)`` of a fixed-shape model; samples are crops of that size
            (random ones from a dataset folder, centre crops of given images). An image
            smaller than that is upscaled (bilinear) to cover it first, with a warning
            saying how many were (calibration needs activation ranges, which upscaled
            content roughly preserves, but sharper content calibrates better).
        seed: crop seed.

    Returns:
        A callable yielding ``[x]`` with ``x`` float32 of the model's input layout.
    """
    from export.verify import CLIP_LENGTH, CLIP_SHIFT, make_samples

    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}.")
    video = len(model_input(model).shape) == 5
    extra = CLIP_SHIFT * (CLIP_LENGTH - 1) if video else 0
    size = parse_input_size(input_size)
    if isinstance(data, (str, os.PathLike)):
        crop = None if size is None else (size[0], size[1] + extra)
        images = _pipeline_images(data, num_samples, patch_size, seed, crop)
    else:
        source = data() if callable(data) and not isinstance(data, tf.data.Dataset) else data
        images = []
        for item in source:
            if isinstance(item, (tuple, list)):
                item = item[0]
            array = np.asarray(item, np.float32)
            images.extend(array if array.ndim == 4 else [array])
            if len(images) >= num_samples:
                break
        images = images[:num_samples]
    if not images:
        raise ValueError("representative_data gave no images.")
    crops = []
    upscaled = 0
    for i, image in enumerate(images):
        if image.ndim != 3 or min(image.shape) < 1:
            raise ValueError(
                f"representative_data image {i} must be a non-empty (H, W, C) array, got "
                f"shape {image.shape}."
            )
        if size is not None:
            upscaled += image.shape[0] < size[0] or image.shape[1] < size[1] + extra
            image = _cover(image, size[0], size[1] + extra)
        h, w = image.shape[:2]
        crop = size if size is not None else (h, w - extra)
        crops.append(make_samples(model, [image], crop=crop)[0].x)
    if upscaled:
        warnings.warn(
            f"int8 calibration: {upscaled} of {len(images)} calibration images are smaller "
            f"than the input size {size[0]}x{size[1] + extra}"
            f"{' (the clip takes a wider window)' if extra else ''}; they were upscaled "
            "(bilinear) to cover it. Calibrate on images at least that large for the best "
            "int8 ranges.",
            stacklevel=2,
        )

    def generate():
        for x in crops:
            yield [_pin_range(x)]

    return generate


# ----------------------------------------------------------------------- inspection


def tflite_model_info(model_content) -> dict:
    """Operators and weight bytes of a ``.tflite`` flatbuffer.

    Returns:
        ``{"ops": sorted builtin operator names, "custom_ops": custom (e.g. Flex) op
        names, "weight_bytes": {dtype name: bytes of constant tensors}}``.
    """
    from ai_edge_litert import schema_py_generated as schema

    if isinstance(model_content, (str, os.PathLike)):
        model_content = pathlib.Path(model_content).read_bytes()
    model = schema.ModelT.InitFromPackedBuf(bytearray(model_content), 0)
    builtin_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
    type_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if k.isupper()}
    ops, custom = set(), set()
    for code in model.operatorCodes or []:
        if code.customCode is not None:
            name = code.customCode
            custom.add(name.decode() if isinstance(name, bytes) else str(name))
        else:
            ops.add(builtin_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?"))
    weight_bytes: dict[str, int] = {}
    seen = set()
    for subgraph in model.subgraphs or []:
        for tensor in subgraph.tensors or []:
            buffer = model.buffers[tensor.buffer]
            if tensor.buffer in seen or buffer.data is None or len(buffer.data) == 0:
                continue
            seen.add(tensor.buffer)
            name = type_names.get(tensor.type, str(tensor.type))
            weight_bytes[name] = weight_bytes.get(name, 0) + len(buffer.data)
    return {"ops": sorted(ops), "custom_ops": sorted(custom), "weight_bytes": weight_bytes}


# ----------------------------------------------------------------------- conversion


class _DropMessages(logging.Filter):
    def __init__(self, *fragments):
        super().__init__()
        self.fragments = fragments

    def filter(self, record):
        return not any(f in record.getMessage() for f in self.fragments)


@contextlib.contextmanager
def _quiet_converter():
    """Silence two converter messages that do not apply here (frozen input, pinned range),
    and the quantizer's C++ log lines (:func:`tfdeblur.startup.stderr_without_log_lines`)."""
    from tfdeblur.startup import stderr_without_log_lines

    log_filter = _DropMessages("trackable_obj", "Statistics for quantized inputs")
    absl_logger = logging.getLogger("absl")
    absl_logger.addFilter(log_filter)
    try:
        with warnings.catch_warnings(), stderr_without_log_lines():
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            yield
    finally:
        absl_logger.removeFilter(log_filter)


def convert(
    model,
    quantization: str = "none",
    representative_data=None,
    input_size=None,
    *,
    io_type: str = "uint8",
    num_calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    calibration_patch_size: int = DEFAULT_CALIBRATION_PATCH,
    frozen=None,
) -> bytes:
    """Convert ``model`` (already in its export formulation) to TFLite bytes.

    See :func:`tflite` for the arguments; ``frozen`` is the model's
    :func:`frozen_function` for this input size, if already made. Raises ValueError
    naming the ops when the model needs anything but TFLite builtins.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}.")
    if io_type not in IO_TYPES:
        raise ValueError(f"io_type must be one of {tuple(IO_TYPES)}, got {io_type!r}.")
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            "representative_data is required for quantization='int8': 'demo', a dataset "
            "folder, or an iterable of images."
        )
    if frozen is None:
        frozen = frozen_function(model, input_signature(model, batch_size=1, input_size=input_size))
    with _quiet_converter():
        # A frozen function has no variables: the "deprecated" path without a
        # trackable object is the right one (see the module docstring).
        converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        converter.representative_dataset = representative_dataset(
            model,
            representative_data,
            num_samples=num_calibration_samples,
            patch_size=calibration_patch_size,
            input_size=input_size,
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = IO_TYPES[io_type]
        converter.inference_output_type = IO_TYPES[io_type]
    try:
        with _quiet_converter():
            content = converter.convert()
    except Exception as err:
        if type(err).__name__ != "ConverterError":
            raise
        # Name the ops, not the MLIR dump.
        message = str(err)
        ops = [line.strip() for line in message.splitlines() if "ops:" in line]
        raise ValueError(
            f"TFLite conversion of {model.name!r} (quantization={quantization!r}) with builtin "
            f"ops only failed. {' '.join(ops) or message[-2000:]} A layer using these ops needs "
            "a builtin-only formulation (declare it with EXPORT_OVERRIDES, see export.prepare)."
        ) from err
    info = tflite_model_info(content)
    if info["custom_ops"]:
        raise ValueError(
            f"TFLite model of {model.name!r} contains non-builtin ops {info['custom_ops']}; "
            "the LiteRT interpreter cannot run them without the Flex delegate."
        )
    return content


def tflite(
    model,
    path,
    quantization: str = "none",
    representative_data=None,
    input_size=None,
    *,
    io_type: str = "uint8",
    num_calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    calibration_patch_size: int = DEFAULT_CALIBRATION_PATCH,
    verbose: bool = True,
    **verification,
) -> ExportResult:
    """Export ``model`` to a builtin-ops-only ``.tflite`` file and verify it.

    Args:
        model: a Keras model (one float32 image or clip input).
        path: output file ending with ``.tflite``; an existing file is replaced once the
            new one is verified.
        quantization: ``"none"``, ``"float16"``, ``"dynamic"`` or ``"int8"``.
        representative_data: int8 calibration data, required for ``"int8"``: ``"demo"``,
            a dataset folder, or images (see :func:`representative_dataset`).
        input_size: ``(H, W)`` (or ``"HxW"``) to fix the input size; None (default)
            keeps H and W dynamic (``interpreter.resize_tensor_input`` then
            ``allocate_tensors`` before running).
        io_type: int8 models' input/output type: ``"uint8"`` (default), ``"int8"`` or
            ``"float32"`` (quantize/dequantize inside the model).
        num_calibration_samples: calibration samples for int8. Default 32.
        calibration_patch_size: side of the calibration crops taken from a dataset
            folder for dynamic-size models (fixed-size ones calibrate on crops of
            ``input_size``). Default 256.
        verbose: print switched layers, the conversion, what was written and the
            verification summary.
        **verification: ``verify``, ``images`` and ``crop`` (``input_size`` if None),
            as :func:`export.result.finish_export` takes them: check the file with the
            LiteRT interpreter against Keras, within the tolerance of its quantization,
            on the verification images (default True), centre-cropped.

    Returns:
        :class:`export.ExportResult`.
    """
    path = check_output_path(path, "tflite")
    input_size = parse_input_size(input_size)
    prepared, switches, frozen = _prepared_and_frozen(model, input_size, verbose)
    if verbose:  # the conversion (and int8 calibration) prints nothing for a while
        calibration = (
            f", calibrating int8 on {num_calibration_samples} crops"
            if quantization == "int8"
            else ""
        )
        print(f"export: converting {model.name!r} to TFLite ({quantization}{calibration}) ...")
    content = convert(
        prepared,
        quantization,
        representative_data,
        input_size,
        io_type=io_type,
        num_calibration_samples=num_calibration_samples,
        calibration_patch_size=calibration_patch_size,
        frozen=frozen,
    )
    return finish_export(
        model, path, lambda tmp: write_bytes_synced(tmp, content), "tflite", quantization,
        switches, input_size=input_size, verbose=verbose, **verification,
    )  # fmt: skip
