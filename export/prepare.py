"""Switch layers to their export-friendly formulations before converting a model.

Some layers have two formulations of the same numbers: one fast to train, one fast in the
deployed runtimes (LCBlock's ``method="depthwise"``, a one-hot depthwise gather that
TensorFlow trains fastest, versus ``method="windows"``, shifted slices that LiteRT/XNNPACK
runs fastest in float32 and int8). A layer
class declares its export formulation with a class attribute mapping config keys to
the values the exporters need::

    class LCBlock(keras.layers.Layer):
        EXPORT_OVERRIDES = {"method": "windows"}

:func:`prepare_for_export` walks the model's serialized config (nested models and
layers that serialize their sublayers included), rewrites every such key, rebuilds the
model with ``from_config`` and copies the weights. An override must therefore change
how a layer computes, never which weights it has; a mismatch in the weights raises.
A layer that builds its sublayers from its own arguments (not from a serialized
sublayer config) declares the override on its own argument instead, e.g.
``EXPORT_OVERRIDES = {"lc_method": "windows"}``.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import keras

from tfdeblur.models.registry import config_dicts

EXPORT_OVERRIDES_ATTR = "EXPORT_OVERRIDES"


@dataclasses.dataclass(frozen=True)
class LayerSwitch:
    """One config value changed for export."""

    layer: str
    class_name: str
    key: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.layer} ({self.class_name}): {self.key} {self.old!r} -> {self.new!r}"


def _resolve_class(entry: dict):
    for key in ("registered_name", "class_name"):
        name = entry.get(key)
        if isinstance(name, str):
            obj = keras.saving.get_registered_object(name)
            if obj is not None:
                return obj
    return None


def _rewrite(node, switches: list[LayerSwitch]) -> None:
    """Apply EXPORT_OVERRIDES in place to every serialized layer under ``node``."""
    for item in config_dicts(node):
        config = item.get("config")
        if "class_name" not in item or not isinstance(config, dict):
            continue
        overrides = getattr(_resolve_class(item), EXPORT_OVERRIDES_ATTR, None) or {}
        for key, value in overrides.items():
            if key in config and config[key] != value:
                name = config.get("name", item.get("class_name"))
                switches.append(LayerSwitch(name, item["class_name"], key, config[key], value))
                config[key] = value


def prepare_for_export(model, *, verbose: bool = False):
    """The model with every layer in its export formulation, and what was switched.

    Args:
        model: a built Keras model.
        verbose: print one line per switched layer.

    Returns:
        ``(model, switches)``: the original model when nothing needs switching (then
        ``switches`` is empty), else a rebuilt copy with the same weights.

    Raises:
        ValueError: the rebuilt model's weights do not match the original's (an override
            that changes the weights).
    """
    config = copy.deepcopy(keras.saving.serialize_keras_object(model))
    switches: list[LayerSwitch] = []
    _rewrite(config, switches)
    if not switches:
        return model, switches
    rebuilt = keras.saving.deserialize_keras_object(config)
    if not rebuilt.built or len(rebuilt.weights) != len(model.weights):
        raise ValueError(
            f"model {model.name!r}: rebuilding with export overrides gave "
            f"{len(rebuilt.weights)} weights instead of {len(model.weights)}; an "
            f"{EXPORT_OVERRIDES_ATTR} entry must not change a layer's weights."
        )
    for new, old in zip(rebuilt.weights, model.weights, strict=True):
        if tuple(new.shape) != tuple(old.shape):
            raise ValueError(
                f"model {model.name!r}: export overrides changed weight {old.path!r} from "
                f"{tuple(old.shape)} to {tuple(new.shape)}."
            )
        new.assign(old)
    if verbose:
        print(
            f"export: switched {len(switches)} layer setting(s) of {model.name!r} to the "
            "export formulation (same weights, same numbers):"
        )
        for switch in switches:
            print(f"  {switch}")
    return rebuilt, switches
