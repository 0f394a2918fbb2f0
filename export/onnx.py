"""ONNX export through tf2onnx, dynamic batch, H and W.

The serving function (input ``(None, H, W, 3)`` named after the model's input, output
``"deblurred"``) is converted with ``tf2onnx.convert.from_function``; tf2onnx is
imported only here (``pip install 'tfdeblur[export]'``). Layers are switched to their
export formulation first (:mod:`export.prepare`): ``ExtractImagePatches`` has no ONNX
lowering with dynamic H and W.

Compatibility (tf2onnx 1.17 with numpy 2.x, protobuf 7, onnx 1.2x): the conversion
path used here needs no numpy shim. tf2onnx 1.17 still calls ``np.product`` (removed in
numpy 2) but only when writing tensors as external data (models over 2 GB), and its
``rewrite_constant_fold`` catches its own numpy errors. Two tf2onnx 1.17 bugs matter
here: ``FloorMod`` on integers is lowered with a truncating ``Div``, wrong for negative
operands (avoided in :class:`keras_layers.PadToMultiple`; the verification after every
export catches such errors as a different output size or values), and its transpose
optimizer crashes on ``Conv -> Add(scalar constant)`` (patched, see
:func:`_patch_transpose_optimizer`). Optimizer passes run without tf2onnx's defensive
graph copies, which halves the conversion time (see :func:`_convert`).

Run it::

    import onnxruntime as ort
    session = ort.InferenceSession("lcnet.onnx", providers=["CPUExecutionProvider"])
    out = session.run(None, {"blurry": images})[0]   # float32 (N, H, W, 3) in [0, 1]
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

from export.prepare import prepare_for_export
from export.result import ExportResult, check_output_path, finish_export
from export.signature import input_signature, parse_input_size, serving_function

DEFAULT_OPSET = 17


def _import_tf2onnx():
    try:
        import tf2onnx
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ImportError(
            "ONNX export needs tf2onnx and onnxruntime: pip install 'tfdeblur[export]'."
        ) from err
    return tf2onnx


@contextlib.contextmanager
def _environ(name: str, value: str | None):
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _patch_transpose_optimizer() -> None:
    """Make tf2onnx's transpose optimizer skip ``Conv -> Add(scalar constant)``.

    tf2onnx 1.17 tries to fold a constant added after a bias-free Conv into the Conv's
    bias and takes ``max(shape)`` of the constant, which raises on a 0-d scalar. The
    patched handler sends that case where every other non-foldable Add goes
    (``_handle_node_having_branches``); everything else is unchanged. Idempotent.
    """
    try:
        from tf2onnx.optimizer.transpose_optimizer import TransposeOptimizer
    except ImportError:  # pragma: no cover - other tf2onnx layouts: rely on the retry
        return
    original = TransposeOptimizer.__dict__.get("_add_handler")
    if original is None or getattr(original, "_tfdeblur_patched", False):
        return

    def _add_handler(self, trans, node):
        constant = node.inputs[1]
        if constant.is_const() and np.ndim(constant.get_tensor_value(as_list=False)) == 0:
            return self._handle_node_having_branches(trans, node)
        return original(self, trans, node)

    _add_handler._tfdeblur_patched = True
    TransposeOptimizer._add_handler = _add_handler


def _convert(tf2onnx, function, spec, opset: int, output_path: str) -> None:
    """``tf2onnx.convert.from_function`` without its per-optimizer graph deep copies.

    By default tf2onnx deep-copies the whole graph before each optimizer pass so that a
    failing pass can be skipped; that copying is half of the conversion time. The first
    try runs the passes without copies (a failing pass raises); only if one fails does
    the conversion run again in tf2onnx's default, forgiving mode (tf2onnx 1.17 catches
    errors only when ``TF2ONNX_CATCH_ERRORS`` is unset: any value turns catching off).
    A skipped pass leaves a correct but less optimized graph, e.g. its transpose
    optimizer fails on an ``Add`` of a scalar constant after an NHWC->NCHW transpose.
    """
    _patch_transpose_optimizer()
    kwargs = dict(input_signature=[spec], opset=opset, output_path=output_path)
    try:
        with _environ("TF2ONNX_CATCH_ERRORS", "FALSE"):
            tf2onnx.convert.from_function(function, **kwargs)
    except Exception:
        with _environ("TF2ONNX_CATCH_ERRORS", None):
            tf2onnx.convert.from_function(function, **kwargs)


def onnx(
    model,
    path,
    opset: int = DEFAULT_OPSET,
    *,
    input_size=None,
    verbose: bool = True,
    **verification,
) -> ExportResult:
    """Export ``model`` to ONNX and verify it with onnxruntime.

    Args:
        model: a Keras model (one float32 image or clip input).
        path: output file ending with ``.onnx``; an existing file is replaced once the
            new one is verified.
        opset: ONNX opset. Default 17.
        input_size: ``(H, W)`` to fix the spatial size; None (default) keeps batch, H
            and W dynamic.
        verbose: print switched layers, the conversion, what was written and the
            verification summary.
        **verification: ``verify``, ``images`` and ``crop`` (``input_size`` if None),
            as :func:`export.result.finish_export` takes them: check the file with
            onnxruntime against Keras on the verification images (default True),
            centre-cropped.

    Returns:
        :class:`export.ExportResult`.
    """
    if not isinstance(opset, int) or opset < 13:
        raise ValueError(f"opset must be an int >= 13, got {opset!r}.")
    path = check_output_path(path, "onnx")
    input_size = parse_input_size(input_size)
    tf2onnx = _import_tf2onnx()
    prepared, switches = prepare_for_export(model, verbose=verbose)
    spec = input_signature(prepared, batch_size=None, input_size=input_size)

    def write(tmp):
        if verbose:  # tf2onnx prints nothing for a while
            print(f"export: converting {model.name!r} to ONNX (tf2onnx, opset {opset}) ...")
        _convert(tf2onnx, serving_function(prepared, spec), spec, opset, str(tmp))

    return finish_export(
        model, path, write, "onnx", "none", switches,
        input_size=input_size, verbose=verbose, **verification,
    )  # fmt: skip
