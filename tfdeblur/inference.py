"""Loading a model from a file or a registry name, and running it on one image."""

from __future__ import annotations

import abc
import os
import pathlib
import warnings

import keras
import numpy as np


def load_model(spec: str | os.PathLike, preset: str | None = None) -> keras.Model:
    """A Keras model from a ``.keras`` file, or a freshly initialised registered network.

    Args:
        spec: path of a ``.keras`` file (loaded with ``safe_mode=True``), or a registry
            name such as ``"lcnet"`` (untrained weights: a warning says so).
        preset: model preset when ``spec`` is a registry name.

    Raises:
        FileNotFoundError: ``spec`` looks like a file path but does not exist.
        KeyError: ``spec`` is neither a file nor a registered network.
    """
    import tfdeblur  # noqa: F401  (registers the custom layers)
    from tfdeblur import registry

    path = pathlib.Path(spec)
    if path.suffix == ".keras" or os.sep in str(spec):
        if not path.is_file():
            raise FileNotFoundError(f"Model file not found: {path}")
        return keras.models.load_model(path, safe_mode=True)
    model = registry.build_model(str(spec), preset)
    warnings.warn(
        f"--model {spec}: built from the registry with untrained weights; pass a trained "
        ".keras file for real results.",
        stacklevel=2,
    )
    return model


def run_model(model: keras.Model, image: np.ndarray) -> np.ndarray:
    """Deblur one ``(H, W, 3)`` float image; returns the unclamped ``(H, W, 3)`` output."""
    out = model(image[None].astype(np.float32), training=False)
    if isinstance(out, (list, tuple)):
        out = out[0]
    return np.asarray(out, dtype=np.float32)[0]


# ---------------------------------------------------------------------------------------
# Runners: one callable per model format, image (H, W, 3) float32 in, (H, W, 3) out
# ---------------------------------------------------------------------------------------

#: Model file formats :func:`load_runner` reads, by extension.
RUNNER_FORMATS = {".keras": "keras", ".tflite": "tflite", ".onnx": "onnx"}


class Runner(abc.ABC):
    """A loaded model as a function of one image.

    ``runner(image)`` maps a float32 ``(H, W, 3)`` image in ``[0, 1]`` to the network's
    unclamped ``(H, W, 3)`` output, whatever the model format. A video network (input
    ``(B, T, H, W, 3)``) is run on a one-frame clip; videos go through
    :mod:`tfdeblur.deblurring`, which uses its recurrent path.

    Attributes:
        kind: ``"keras"``, ``"tflite"`` or ``"onnx"``.
        name: the model's name (the registry name for registry models, the network name
            stored in a ``.keras`` file, else the file stem).
        is_video: the model takes clips ``(B, T, H, W, 3)``.
        model: the Keras model (Keras runners only), else None.
    """

    kind = "keras"

    def __init__(self, name: str, is_video: bool = False, model=None):
        self.name = name
        self.is_video = is_video
        self.model = model

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = _as_hwc(image)
        x = image[None, None] if self.is_video else image[None]
        y = self._run(np.ascontiguousarray(x, dtype=np.float32))
        y = np.asarray(y, dtype=np.float32)
        return y[0, 0] if self.is_video else y[0]

    @abc.abstractmethod
    def _run(self, x: np.ndarray) -> np.ndarray:
        """The model on a float32 batch; subclasses run their format's engine."""

    @property
    def bytes_per_pixel(self) -> int | None:
        """Estimated working memory per input pixel (see :mod:`tfdeblur.tiling`), or None."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}{' (video)' if self.is_video else ''}>"


def _as_hwc(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}.")
    return image


class KerasRunner(Runner):
    """A Keras model, ``training=False``; the first output of multi-output models.

    The first call with an input shape runs eagerly; from the second call with that shape
    on (tiles of one image, a folder of same-size photos, video frames) the model runs
    inside a ``tf.function`` (``reduce_retracing``: after a second shape, H and W are
    traced as dynamic). Eager calls pay Python overhead on every layer, graph calls pay
    one trace: measured on a 2-core CPU, LCNet at 720p takes ~6 s eager, ~16 s for the
    trace + first graph call, then ~3 s per graph call; LCNet ``tiny`` on 256 x 256 tiles
    1.0 s eager, 0.06 s in graph mode. ``graph=False`` always calls eagerly.
    """

    kind = "keras"

    def __init__(self, model: keras.Model, name: str | None = None, graph: bool = True):
        rank = len(model.inputs[0].shape) if getattr(model, "inputs", None) else 4
        super().__init__(name or model.name, is_video=rank == 5, model=model)
        self._bytes_per_pixel = None
        self._graph = None
        self._calls_per_shape: dict[tuple, int] = {}
        if graph:
            import tensorflow as tf

            self._graph = tf.function(self._first_output, reduce_retracing=True, autograph=False)

    def _first_output(self, x):
        out = self.model(x, training=False)
        return out[0] if isinstance(out, (list, tuple)) else out

    def _run(self, x):
        seen = self._calls_per_shape.get(x.shape, 0)
        self._calls_per_shape[x.shape] = seen + 1
        if self._graph is not None and seen:
            return np.asarray(self._graph(x))
        return np.asarray(self._first_output(x))

    @property
    def bytes_per_pixel(self) -> int | None:
        if self._bytes_per_pixel is None:
            self._bytes_per_pixel = keras_bytes_per_pixel(self.model)
        return self._bytes_per_pixel


def _activation_floats(model: keras.Model, input_shapes: list[tuple]) -> int:
    """Float values of all layer outputs of a functional ``model`` for the given input
    shapes, read symbolically; nested step networks of frame recurrences are counted
    once per frame (they run one frame at a time)."""
    outputs = []
    nested = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        out = layer.output
        outputs.extend(out if isinstance(out, (list, tuple)) else [out])
        step = getattr(layer, "step_model", None)
        if isinstance(step, keras.Model):  # keras_layers.FrameRecurrence
            _, _, height, width, _ = input_shapes[0]
            s = layer.state_downsampling
            shapes = [(1, height, width, step.inputs[0].shape[-1])] + [
                (1, -(-height // s), -(-width // s), c) for c in layer.state_channels
            ]
            nested += _activation_floats(step, shapes)
    probe_model = keras.Model(model.inputs, outputs)
    probes = [keras.KerasTensor(shape) for shape in input_shapes]
    specs = probe_model.compute_output_spec(probes if len(probes) > 1 else probes[0])
    specs = specs if isinstance(specs, (list, tuple)) else [specs]
    return sum(int(np.prod(spec.shape)) for spec in specs) + nested


def keras_bytes_per_pixel(model: keras.Model, probe: int = 64) -> int | None:
    """``2 x 4 bytes x`` float activations per input pixel, summed over all layer outputs.

    Measured symbolically (no computation) on a ``probe x probe`` input (a one-frame clip
    for video networks, whose step network is counted too): a model whose outputs are
    every layer's output is built over the same graph and its output specs are read.
    None when the graph cannot be inspected (subclassed or shared layers).
    """
    try:
        rank = len(model.inputs[0].shape)
        shape = (1,) * (rank - 3) + (probe, probe, model.inputs[0].shape[-1])
        floats = _activation_floats(model, [shape])
    except Exception:  # noqa: BLE001 - any failure means "no estimate"
        return None
    return int(2 * 4 * floats / (probe * probe)) or None


def _quantize_input(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float -> the tensor's dtype: ``q = round(x / scale) + zero_point`` for integer inputs."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype)
    scale, zero_point = detail["quantization"]
    if not scale:
        raise ValueError(f"TFLite input {detail['name']!r} is {dtype} without quantization.")
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def _dequantize_output(y: np.ndarray, detail: dict) -> np.ndarray:
    """The tensor's dtype -> float32: ``(q - zero_point) * scale`` for integer outputs."""
    if np.dtype(detail["dtype"]).kind == "f":
        return y.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)


class TFLiteRunner(Runner):
    """A ``.tflite`` file run by the LiteRT interpreter (``ai_edge_litert``).

    The input is resized to each new image shape (``resize_tensor_input`` +
    ``allocate_tensors``); int8/uint8 inputs and outputs are (de)quantized with the
    scale and zero point the interpreter reports.
    """

    kind = "tflite"

    def __init__(self, path: pathlib.Path, num_threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as err:  # pragma: no cover - depends on the installation
            raise ImportError(
                "Running .tflite models needs the LiteRT interpreter: pip install ai-edge-litert"
            ) from err
        kwargs = {"num_threads": int(num_threads)} if num_threads else {}
        try:
            self.interpreter = Interpreter(model_path=str(path), **kwargs)
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"Cannot load TFLite model {str(path)!r}: {err}") from err
        detail = self.interpreter.get_input_details()[0]
        super().__init__(path.stem, is_video=len(detail["shape"]) == 5)
        self._shape = None

    def _run(self, x):
        interp = self.interpreter
        detail = interp.get_input_details()[0]
        if self._shape != x.shape:
            if tuple(detail["shape"]) != x.shape:
                interp.resize_tensor_input(detail["index"], list(x.shape), strict=False)
            interp.allocate_tensors()
            self._shape = x.shape
            detail = interp.get_input_details()[0]
        interp.set_tensor(detail["index"], _quantize_input(x, detail))
        interp.invoke()
        out = interp.get_output_details()[0]
        return _dequantize_output(interp.get_tensor(out["index"]), out)


class OnnxRunner(Runner):
    """An ``.onnx`` file run by onnxruntime on the CPU (or CUDA when its provider exists)."""

    kind = "onnx"

    def __init__(self, path: pathlib.Path, num_threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as err:  # pragma: no cover - depends on the installation
            raise ImportError(
                "Running .onnx models needs onnxruntime: pip install onnxruntime"
            ) from err
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        providers = [
            p
            for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
            if p in ort.get_available_providers()
        ]
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as err:  # onnxruntime raises its own exception types
            raise ValueError(f"Cannot load ONNX model {str(path)!r}: {err}") from err
        self._input = self.session.get_inputs()[0]
        super().__init__(path.stem, is_video=len(self._input.shape) == 5)

    def _run(self, x):
        return self.session.run(None, {self._input.name: x})[0]


def load_runner(spec, preset: str | None = None, num_threads: int | None = None) -> Runner:
    """Load a model of any supported format as a :class:`Runner`.

    Args:
        spec: a ``.keras`` / ``.tflite`` / ``.onnx`` file, a registry name (untrained
            weights, with a warning), a ``keras.Model``, or a :class:`Runner` (returned
            as it is).
        preset: model preset for registry names.
        num_threads: CPU threads for TFLite / onnxruntime (default: the runtime's).

    Raises:
        FileNotFoundError: the model file does not exist.
        ValueError: the file cannot be loaded; the message names it.
        KeyError: ``spec`` is neither a file nor a registered network.
    """
    if isinstance(spec, Runner):
        return spec
    if isinstance(spec, keras.Model):
        return KerasRunner(spec)
    path = pathlib.Path(spec).expanduser()
    kind = RUNNER_FORMATS.get(path.suffix.lower())
    if kind in ("tflite", "onnx"):
        if not path.is_file():
            raise FileNotFoundError(f"Model file not found: {path}")
        return (TFLiteRunner if kind == "tflite" else OnnxRunner)(path, num_threads)
    model = load_model(spec, preset)
    name = model.name if kind == "keras" else str(spec)
    return KerasRunner(model, name=name)
