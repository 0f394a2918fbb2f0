"""Benchmark of the exported formats: size, GFLOPs, latency and agreement per model.

For each model and format: parameters, file size, GFLOPs per frame, median latency at
each requested size (256x256 and 1280x720 by default) on the current machine, and the
artifact's PSNR against the Keras output and against the sharp images. Also what LCNet's
LCBlocks cost (:func:`lcblock_cost`: LCNet against ``num_lc_blocks=0`` in a training step
and in Keras graph mode, and the float32 TFLite operators per LCBlock).

Methods:

* Latency: median over ``runs`` calls after ``warmup`` calls, each call synchronised
  (the output is copied to host memory before the clock stops), batch 1; the formats
  take turns within each round, so a drifting machine load affects them alike. ``keras`` is
  the model's call traced once as a ``tf.function`` (graph mode, no XLA, the model's own
  formulation), ``saved_model`` its serving signature after ``tf.saved_model.load``,
  ``tflite*`` the LiteRT interpreter (``ai_edge_litert``, XNNPACK delegate; the int8
  input quantized inside the timed call) on a file converted for that input size
  (``input_size``, how a phone app deploys it; XNNPACK runs the whole static graph), the
  dynamic-shape file's time kept as ``latency_ms_dynamic_shape``, ``onnx``
  ``InferenceSession.run`` (providers of :func:`tfdeblur.infer.runners.onnx_providers`: CUDA
  if installed, else CPU). Every format runs through its :mod:`tfdeblur.infer.runners`
  runner's ``run_batch``, the code deployment and export verification run. Threads:
  every core this process may use (:func:`tfdeblur.infer.runners.default_num_threads`)
  unless ``threads``.
  Video networks run a clip of 3 frames; their latency and GFLOPs are per frame.
* GFLOPs: counted per operator of the float32 TFLite graph converted with the static
  input shape (every tensor shape known, the export formulation of every layer):
  convolutions, transposed convolutions, fully-connected layers and matrix products
  count 2 FLOPs per multiply-add; element-wise arithmetic and activations 1 per output
  element, softmax 3, reductions 1 per input element, pooling 1 per window element,
  bilinear resizing 4 per output element; data movement (reshape, pad, slice, concat,
  depth-to-space, gather, transpose) 0. ``gflops_conv`` is the multiply-add part
  alone.
* PSNR: :func:`export.verify` on the verification images (default: the demo dataset's
  test split), outputs against the Keras model's and, clipped to [0, 1], against the
  sharp images.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import platform
import statistics
import tempfile
import time
from collections.abc import Sequence

import numpy as np

FORMATS = (
    "keras",
    "saved_model",
    "tflite",
    "tflite_float16",
    "tflite_dynamic",
    "tflite_int8",
    "onnx",
)
DEFAULT_SIZES = ((256, 256), (720, 1280))
PRECISION_PAIR = ("float32", "bfloat16")
FLOPS_SIZE = (720, 1280)

_MAC_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED", "BATCH_MATMUL"}
_ELEMENTWISE = {
    "ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM", "SQUARED_DIFFERENCE", "POW",
    "LEAKY_RELU", "RELU", "RELU6", "RELU_N1_TO_1", "PRELU", "LOGISTIC", "TANH", "ELU",
    "HARD_SWISH", "GELU", "EXP", "LOG", "SQRT", "RSQRT", "SQUARE", "ABS", "NEG", "FLOOR",
    "CEIL", "ROUND", "SIN", "COS", "SELECT", "SELECT_V2", "GREATER", "GREATER_EQUAL",
    "LESS", "LESS_EQUAL", "EQUAL", "NOT_EQUAL", "FLOOR_DIV", "FLOOR_MOD", "ADD_N",
}  # fmt: skip
_REDUCTIONS = {"SUM", "MEAN", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD"}
_POOLS = {"AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"}


def _label(fmt: str) -> tuple[str, str]:
    """``"tflite_int8"`` -> ``("tflite", "int8")``."""
    if fmt.startswith("tflite"):
        return "tflite", fmt.partition("_")[2] or "none"
    return fmt, "none"


# --------------------------------------------------------------------------- FLOPs


def count_tflite_flops(model_content) -> dict:
    """FLOPs of a static-shape TFLite model, counted per operator (see module docstring).

    Returns:
        ``{"flops": total, "mac_flops": 2 * multiply-adds, "unknown_shapes": ops whose
        shapes were not static, "loops": WHILE ops (bodies counted once)}``.
    """
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(model_content), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
    total = mac = 0
    unknown = loops = 0
    for subgraph in model.subgraphs:

        def shape(index, tensors=subgraph.tensors):
            dims = tensors[index].shape
            return [int(d) for d in (dims if dims is not None else [])]

        for op in subgraph.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")
            if name == "WHILE":
                loops += 1
                continue
            inputs = [i for i in (op.inputs if op.inputs is not None else []) if i >= 0]
            outputs = list(op.outputs if op.outputs is not None else [])
            if not outputs:
                continue
            out = shape(outputs[0])
            sig = subgraph.tensors[outputs[0]].shapeSignature
            if any(d < 0 for d in out) or (sig is not None and any(int(d) < 0 for d in sig)):
                unknown += 1
                continue
            n_out = int(np.prod(out)) if out else 1
            flops = 0
            if name in _MAC_OPS:
                if name == "CONV_2D":
                    macs = n_out * int(np.prod(shape(inputs[1])[1:]))
                elif name == "DEPTHWISE_CONV_2D":
                    kernel = shape(inputs[1])
                    macs = n_out * kernel[1] * kernel[2]
                elif name == "TRANSPOSE_CONV":
                    # inputs: output_shape, weights (Cout, kh, kw, Cin), input
                    kernel = shape(inputs[1])
                    macs = int(np.prod(shape(inputs[2]))) * kernel[0] * kernel[1] * kernel[2]
                elif name == "FULLY_CONNECTED":
                    macs = n_out * shape(inputs[1])[-1]
                else:  # BATCH_MATMUL
                    lhs = shape(inputs[0])
                    adj_x = bool(getattr(op.builtinOptions, "adjX", False))
                    macs = n_out * (lhs[-2] if adj_x else lhs[-1])
                flops = 2 * macs
                mac += flops
            elif name in _ELEMENTWISE:
                flops = n_out
            elif name == "SOFTMAX":
                flops = 3 * n_out
            elif name in _REDUCTIONS:
                flops = int(np.prod(shape(inputs[0])))
            elif name in _POOLS:
                options = op.builtinOptions
                flops = n_out * int(options.filterHeight) * int(options.filterWidth)
            elif name in ("RESIZE_BILINEAR",):
                flops = 4 * n_out
            total += flops
    return {"flops": total, "mac_flops": mac, "unknown_shapes": unknown, "loops": loops}


def _static_spec(model, size, clip_length: int):
    import tensorflow as tf

    from export.signature import input_signature

    spec = input_signature(model, batch_size=1, input_size=size)
    shape = list(spec.shape)
    if len(shape) == 5 and shape[1] is None:
        shape[1] = clip_length
    return tf.TensorSpec(shape, tf.float32, name=spec.name)


def count_gflops(model, size: tuple[int, int] = FLOPS_SIZE) -> dict:
    """GFLOPs of ``model`` per frame at ``size`` (H, W), counted on its TFLite graph.

    The graph is the exporter's own float32 conversion (:func:`export.tflite.convert`,
    builtin ops, export formulation of every layer) of the fully static input: batch 1,
    ``size``, and for video networks a clip of :data:`export.verify.CLIP_LENGTH` frames.

    Returns:
        ``{"gflops": ..., "gflops_conv": ..., "size": [H, W], "frames": frames per call}``.
    """
    from export.prepare import prepare_for_export
    from export.tflite import convert, frozen_function
    from export.verify import CLIP_LENGTH

    prepared, _ = prepare_for_export(model)
    spec = _static_spec(prepared, size, CLIP_LENGTH)
    frames = spec.shape[1] if len(spec.shape) == 5 else 1
    content = convert(prepared, "none", frozen=frozen_function(prepared, spec))
    counts = count_tflite_flops(content)
    return {
        "gflops": counts["flops"] / frames / 1e9,
        "gflops_conv": counts["mac_flops"] / frames / 1e9,
        "size": list(size),
        "frames": int(frames),
        "ops_with_unknown_shapes": counts["unknown_shapes"],
        "loops": counts["loops"],
    }


# --------------------------------------------------------------------------- latency


def _interleaved_medians(timers: dict, warmup: int, runs: int) -> dict:
    """Median seconds per timer, the timers called in turn within each round.

    Interleaving makes the comparison fair on a machine whose load drifts: every
    format sees the same conditions in each round.
    """
    for fn in timers.values():
        for _ in range(warmup):
            fn()
    times = {key: [] for key in timers}
    for _ in range(runs):
        for key, fn in timers.items():
            time.sleep(0.05)  # let the previous runtime's spinning worker threads idle
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in times.items()}


def _input(model, size, clip_length: int, seed: int = 0) -> np.ndarray:
    from export.signature import model_input

    shape = list(model_input(model).shape)
    shape[0] = 1
    shape[-3], shape[-2] = size
    if len(shape) == 5:
        shape[1] = clip_length
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def _timer(fmt: str, model, path, x: np.ndarray, threads, precision: str = "float32"):
    """A zero-argument callable running one synchronised inference of ``x``.

    The artifact runs through its :mod:`tfdeblur.infer.runners` runner's ``run_batch``, the
    code export verification and ``tfdeblur deblur`` run: the call returns a NumPy array,
    so the output is in host memory when the clock stops, and the time includes what an
    application pays per frame (quantizing an int8 model's input, copying it in and
    out). ``keras`` times the in-memory model in graph mode (traced on the first call,
    a warm-up call), in ``precision`` (``"float32"`` or ``"bfloat16"``).
    """
    from tfdeblur.infer.runners import KerasRunner, load_runner

    backend, _ = _label(fmt)
    if backend == "keras":
        runner = KerasRunner(model, eager_first_call=False, precision=precision)
    else:
        runner = load_runner(path, format=backend, num_threads=threads)
    return lambda: runner.run_batch(x)


# --------------------------------------------------------------------------- LCBlock


def count_tflite_ops(model_content) -> dict:
    """Operators of a TFLite flatbuffer by builtin name (all subgraphs)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(model_content), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
    counts: dict[str, int] = {}
    for subgraph in model.subgraphs:
        for op in subgraph.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")
            counts[name] = counts.get(name, 0) + 1
    return counts


def lcblock_cost(
    preset: str = "paper",
    batch_size: int = 1,
    patch_size: int = 256,
    warmup: int = 2,
    steps: int = 5,
) -> dict:
    """What LCNet's LCBlocks cost: LCNet against the same network without them.

    ``num_lc_blocks=0`` removes the LCBlocks and nothing else (same weights elsewhere).
    Timed, interleaved, medians: one training step (L1 loss, Adam, a ``tf.function``
    without XLA, ``batch_size`` x ``patch_size``^2) and one inference call in Keras graph
    mode (batch 1), each in the model's own (training) formulation. Counted: operators of
    the float32 TFLite graph the exporter converts at ``patch_size`` x ``patch_size``
    (export formulation), in all and per LCBlock.
    """
    import keras
    import tensorflow as tf

    import tfdeblur
    from export.prepare import prepare_for_export
    from export.signature import input_signature
    from export.tflite import convert, frozen_function

    rng = np.random.default_rng(0)
    shape = (batch_size, patch_size, patch_size, 3)
    blurry = tf.constant(rng.random(shape, dtype=np.float32))
    sharp = tf.constant(rng.random(shape, dtype=np.float32))
    single = blurry[:1]
    models = {
        "lcnet": tfdeblur.build_model("lcnet", preset),
        "no_lc": tfdeblur.build_model("lcnet", preset, num_lc_blocks=0),
    }
    timers, ops = {}, {}
    for name, model in models.items():
        optimizer = keras.optimizers.Adam(1e-4)
        optimizer.build(model.trainable_variables)

        @tf.function
        def step(x, y, model=model, optimizer=optimizer):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.abs(model(x, training=True) - y))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
            return loss

        infer = tf.function(lambda x, model=model: model(x, training=False))
        timers[("train", name)] = lambda step=step: step(blurry, sharp).numpy()
        timers[("infer", name)] = lambda infer=infer: infer(single).numpy()
        prepared, _ = prepare_for_export(model)
        spec = input_signature(prepared, batch_size=1, input_size=(patch_size, patch_size))
        content = convert(prepared, "none", frozen=frozen_function(prepared, spec))
        ops[name] = sum(count_tflite_ops(content).values())
    seconds = _interleaved_medians(timers, warmup, steps)
    blocks = sum(type(layer).__name__ == "LCBlock" for layer in models["lcnet"].layers)
    ms = {key: 1000 * s for key, s in seconds.items()}
    return {
        "model": "lcnet",
        "preset": preset,
        "batch_size": batch_size,
        "patch_size": patch_size,
        "steps": steps,
        "train_step_ms": {name: ms[("train", name)] for name in models},
        "keras_ms": {name: ms[("infer", name)] for name in models},
        "train_ratio": ms[("train", "lcnet")] / ms[("train", "no_lc")],
        "keras_ratio": ms[("infer", "lcnet")] / ms[("infer", "no_lc")],
        "lc_blocks": blocks,
        "tflite_ops": ops,
        "tflite_ops_per_lcblock": (ops["lcnet"] - ops["no_lc"]) / max(blocks, 1),
    }


# --------------------------------------------------------------------------- driver


@dataclasses.dataclass
class BenchConfig:
    """Settings of :func:`run_bench` (all JSON-able)."""

    models: Sequence[str] = ("lcnet",)
    preset: str | None = "paper"
    formats: Sequence[str] = FORMATS
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES
    flops_size: tuple[int, int] = FLOPS_SIZE
    warmup: int = 3
    runs: int = 10
    threads: int | None = None
    calibration_data: str = "demo"
    calibration_samples: int = 16
    verify_images: Sequence[str] | None = None
    verify_crop: tuple[int, int] | None = None
    lc_train_step: bool = True
    lc_batch_size: int = 1
    lc_patch_size: int = 256
    lc_steps: int = 5
    precision: str = "float32"
    network_ratios: bool = False
    ratio_size: tuple[int, int] = (256, 256)


def machine_info() -> dict:
    """Where the numbers come from: platform, cores, threads the runners use, versions."""
    import tensorflow as tf

    from tfdeblur.infer.runners import default_num_threads

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "default_threads": default_num_threads(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
    }
    for module in ("onnxruntime", "ai_edge_litert", "tf2onnx"):
        try:
            info[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - optional packages
            info[module] = None
    try:
        from tfdeblur.infer.runners import onnx_providers

        info["onnx_providers"] = onnx_providers()
    except ImportError:  # onnxruntime not installed
        info["onnx_providers"] = None
    return info


def _export(fmt, model, directory: pathlib.Path, stem: str, config: BenchConfig, size=None):
    import export

    backend, quantization = _label(fmt)
    quiet = dict(verify=False, verbose=False)
    if backend == "keras":
        return export.keras_file(model, directory / f"{stem}.keras", **quiet)
    if backend == "saved_model":
        return export.saved_model(model, directory / f"{stem}_savedmodel", **quiet)
    if backend == "onnx":
        return export.onnx(model, directory / f"{stem}.onnx", input_size=size, **quiet)
    suffix = "" if quantization == "none" else f"_{quantization}"
    return export.tflite(
        model,
        directory / f"{stem}{suffix}.tflite",
        quantization,
        config.calibration_data if quantization == "int8" else None,
        size,
        num_calibration_samples=config.calibration_samples,
        **quiet,
    )


def bench_model(spec: str, config: BenchConfig, directory: pathlib.Path) -> dict:
    """Benchmark one model (registry name or ``.keras`` file) in every format."""
    import export
    from export.verify import CLIP_LENGTH, load_image_pairs
    from tfdeblur.infer.precision import resolve_precision
    from tfdeblur.infer.runners import load_model

    model = load_model(spec, config.preset)
    precision = resolve_precision(config.precision, model.name)
    stem = pathlib.Path(spec).stem if spec.endswith(".keras") else spec
    video = len(model.inputs[0].shape) == 5
    frames = CLIP_LENGTH if video else 1
    entry = {
        "model": spec,
        "preset": None if spec.endswith(".keras") else config.preset,
        "parameters": int(model.count_params()),
        "per_frame_of_clip": frames if video else None,
        **{"flops": count_gflops(model, tuple(config.flops_size))},
        "artifacts": [],
    }
    images = load_image_pairs(config.verify_images)  # read once, used for every format
    # Export and verify every format, and the static-size TFLite files.
    exported = {}
    for fmt in config.formats:
        backend, quantization = _label(fmt)
        result = _export(fmt, model, directory, stem, config)
        report = export.verify(
            model,
            result.path,
            images,
            format=backend,
            quantization=quantization,
            crop=config.verify_crop,
            raise_on_failure=False,
        )
        static = {}
        if backend in ("tflite", "onnx"):
            # Deployment at a known size, and the any-size file resized to it: the ratio
            # of the two is the cost of dynamic H, W (:func:`any_size_ratios`).
            for size in config.sizes:
                key = f"{size[0]}x{size[1]}"
                static[key] = _export(fmt, model, directory, f"{stem}_{key}", config, size).path
        exported[fmt] = (result, report, static)

    latency = {(fmt, kind): {} for fmt in config.formats for kind in ("static", "dynamic")}
    for size in config.sizes:
        key = f"{size[0]}x{size[1]}"
        x = _input(model, size, CLIP_LENGTH)
        timers = {}
        for fmt, (result, _, static) in exported.items():
            timers[(fmt, "static")] = _timer(
                fmt, model, static.get(key, result.path), x, config.threads, precision
            )
            if static:
                timers[(fmt, "dynamic")] = _timer(fmt, model, result.path, x, config.threads)
        for seconds_key, seconds in _interleaved_medians(
            timers, config.warmup, config.runs
        ).items():
            latency[seconds_key][key] = 1000 * seconds / frames
        del timers

    for fmt, (result, report, static) in exported.items():
        backend, quantization = _label(fmt)
        entry["artifacts"].append(
            {
                "format": backend,
                "quantization": quantization,
                "label": fmt,
                "path": str(result.path),
                "size_bytes": result.size_bytes,
                "latency_ms": latency[(fmt, "static")],
                **({"latency_ms_dynamic_shape": latency[(fmt, "dynamic")]} if static else {}),
                "psnr_vs_keras": report.min_psnr_vs_keras,
                "psnr_vs_sharp": report.psnr_vs_sharp,
                "keras_psnr_vs_sharp": report.keras_psnr_vs_sharp,
                "tolerance_db": report.tolerance_db,
                "agrees": report.passed,
            }
        )
    entry["targets"] = _targets(entry["artifacts"])
    entry["keras_precision"] = precision
    entry["deployment"] = deployment_rows(entry["artifacts"])
    if config.precision != "float32":
        entry["precision"] = precision_comparison(model, images, config)
    return entry


# ------------------------------------------------------------ issue #11's ratio rows


def tflite_operator_count(path) -> dict:
    """Operators in a ``.tflite`` file (:func:`count_tflite_ops`):
    ``{"total": n, "by_type": {...}}``, most frequent first."""
    counts = count_tflite_ops(pathlib.Path(path).read_bytes())
    ordered = dict(sorted(counts.items(), key=lambda kv: -kv[1]))
    return {"total": sum(counts.values()), "by_type": ordered}


def deployment_rows(artifacts: list[dict]) -> dict:
    """Ratios of one model's artifacts (each a ratio of latencies timed in one round):

    * ``int8_speedup``: float32 TFLite ms / int8 TFLite ms, fixed-size files, per size
      (> 1: int8 faster).
    * ``any_size_slowdown``: ``{"tflite": {size: r}, "onnx": {size: r}}``, the any-size
      file resized to the size over the file fixed at that size (1 = as fast).
    * ``tflite_operators``: operator count of the float32 any-size TFLite file.
    """
    by_label = {a["label"]: a for a in artifacts}
    rows: dict = {}
    if "tflite" in by_label and "tflite_int8" in by_label:
        f32, int8 = by_label["tflite"]["latency_ms"], by_label["tflite_int8"]["latency_ms"]
        rows["int8_speedup"] = {size: f32[size] / int8[size] for size in f32}
    slowdown = {}
    for label in ("tflite", "onnx"):
        artifact = by_label.get(label)
        if artifact and "latency_ms_dynamic_shape" in artifact:
            dynamic = artifact["latency_ms_dynamic_shape"]
            slowdown[label] = {s: dynamic[s] / ms for s, ms in artifact["latency_ms"].items()}
    if slowdown:
        rows["any_size_slowdown"] = slowdown
    if "tflite" in by_label:
        rows["tflite_operators"] = tflite_operator_count(by_label["tflite"]["path"])
    return rows


def precision_comparison(model, images, config: BenchConfig) -> dict:
    """Keras ``bfloat16`` against ``float32``: latency per size (interleaved, graph mode)
    and the PSNR of the bf16 output against the float32 output on the verification
    images (clipped to [0, 1], the first verification image centre-cropped to the first
    benchmark size)."""
    from export.signature import as_model_input
    from tfdeblur.infer.runners import KerasRunner
    from tfdeblur.metrics import psnr

    runners = {p: KerasRunner(model, eager_first_call=False, precision=p) for p in PRECISION_PAIR}
    latency: dict = {p: {} for p in PRECISION_PAIR}
    for size in config.sizes:
        x = _input(model, size, 3)
        timers = {p: (lambda r=r, x=x: r.run_batch(x)) for p, r in runners.items()}
        for p, seconds in _interleaved_medians(timers, config.warmup, config.runs).items():
            latency[p][f"{size[0]}x{size[1]}"] = 1000 * seconds
    scores = []
    for _, blurry, _ in images:
        blurry = np.asarray(blurry, np.float32)
        h, w = min(config.sizes[0][0], blurry.shape[0]), min(config.sizes[0][1], blurry.shape[1])
        top, left = (blurry.shape[0] - h) // 2, (blurry.shape[1] - w) // 2
        crop = blurry[top : top + h, left : left + w]
        shape = runners["float32"].model.inputs[0].shape
        x = as_model_input(shape, [crop] if len(shape) == 5 else crop)
        out = {p: np.clip(r.run_batch(x), 0, 1) for p, r in runners.items()}
        f32, bf16 = (out[p].reshape((-1, *out[p].shape[-3:])) for p in PRECISION_PAIR)
        scores.append(float(np.min(psnr(bf16, f32))))
    return {
        "latency_ms": latency,
        "bf16_speedup": {s: latency["float32"][s] / ms for s, ms in latency["bfloat16"].items()},
        "psnr_bf16_vs_float32": min(scores) if scores else None,
    }


def network_ratios(size=(256, 256), warmup: int = 2, runs: int = 5) -> dict:
    """LCNet's paper preset against itself without LCBlocks (``num_lc_blocks=0``) and
    against DeepDeblur's paper preset: Keras graph mode, float32, batch 1, ``size``,
    the three timed in turn. Ratios > 1: the other network is faster than LCNet.
    """
    from tfdeblur.infer.runners import KerasRunner
    from tfdeblur.models import registry

    models = {
        "lcnet": registry.build_model("lcnet", "paper"),
        "lcnet_no_lc": registry.build_model("lcnet", "paper", num_lc_blocks=0),
        "deepdeblur": registry.build_model("deepdeblur", "paper"),
    }
    x = np.random.default_rng(0).random((1, *size, 3), dtype=np.float32)
    runners = {k: KerasRunner(m, eager_first_call=False) for k, m in models.items()}
    timers = {k: (lambda r=r: r.run_batch(x)) for k, r in runners.items()}
    ms = {k: 1000 * v for k, v in _interleaved_medians(timers, warmup, runs).items()}
    return {
        "size": f"{size[0]}x{size[1]}",
        "latency_ms": ms,
        "lcnet_over_no_lc": ms["lcnet"] / ms["lcnet_no_lc"],
        "deepdeblur_over_lcnet": ms["deepdeblur"] / ms["lcnet"],
    }


def _targets(artifacts: list[dict]) -> dict:
    """The issue's targets, checked where the needed formats were benchmarked."""
    import export

    by_label = {a["label"]: a for a in artifacts}
    targets = {}
    for label in ("tflite", "tflite_float16", "onnx"):
        if label in by_label:
            targets[f"{label}_within_45db"] = bool(by_label[label]["psnr_vs_keras"] >= 45.0)
    if "tflite_int8" in by_label and "tflite" in by_label:
        int8, float32 = by_label["tflite_int8"], by_label["tflite"]
        targets["int8_size_ratio"] = float32["size_bytes"] / int8["size_bytes"]
        weights = [
            sum(export.tflite_model_info(a["path"])["weight_bytes"].values())
            for a in (float32, int8)
        ]
        targets["int8_weight_bytes_ratio"] = weights[0] / weights[1]
        if int8["psnr_vs_sharp"] is not None and float32["psnr_vs_sharp"] is not None:
            gap = float32["psnr_vs_sharp"] - int8["psnr_vs_sharp"]
            targets["int8_sharp_gap_db"] = gap
            targets["int8_within_0.5db_of_float"] = bool(gap <= 0.5)
    if "tflite" in by_label and "keras" in by_label:
        targets["tflite_not_slower_than_keras"] = {
            size: bool(by_label["tflite"]["latency_ms"][size] <= ms)
            for size, ms in by_label["keras"]["latency_ms"].items()
        }
    return targets


def run_bench(config: BenchConfig, artifacts_dir=None) -> dict:
    """Run the benchmark; artifacts go to ``artifacts_dir`` (a temporary folder if None)."""
    from tfdeblur.infer.precision import check_precision

    check_precision(config.precision)
    for fmt in config.formats:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}.")
    with tempfile.TemporaryDirectory(prefix="tfdeblur_bench_") as tmp:
        directory = pathlib.Path(artifacts_dir) if artifacts_dir else pathlib.Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        results = {
            "machine": machine_info(),
            "settings": {
                **dataclasses.asdict(config),
                "latency": "median ms per frame, batch 1, after warm-up, synchronised",
                "gflops": "per frame, counted per operator of the static float32 TFLite graph",
            },
            "models": [bench_model(spec, config, directory) for spec in config.models],
        }
        if config.lc_train_step:
            results["lcblock"] = lcblock_cost(
                config.preset or "paper",
                config.lc_batch_size,
                config.lc_patch_size,
                warmup=min(2, config.warmup) or 1,
                steps=config.lc_steps,
            )
        if config.network_ratios:
            results["network_ratios"] = network_ratios(
                tuple(config.ratio_size), max(1, config.warmup), config.runs
            )
    return _json_safe(results)


def _json_safe(value):
    """Plain JSON types; infinite / NaN floats (identical outputs, garbage) as strings."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if np.isfinite(value) else str(value)
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    return value


def format_table(results: dict) -> str:
    """A Markdown table of :func:`run_bench` results."""
    sizes = [f"{h}x{w}" for h, w in results["settings"]["sizes"]]
    header = (
        "| model | format | params | size (MB) | GFLOPs/frame | "
        + " | ".join(f"{s} (ms)" for s in sizes)
        + " | PSNR vs Keras (dB) | PSNR vs sharp (dB) |"
    )
    lines = [header, "|" + "---|" * (7 + len(sizes))]
    for entry in results["models"]:
        name = entry["model"] + (f" ({entry['preset']})" if entry.get("preset") else "")
        for a in entry["artifacts"]:
            vs_keras = a["psnr_vs_keras"]
            vs_keras = vs_keras if isinstance(vs_keras, str) else f"{vs_keras:.1f}"
            sharp = "-" if a["psnr_vs_sharp"] is None else f"{float(a['psnr_vs_sharp']):.2f}"
            cells = [
                name,
                a["label"],
                f"{entry['parameters']:,}",
                f"{a['size_bytes'] / 1e6:.2f}",
                f"{entry['flops']['gflops']:.3g}",
                *(f"{a['latency_ms'][s]:.1f}" for s in sizes),
                vs_keras,
                sharp,
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines.extend(_ratio_lines(results))
    lc = results.get("lcblock")
    if lc:
        lines.append("")
        lines.append(
            f"LCBlocks, LCNet ({lc['preset']}) vs num_lc_blocks=0, {lc['patch_size']}x"
            f"{lc['patch_size']}: Keras graph mode {lc['keras_ms']['lcnet']:.0f} vs "
            f"{lc['keras_ms']['no_lc']:.0f} ms (x{lc['keras_ratio']:.2f}); train step (batch "
            f"{lc['batch_size']}) {lc['train_step_ms']['lcnet']:.0f} vs "
            f"{lc['train_step_ms']['no_lc']:.0f} ms (x{lc['train_ratio']:.2f}); float32 TFLite "
            f"operators {lc['tflite_ops']['lcnet']} vs {lc['tflite_ops']['no_lc']} "
            f"({lc['tflite_ops_per_lcblock']:.0f} per LCBlock)."
        )
    return "\n".join(lines)


def _ratio_lines(results: dict) -> list[str]:
    """The ratio rows of issue #11 (:func:`deployment_rows`, :func:`precision_comparison`,
    :func:`network_ratios`) as text lines under the table."""

    def sizes(values: dict, fmt: str = "{:.2f}x") -> str:
        return ", ".join(f"{s} {fmt.format(v)}" for s, v in values.items())

    lines = []
    for entry in results["models"]:
        rows = entry.get("deployment", {})
        name = entry["model"]
        if "int8_speedup" in rows:
            lines.append(f"{name}: int8 vs float32 TFLite speed-up: {sizes(rows['int8_speedup'])}")
        for label, values in rows.get("any_size_slowdown", {}).items():
            lines.append(f"{name}: any-size {label} file vs fixed-size: {sizes(values)}")
        if "tflite_operators" in rows:
            ops = rows["tflite_operators"]
            top = ", ".join(f"{k} {v}" for k, v in list(ops["by_type"].items())[:4])
            lines.append(f"{name}: TFLite operators: {ops['total']} ({top})")
        precision = entry.get("precision")
        if precision:
            lines.append(
                f"{name}: Keras bfloat16 vs float32 speed-up: {sizes(precision['bf16_speedup'])};"
                f" PSNR bf16 vs float32 output {precision['psnr_bf16_vs_float32']:.1f} dB"
            )
    ratios = results.get("network_ratios")
    if ratios:
        ms = ratios["latency_ms"]
        lines.append(
            f"Keras float32 {ratios['size']}: LCNet {ms['lcnet']:.1f} ms, without LCBlocks "
            f"{ms['lcnet_no_lc']:.1f} ms (LCNet / no-LC {ratios['lcnet_over_no_lc']:.2f}x), "
            f"DeepDeblur {ms['deepdeblur']:.1f} ms (DeepDeblur / LCNet "
            f"{ratios['deepdeblur_over_lcnet']:.1f}x)"
        )
    return [""] + lines if lines else []
