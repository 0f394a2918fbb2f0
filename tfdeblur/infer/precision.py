"""Inference precision of Keras models: float32, or bfloat16 on CPUs with bf16 units.

``precision`` is one of :data:`PRECISIONS`, the value of ``--precision`` on ``tfdeblur
deblur``, ``deblur-video``, ``eval`` and ``bench`` (default ``float32``) and of the
``precision=`` argument of :func:`tfdeblur.deblur`, :func:`tfdeblur.infer.video.deblur_video`,
:func:`tfdeblur.evaluate.protocol.evaluate` and :func:`tfdeblur.infer.runners.load_runner` (default
None: a given :class:`tfdeblur.infer.runners.Runner` as it is, a loaded model in float32):

* ``"float32"``: the model as it is.
* ``"bfloat16"``: a Keras model is rebuilt from its config under Keras' ``mixed_bfloat16``
  dtype policy (bfloat16 compute, float32 variables) and given the same weights
  (:func:`as_bfloat16`); the outputs are returned in float32. Layers that need float32
  for accuracy keep it inside (SAPHN's spatial softmax over HW). On a CPU without bf16
  units this runs, slowly: TensorFlow emulates bfloat16 there.
* ``"auto"``: ``bfloat16`` where it is known to be faster, else ``float32``
  (:func:`resolve_precision`). It is decided without timing anything: the CPU must have
  bf16 units (Linux ``/proc/cpuinfo`` flags ``avx512_bf16`` or ``amx_bf16``; on other
  systems ``auto`` is float32, conservatively) and the network must be one of
  :data:`BF16_FASTER`, the networks measured faster in bfloat16 on such a CPU. A quick
  timing check at start-up would cost a trace of each variant (seconds for the big
  networks), more than it would save on one photo.

Other formats run in the precision they were exported in: ``auto`` and ``float32``
leave them as they are, ``bfloat16`` is refused with a ValueError naming the file
(:func:`check_format`); a half-precision TFLite file is exported with ``--quantization
float16``.
"""

from __future__ import annotations

import copy
import pathlib

PRECISIONS = ("auto", "float32", "bfloat16")

#: Networks (registry names, as stored in a ``.keras`` file's model name) that run
#: faster under ``mixed_bfloat16`` than in float32 on a CPU with AVX512-BF16, measured
#: Keras graph mode at 256x256 on a 2-core AMD EPYC with AVX512-BF16 (see the README's
#: precision section): DeepDeblur 2.4x, SARN 2.1x (SARN video runs SARN's network and a
#: convolutional LSTM per frame). Not among them: LCNet (0.75x: its local correlation
#: is element-wise multiplies and sums, which bfloat16 does not speed up on CPUs, only
#: matrix products and convolutions use the bf16 units, and the casts around them cost
#: more than its convolutions gain) and SAPHN (1.05x, within the noise: its
#: pixel-dependent filters and attention softmaxes are element-wise or kept in float32).
BF16_FASTER = frozenset({"deepdeblur", "sarn", "sarn_video"})

_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def check_precision(precision: str, argument: str = "precision") -> str:
    """``precision`` checked to be one of :data:`PRECISIONS` (ValueError naming it)."""
    if precision not in PRECISIONS:
        raise ValueError(f"{argument} must be one of {PRECISIONS}, got {precision!r}.")
    return precision


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has bf16 units (``avx512_bf16`` or ``amx_bf16`` in its flags).

    Args:
        cpuinfo: the text of ``/proc/cpuinfo``; default read from the file. Systems
            without it (macOS, Windows) count as without bf16 units.
    """
    if cpuinfo is None:
        try:
            cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and any(flag in value.split() for flag in _CPU_FLAGS):
            return True
    return False


def resolve_precision(precision: str, network: str | None, *, has_bf16: bool | None = None) -> str:
    """``"float32"`` or ``"bfloat16"`` for ``precision`` and a network.

    Args:
        precision: one of :data:`PRECISIONS`.
        network: the network's registry name (a Keras model's ``name``), None when
            unknown.
        has_bf16: whether the CPU has bf16 units; default :func:`cpu_has_bf16`.

    Returns:
        ``precision`` itself unless it is ``"auto"``; for ``"auto"``: ``"bfloat16"`` if
        the CPU has bf16 units, no GPU is used and ``network`` is in
        :data:`BF16_FASTER`, else ``"float32"``.
    """
    check_precision(precision)
    if precision != "auto":
        return precision
    if network not in BF16_FASTER:
        return "float32"
    if has_bf16 is None:
        has_bf16 = cpu_has_bf16()
    if not has_bf16:
        return "float32"
    import tensorflow as tf

    return "float32" if tf.config.list_logical_devices("GPU") else "bfloat16"


def check_format(precision: str, kind: str, label: str) -> None:
    """Refuse ``bfloat16`` for a non-Keras model (``kind`` its format, ``label`` its file)."""
    check_precision(precision)
    if precision == "bfloat16" and kind != "keras":
        raise ValueError(
            f"precision 'bfloat16' applies to Keras models (.keras files or registry names); "
            f"{label} is a {kind} model and runs in the precision it was exported in. Use "
            "--precision float32 (or auto), run the .keras file, or export a half-precision "
            "TFLite file with --quantization float16."
        )


def _set_policy(node, policy: str) -> None:
    """Every serialized layer dtype policy under ``node`` set to ``policy``, in place."""
    from tfdeblur.models.registry import config_dicts

    for item in config_dicts(node):
        dtype = item.get("dtype")
        if isinstance(dtype, dict) and "Policy" in str(dtype.get("class_name", "")):
            item["dtype"] = {**dtype, "config": {**dtype.get("config", {}), "name": policy}}


def as_bfloat16(model):
    """A copy of Keras ``model`` under ``mixed_bfloat16``, with the same (float32) weights.

    The model is rebuilt from its serialized config with every layer's dtype policy set
    to ``mixed_bfloat16`` (nested models and the step networks of frame recurrences
    included; input layers keep float32 inputs) and its weights are copied. Its outputs
    are bfloat16: :class:`tfdeblur.infer.runners.KerasRunner` returns them as float32.

    Raises:
        ValueError: the rebuilt model's weights do not match the original's.
    """
    import keras

    config = copy.deepcopy(keras.saving.serialize_keras_object(model))
    _set_policy(config, "mixed_bfloat16")
    rebuilt = keras.saving.deserialize_keras_object(config)
    if len(rebuilt.weights) != len(model.weights):
        raise ValueError(
            f"model {model.name!r}: rebuilt under mixed_bfloat16 with {len(rebuilt.weights)} "
            f"weights instead of {len(model.weights)}."
        )
    for new, old in zip(rebuilt.weights, model.weights, strict=True):
        new.assign(old)
    return rebuilt
