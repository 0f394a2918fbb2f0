"""Exporters: SavedModel, ``.keras``, TFLite (builtin ops only, quantized) and ONNX.

One module per format, sharing one input signature (:mod:`export.signature`), one
preparation step that switches layers to their export formulation
(:mod:`export.prepare`) and one verification step (:mod:`export.verify`) that runs
every artifact in its deployment runtime on real images, before it replaces anything at
the destination, and raises :class:`ExportVerificationError` when it disagrees with the
Keras model. The artifacts are run by :mod:`tfdeblur.infer.runners`'s runners, the same ones
``tfdeblur deblur`` and ``tfdeblur bench`` use (:func:`load_artifact` is an alias)::

    import tfdeblur, export

    model = keras.models.load_model("lcnet.keras", safe_mode=True)
    export.tflite(model, "lcnet_int8.tflite", quantization="int8", representative_data="demo")
    export.onnx(model, "lcnet.onnx")
"""

from export.keras_file import keras_file
from export.onnx import onnx
from export.prepare import EXPORT_OVERRIDES_ATTR, LayerSwitch, prepare_for_export
from export.result import ExportResult, artifact_size
from export.saved_model import saved_model
from export.signature import input_signature, parse_input_size, serving_function
from export.tflite import QUANTIZATIONS, representative_dataset, tflite, tflite_model_info
from export.verify import (
    TOLERANCES_DB,
    ExportVerificationError,
    VerificationReport,
    load_artifact,
    load_image_pairs,
    verify,
)
from tfdeblur.backend import require_tensorflow
from tfdeblur.infer.runners import FORMATS

require_tensorflow("The exporters (export)")

__all__ = [
    "EXPORT_OVERRIDES_ATTR",
    "FORMATS",
    "QUANTIZATIONS",
    "TOLERANCES_DB",
    "ExportResult",
    "ExportVerificationError",
    "LayerSwitch",
    "VerificationReport",
    "artifact_size",
    "input_signature",
    "keras_file",
    "load_artifact",
    "load_image_pairs",
    "onnx",
    "parse_input_size",
    "prepare_for_export",
    "representative_dataset",
    "saved_model",
    "serving_function",
    "tflite",
    "tflite_model_info",
    "verify",
]
