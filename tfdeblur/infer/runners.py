"""Loading and running models of every format: the one implementation of model runners.

A :class:`Runner` wraps a model in one of the :data:`FORMATS` and runs it two ways:

* ``runner.run_batch(x)``: float32 ``(1, H, W, 3)`` (``(1, T, H, W, 3)`` for video networks)
  in ``[0, 1]`` -> the network's unclamped float32 output in the same layout. Export
  verification (:func:`export.verify`) and ``tfdeblur bench`` call this.
* ``runner(image)``: one ``(H, W, 3)`` image -> ``(H, W, 3)``; deblurring, tiling and
  evaluation (:mod:`tfdeblur.infer.images`) call this.

Formats (:func:`detect_format` tells them apart, :func:`load_runner` loads any of them):

* ``keras``: a ``.keras`` file (``keras.models.load_model(..., safe_mode=True)``), an
  in-memory ``keras.Model`` or a registry name (untrained weights).
* ``saved_model``: a directory holding ``saved_model.pb``, run through its
  ``serving_default`` signature (what :func:`export.saved_model` writes).
* ``tflite``: the LiteRT interpreter of ``ai_edge_litert`` (the runtime users install from
  PyPI), with its default XNNPACK delegate unless ``default_delegates=False``.
* ``onnx``: onnxruntime.

Rules shared by every caller:

* Suffixes are exact and lower case (:data:`SUFFIXES`): Keras saves and loads ``.keras``
  only (``model.KERAS`` fails inside Keras), so ``.KERAS``, ``.TFLite`` etc. are refused
  everywhere with a message to rename, rather than accepted by one tool and not another.
* Threads: TFLite and onnxruntime runners use every core this process may use
  (:func:`default_num_threads`) unless ``num_threads`` is given. LiteRT's own default may
  run one thread, which would make deployment numbers (and ``tfdeblur bench``) misleading.
* ONNX execution providers (:func:`onnx_providers`): CUDA when the onnxruntime
  installation has it (``onnxruntime-gpu``), then CPU; the same rule as TensorFlow, which
  uses a GPU when it finds one.
* Quantized TFLite inputs and outputs are mapped with the scale and zero point the
  interpreter reports (:func:`quantize_input`, :func:`dequantize_output`).
* Precision (:mod:`tfdeblur.infer.precision`): ``load_runner(..., precision=)`` runs a Keras
  model in float32 (default) or under ``mixed_bfloat16`` (``runner.precision`` says which;
  outputs are float32 either way); other formats run as exported and refuse ``bfloat16``.
* A model with a fixed input size (exported with ``input_size``/``--input-size``) raises
  a ValueError naming the file, its size and the image's for any other size; it is not
  resized (``runner.input_size`` tells callers such as the tiler the size to use).
"""

from __future__ import annotations

import abc
import importlib
import os
import pathlib
import warnings

import keras
import numpy as np

# Model formats a :class:`Runner` runs (``export`` writes the same four), and their suffixes.
from tfdeblur.options import FORMATS, SUFFIXES  # noqa: F401


def default_num_threads() -> int:
    """CPU threads for TFLite / onnxruntime when none are given: all this process may use.

    ``os.sched_getaffinity`` where it exists (a container or ``taskset`` limiting the
    process sees its own share), else ``os.cpu_count()``.
    """
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def onnx_providers() -> list[str]:
    """onnxruntime execution providers of every ONNX runner: CUDA if installed, then CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _suffix_error(path, expected: str) -> ValueError:
    path = pathlib.Path(path)
    hint = ""
    if path.suffix.lower() == expected:
        hint = (
            f" (suffixes are lower case: Keras and the exporters match them exactly; rename it "
            f"to {path.with_suffix(expected).name!r})"
        )
    return ValueError(f"path must end with {expected!r}{hint}, got {str(path)!r}.")


def format_from_suffix(path) -> str | None:
    """The format named by ``path``'s suffix (see :data:`SUFFIXES`), None for other suffixes.

    Raises:
        ValueError: a known suffix in other case (``.KERAS``), naming the path.
    """
    suffix = pathlib.Path(path).suffix
    for fmt, expected in SUFFIXES.items():
        if suffix == expected:
            return fmt
        if suffix.lower() == expected:
            raise _suffix_error(path, expected)
    return None


def check_suffix(path, format: str) -> None:
    """Raise a ValueError naming ``path`` unless it ends with ``SUFFIXES[format]`` exactly."""
    if pathlib.Path(path).suffix != SUFFIXES[format]:
        raise _suffix_error(path, SUFFIXES[format])


def detect_format(path) -> str:
    """``saved_model`` (a directory with ``saved_model.pb``), ``keras``, ``tflite`` or ``onnx``.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: a directory without ``saved_model.pb``, or an unknown suffix.
    """
    path = pathlib.Path(path).expanduser()
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "saved_model"
        raise ValueError(f"{str(path)!r} is a directory without saved_model.pb (no SavedModel).")
    if not path.exists():
        raise FileNotFoundError(f"Model file not found: {str(path)!r}")
    fmt = format_from_suffix(path)
    if fmt is None:
        raise ValueError(
            f"cannot tell the model format of {str(path)!r}: use a .keras, .tflite or .onnx "
            "file or a SavedModel directory."
        )
    return fmt


def load_model(spec: str | os.PathLike, preset: str | None = None) -> keras.Model:
    """A Keras model from a ``.keras`` file, or a freshly initialised registered network.

    Args:
        spec: path of a ``.keras`` file (loaded with ``safe_mode=True``), or a registry
            name such as ``"lcnet"`` (untrained weights: a warning says so).
        preset: model preset when ``spec`` is a registry name.

    Raises:
        FileNotFoundError: ``spec`` looks like a file path but does not exist.
        ValueError: ``spec`` is a file of another format (use :func:`load_runner`), or
            has an upper-case ``.KERAS`` suffix.
        KeyError: ``spec`` is neither a file nor a registered network.
    """
    import tfdeblur  # noqa: F401  (registers the custom layers)
    from tfdeblur.models import registry

    path = pathlib.Path(spec).expanduser()
    fmt = format_from_suffix(path)
    if fmt not in (None, "keras"):
        raise ValueError(
            f"{str(spec)!r} is a {fmt} file; a Keras model is read from a .keras file "
            f"(tfdeblur.infer.runners.load_runner runs {fmt} files)."
        )
    if fmt == "keras" or os.sep in str(spec):
        if not path.is_file():
            raise FileNotFoundError(f"Model file not found: {path}")
        check_keras_archive(path)
        return keras.models.load_model(path, safe_mode=True)
    model = registry.build_model(str(spec), preset)
    warnings.warn(
        f"--model {spec}: built from the registry with untrained weights; pass a trained "
        ".keras file for real results.",
        stacklevel=2,
    )
    return model


def check_keras_archive(path) -> None:
    """Say what is wrong with a damaged ``.keras`` file before Keras reads it (Keras
    reports a damaged archive as "File not found").

    A ``.keras`` file is a zip archive holding ``config.json`` and
    ``model.weights.h5``; every member is read and its CRC checked.

    Raises:
        ValueError: naming the file and the problem (not a zip archive, truncated, a
            member that fails its CRC check, a missing member).
    """
    import zipfile

    path = pathlib.Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            names = set(archive.namelist())
    except zipfile.BadZipFile as err:
        raise ValueError(
            f"Model file {str(path)!r} is not a readable .keras archive ({err}): it is "
            "truncated, damaged or not a Keras model; save or copy it again."
        ) from None
    except (OSError, EOFError, zipfile.LargeZipFile, NotImplementedError) as err:
        raise ValueError(f"Model file {str(path)!r} cannot be read: {err}.") from None
    if bad is not None:
        raise ValueError(
            f"Model file {str(path)!r} is damaged: its member {bad!r} fails its CRC check; "
            "save or copy it again."
        )
    missing = sorted({"config.json", "model.weights.h5"} - names)
    if missing:
        raise ValueError(
            f"Model file {str(path)!r} is not a Keras model archive: it lacks {', '.join(missing)}."
        )


def _fixed_size(shape) -> tuple[int, int] | None:
    """``(H, W)`` of an input shape whose spatial axes are both fixed, else None.

    Dynamic axes are None (Keras, TensorFlow), -1 (TFLite ``shape_signature``) or a name
    (onnxruntime).
    """
    if shape is None or len(shape) < 4:
        return None
    dims = list(shape)[-3:-1]
    if all(isinstance(d, (int, np.integer)) and d > 0 for d in dims):
        return int(dims[0]), int(dims[1])
    return None


# ---------------------------------------------------------------------------------------
# Runners
# ---------------------------------------------------------------------------------------


class Runner(abc.ABC):
    """A loaded model: ``run_batch`` on model inputs, ``__call__`` on one image.

    A video network (input ``(B, T, H, W, 3)``) is run on a one-frame clip by
    ``__call__``; videos go through :mod:`tfdeblur.infer.images`, which uses its recurrent
    path.

    Attributes:
        kind: the format, one of :data:`FORMATS`.
        name: the model's name (the registry name for registry models, the network name
            stored in a ``.keras`` file, else the file or directory name).
        is_video: the model takes clips ``(B, T, H, W, 3)``.
        model: the Keras model (Keras runners only), else None.
        path: the model file or directory, None for in-memory models.
        input_size: ``(H, W)`` of a fixed-size model, None when any size runs.
        precision: ``"float32"``, or ``"bfloat16"`` for a Keras model run under
            ``mixed_bfloat16`` (see :mod:`tfdeblur.infer.precision`).
    """

    kind = "keras"
    precision = "float32"

    def __init__(
        self,
        name: str,
        is_video: bool = False,
        model=None,
        *,
        path=None,
        input_size: tuple[int, int] | None = None,
    ):
        self.name = name
        self.is_video = is_video
        self.model = model
        self.path = None if path is None else pathlib.Path(path)
        self.input_size = input_size

    def run_batch(self, x: np.ndarray) -> np.ndarray:
        """The model on ``x``: float32 ``(1, H, W, 3)`` or ``(1, T, H, W, 3)``, unclamped output.

        Raises:
            ValueError: ``x`` has the wrong rank, or another size than a fixed-size model's
                (the message names the model file, its size and the input's).
        """
        x = np.ascontiguousarray(x, dtype=np.float32)
        rank = 5 if self.is_video else 4
        if x.ndim != rank:
            layout = "(B, T, H, W, 3)" if self.is_video else "(B, H, W, 3)"
            raise ValueError(f"{self._label()} takes {layout} input, got shape {x.shape}.")
        size = tuple(int(d) for d in x.shape[-3:-1])
        if self.input_size is not None and size != self.input_size:
            h, w = self.input_size
            raise ValueError(
                f"{self._label()} has a fixed input size {h}x{w} (exported with "
                f"--input-size); the image is {size[0]}x{size[1]}. Run it on {h}x{w} inputs "
                "(tiles of that size), or export the model without --input-size for any size."
            )
        return np.asarray(self._run(x), dtype=np.float32)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Deblur one float32 ``(H, W, 3)`` image in ``[0, 1]``; unclamped ``(H, W, 3)``."""
        image = _as_hwc(image)
        x = image[None, None] if self.is_video else image[None]
        y = self.run_batch(x)
        return y[0, 0] if self.is_video else y[0]

    @abc.abstractmethod
    def _run(self, x: np.ndarray) -> np.ndarray:
        """The model on a checked float32 batch; subclasses run their format's engine."""

    @property
    def bytes_per_pixel(self) -> int | None:
        """Estimated working memory per input pixel (see :mod:`tfdeblur.infer.tiling`), or None."""
        return None

    def _label(self) -> str:
        where = f" {str(self.path)!r}" if self.path is not None else f" {self.name!r}"
        return f"{self.kind} model{where}"

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
    one trace: measured on a 2-core CPU, LCNet at 720p takes 1.5 s eager, 1.35 s for the
    trace + first graph call, then 0.8-0.9 s per graph call; LCNet ``tiny`` on 256 x 256
    tiles 74 ms eager, 185 ms for the trace, then 20 ms in graph mode (an earlier
    measurement on a busier machine: 6 s, 16 s and 3 s for LCNet at 720p).

    Args:
        model: the Keras model.
        name: the runner's name (default the model's).
        graph: use the ``tf.function``; False always calls eagerly.
        eager_first_call: run the first call of each shape eagerly (the default, for a
            one-off photo); False traces on the first call (``tfdeblur bench``, whose
            warm-up calls then absorb the trace).
        path: the ``.keras`` file the model came from, if any.
        precision: ``"float32"`` (default) or ``"bfloat16"``: the model is run as a copy
            rebuilt under ``mixed_bfloat16`` (:func:`tfdeblur.infer.precision.as_bfloat16`);
            ``runner.model`` is that copy.
    """

    kind = "keras"

    def __init__(
        self,
        model: keras.Model,
        name: str | None = None,
        graph: bool = True,
        *,
        eager_first_call: bool = True,
        path=None,
        precision: str = "float32",
    ):
        from tfdeblur.infer.precision import as_bfloat16, check_precision

        if check_precision(precision) == "auto":
            raise ValueError(
                "KerasRunner takes precision 'float32' or 'bfloat16'; resolve 'auto' first."
            )
        if precision == "bfloat16":
            name = name or model.name
            model = as_bfloat16(model)
        self.precision = precision
        inputs = getattr(model, "inputs", None)
        shape = tuple(inputs[0].shape) if inputs else None
        super().__init__(
            name or model.name,
            is_video=shape is not None and len(shape) == 5,
            model=model,
            path=path,
            input_size=_fixed_size(shape),
        )
        self._bytes_per_pixel = None
        self._graph = None
        self._calls_per_shape: dict[tuple, int] = {}
        self._eager_first_call = eager_first_call
        if graph:
            import tensorflow as tf

            self._graph = tf.function(self._first_output, reduce_retracing=True, autograph=False)

    def _first_output(self, x):
        out = self.model(x, training=False)
        out = out[0] if isinstance(out, (list, tuple)) else out
        return out if out.dtype == "float32" else keras.ops.cast(out, "float32")

    def _run(self, x):
        seen = self._calls_per_shape.get(x.shape, 0)
        self._calls_per_shape[x.shape] = seen + 1
        if self._graph is not None and (seen or not self._eager_first_call):
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


def quantize_input(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float -> a TFLite tensor's dtype: ``q = clip(round(x / scale) + zero_point)``.

    ``detail`` is the interpreter's tensor detail (``get_input_details()[0]``); float
    tensors are only cast.
    """
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype)
    scale, zero_point = detail["quantization"]
    if not scale:
        raise ValueError(f"TFLite input {detail['name']!r} is {dtype} without quantization.")
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize_output(y: np.ndarray, detail: dict) -> np.ndarray:
    """A TFLite tensor's dtype -> float32: ``x = (q - zero_point) * scale``."""
    if np.dtype(detail["dtype"]).kind == "f":
        return y.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)


def _import_runtime(module: str, suffix: str, what: str):
    """Import the runtime of ``suffix`` files, or fail saying which package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:  # pragma: no cover - depends on the installation
        package = "ai-edge-litert" if module.startswith("ai_edge_litert") else module
        raise ImportError(
            f"Running {suffix} models needs {what}: pip install {package} (or 'tfdeblur[export]')."
        ) from err


def tflite_interpreter(path_or_bytes, num_threads=None, default_delegates: bool = True):
    """A LiteRT interpreter (``ai_edge_litert``) of a ``.tflite`` file or its bytes.

    Args:
        path_or_bytes: the file, or the flatbuffer's bytes.
        num_threads: CPU threads; default :func:`default_num_threads`.
        default_delegates: apply the default XNNPACK CPU delegate (as deployed).
            ``False`` runs the reference kernels, which tells a delegate bug from a
            conversion bug (used by export verification's diagnosis).
    """
    litert = _import_runtime("ai_edge_litert.interpreter", ".tflite", "the LiteRT interpreter")
    Interpreter, OpResolverType = litert.Interpreter, litert.OpResolverType
    kwargs = {"num_threads": int(num_threads or default_num_threads())}
    if not default_delegates:
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if isinstance(path_or_bytes, (bytes, bytearray)):
        return Interpreter(model_content=bytes(path_or_bytes), **kwargs)
    return Interpreter(model_path=str(path_or_bytes), **kwargs)


class TFLiteRunner(Runner):
    """A ``.tflite`` file run by the LiteRT interpreter (``ai_edge_litert``).

    A dynamic-size model's input is resized to each new input shape
    (``resize_tensor_input`` + ``allocate_tensors``); a fixed-size one (exported with
    ``input_size``) runs its own size only (see :meth:`Runner.run_batch`). int8/uint8
    inputs and outputs are (de)quantized with the scale and zero point the interpreter
    reports.

    Args:
        path: the ``.tflite`` file.
        num_threads: CPU threads; default :func:`default_num_threads`.
        default_delegates: see :func:`tflite_interpreter`.
    """

    kind = "tflite"

    def __init__(self, path, num_threads: int | None = None, *, default_delegates: bool = True):
        path = pathlib.Path(path)
        try:
            self.interpreter = tflite_interpreter(path, num_threads, default_delegates)
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"Cannot load TFLite model {str(path)!r}: {err}") from err
        detail = self.interpreter.get_input_details()[0]
        signature = [int(d) for d in detail.get("shape_signature", detail["shape"])]
        super().__init__(
            path.stem, is_video=len(signature) == 5, path=path, input_size=_fixed_size(signature)
        )
        self._shape = None

    def _run(self, x):
        interp = self.interpreter
        detail = interp.get_input_details()[0]
        if self._shape != x.shape:
            if tuple(detail["shape"]) != x.shape:
                # strict=False: the batch axis is fixed to 1 in the file but may be resized.
                interp.resize_tensor_input(detail["index"], list(x.shape), strict=False)
            interp.allocate_tensors()
            self._shape = x.shape
            detail = interp.get_input_details()[0]
        interp.set_tensor(detail["index"], quantize_input(x, detail))
        interp.invoke()
        out = interp.get_output_details()[0]
        return dequantize_output(interp.get_tensor(out["index"]), out)


class OnnxRunner(Runner):
    """An ``.onnx`` file run by onnxruntime.

    Args:
        path: the ``.onnx`` file.
        num_threads: intra-op threads; default :func:`default_num_threads`.
        providers: execution providers; default :func:`onnx_providers`.
    """

    kind = "onnx"

    def __init__(self, path, num_threads: int | None = None, *, providers=None):
        ort = _import_runtime("onnxruntime", ".onnx", "onnxruntime")
        path = pathlib.Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(num_threads or default_num_threads())
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=list(providers or onnx_providers())
            )
        except Exception as err:  # onnxruntime raises its own exception types
            raise ValueError(f"Cannot load ONNX model {str(path)!r}: {err}") from err
        self._input = self.session.get_inputs()[0]
        super().__init__(
            path.stem,
            is_video=len(self._input.shape) == 5,
            path=path,
            input_size=_fixed_size(self._input.shape),
        )

    def _run(self, x):
        return self.session.run(None, {self._input.name: x})[0]


class SavedModelRunner(Runner):
    """A SavedModel directory run through its ``serving_default`` signature.

    The signature's one input is fed by name; of its outputs the one named
    ``"deblurred"`` (what :func:`export.saved_model` writes) is returned, else the first.
    """

    kind = "saved_model"

    def __init__(self, path):
        import tensorflow as tf

        path = pathlib.Path(path)
        try:
            # Kept as an attribute: the signature needs the restored variables alive.
            self.loaded = tf.saved_model.load(str(path))
            serve = self.loaded.signatures["serving_default"]
        except (KeyError, OSError, ValueError) as err:
            raise ValueError(f"Cannot load SavedModel {str(path)!r}: {err}") from err
        inputs = serve.structured_input_signature[1]
        if len(inputs) != 1:
            raise ValueError(
                f"SavedModel {str(path)!r}: serving_default takes {len(inputs)} inputs, not 1."
            )
        ((self._input_name, spec),) = inputs.items()
        self._serve = serve
        shape = spec.shape.as_list()
        super().__init__(
            path.name, is_video=len(shape) == 5, path=path, input_size=_fixed_size(shape)
        )

    def _run(self, x):
        import tensorflow as tf

        outputs = self._serve(**{self._input_name: tf.constant(x)})
        return np.asarray(outputs.get("deblurred", next(iter(outputs.values()))))


def load_runner(
    spec,
    preset: str | None = None,
    num_threads: int | None = None,
    *,
    format: str | None = None,
    default_delegates: bool = True,
    providers=None,
    precision: str | None = None,
) -> Runner:
    """Load a model of any supported format as a :class:`Runner`.

    Args:
        spec: a ``.keras`` / ``.tflite`` / ``.onnx`` file, a SavedModel directory, a
            registry name (untrained weights, with a warning), a ``keras.Model``, or a
            :class:`Runner` (returned as it is).
        preset: model preset for registry names.
        num_threads: CPU threads for TFLite / onnxruntime; default
            :func:`default_num_threads` (all cores).
        format: the format of the file at ``spec`` (default: :func:`detect_format`).
        default_delegates: TFLite only: apply the default XNNPACK delegate (see
            :func:`tflite_interpreter`).
        providers: ONNX only: execution providers (default :func:`onnx_providers`).
        precision: ``"float32"``, ``"bfloat16"`` or ``"auto"`` (see
            :mod:`tfdeblur.infer.precision`): a Keras model runs under ``mixed_bfloat16`` for
            ``"bfloat16"`` (and for ``"auto"`` where that is faster); other formats run
            as exported and refuse ``"bfloat16"``. None (default): a given
            :class:`Runner` as it is, anything else in float32.

    Raises:
        FileNotFoundError: the model file does not exist.
        ValueError: the file cannot be loaded, its suffix is not an exact lower-case
            one, or ``bfloat16`` is asked of a non-Keras model; the message names it.
        KeyError: ``spec`` is neither a file nor a registered network.
    """
    from tfdeblur.infer.precision import check_precision

    if precision is not None:
        check_precision(precision)
    runner = _load_runner(spec, preset, num_threads, format, default_delegates, providers)
    return with_precision(runner, precision)


def with_precision(runner: Runner, precision: str | None) -> Runner:
    """``runner`` in ``precision`` (see :mod:`tfdeblur.infer.precision`): itself when it already
    runs so, when ``precision`` is None, or when ``"auto"`` resolves to its own; else a
    new :class:`KerasRunner` of its model in that precision.

    Raises:
        ValueError: ``"bfloat16"`` for a non-Keras runner, naming its file; ``"float32"``
            for a runner already in bfloat16 (load the model again).
    """
    from tfdeblur.infer.precision import check_format, resolve_precision

    if precision is None:
        return runner
    check_format(precision, runner.kind, runner._label())
    if runner.kind != "keras":
        return runner
    wanted = resolve_precision(precision, runner.model.name)
    if wanted == runner.precision:
        return runner
    model = runner.model
    if runner.precision != "float32":
        raise ValueError(
            f"{runner._label()} runs in {runner.precision}; load it again for {wanted}."
        )
    return KerasRunner(model, name=runner.name, path=runner.path, precision=wanted)


def _load_runner(spec, preset, num_threads, format, default_delegates, providers) -> Runner:
    if isinstance(spec, Runner):
        return spec
    if isinstance(spec, keras.Model):
        return KerasRunner(spec)
    path = pathlib.Path(spec).expanduser()
    is_path = (
        format is not None
        or format_from_suffix(path) is not None
        or os.sep in str(spec)
        or (path / "saved_model.pb").is_file()
    )
    if not is_path:
        return KerasRunner(load_model(spec, preset), name=str(spec))
    if format is None:
        format = detect_format(path)
    elif format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}.")
    elif not path.exists():
        raise FileNotFoundError(f"Model file not found: {str(path)!r}")
    if format == "keras":
        check_suffix(path, "keras")  # Keras reads .keras files only
        model = load_model(path)
        return KerasRunner(model, name=model.name, path=path)
    if format == "saved_model":
        return SavedModelRunner(path)
    if format == "tflite":
        return TFLiteRunner(path, num_threads, default_delegates=default_delegates)
    return OnnxRunner(path, num_threads, providers=providers)
