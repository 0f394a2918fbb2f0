"""The one registry of networks: name -> builder, model presets and training presets.

Every network module registers itself with :func:`register_model`; everything else
(``train.py``, the CLI, the exporters, the tests) builds models through
:func:`build_model` and reads training presets through :func:`get_train_preset`, so a
new network becomes trainable, exportable and testable by registering it once.

Presets are plain JSON-able dicts. Model presets hold the builder's keyword arguments;
training presets hold the paper's optimisation recipe (batch, patch, learning-rate
schedule, loss, length) and are kept apart from the model configuration.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one network.

    Attributes:
        name: registry name, e.g. ``"lcnet"``.
        builder: callable ``(**config) -> keras.Model``.
        presets: model presets, ``{preset_name: builder kwargs}``; ``"paper"`` is the
            default preset and ``"tiny"`` the test preset.
        train_presets: training presets, ``{preset_name: training config dict}``;
            ``"paper"`` is the default.
        default_preset: the preset :func:`build_model` uses when none is named.
        description: one line for listings.
    """

    name: str
    builder: Callable[..., Any]
    presets: Mapping[str, Mapping[str, Any]]
    train_presets: Mapping[str, Mapping[str, Any]]
    default_preset: str = "paper"
    description: str = ""


_REGISTRY: dict[str, ModelSpec] = {}

#: The modules that register the built-in networks. The registry imports them on first use
#: (:func:`_ensure_models_imported`), by name: they import this module to register, so an
#: import statement here would be a cycle, and importing them eagerly would load Keras for
#: ``train.py --help``. A new network module goes here and in :data:`CATALOG`.
NETWORK_MODULES = (
    "tfdeblur.models.deepdeblur",
    "tfdeblur.models.lcnet",
    "tfdeblur.models.saphn",
    "tfdeblur.models.sarn",
)
_CATALOG_CHECKED = False  # set once CATALOG has been compared with the registry

#: What the registry holds, by name only: network -> (model presets, training presets).
#: ``train.py --help`` lists it without importing the networks (and with them Keras and
#: TensorFlow); :func:`list_models` and :func:`get_spec` check on first use that it
#: equals what ``tfdeblur.models`` registers, so an out-of-date entry fails every run.
CATALOG: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "deepdeblur": (("paper", "k1", "k2", "tiny"), ("paper", "official", "demo")),
    "lcnet": (("paper", "tiny"), ("paper", "demo")),
    "saphn": (("paper", "tiny"), ("paper", "demo")),
    "sarn": (("paper", "drm0_sa", "drm3", "drm6", "literal", "tiny"), ("paper", "tiny", "demo")),
    "sarn_video": (("paper", "literal", "tiny"), ("paper", "tiny", "demo")),
}


def register_model(
    name: str,
    *,
    presets: Mapping[str, Mapping[str, Any]],
    train_presets: Mapping[str, Mapping[str, Any]] | None = None,
    default_preset: str = "paper",
    description: str = "",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Class/function decorator registering a model builder under ``name``.

    Raises:
        ValueError: if ``name`` is already registered or ``default_preset`` is not one
            of ``presets``.
    """

    def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"A model named {name!r} is already registered.")
        if default_preset not in presets:
            raise ValueError(
                f"Model {name!r}: default preset {default_preset!r} is not one of "
                f"{sorted(presets)}."
            )
        _REGISTRY[name] = ModelSpec(
            name=name,
            builder=builder,
            presets=dict(presets),
            train_presets=dict(train_presets or {}),
            default_preset=default_preset,
            description=description,
        )
        return builder

    return decorator


def _ensure_models_imported() -> None:
    # Importing a network module registers it (each module decorates its builder).
    global _CATALOG_CHECKED
    if _CATALOG_CHECKED:
        return
    for module in NETWORK_MODULES:
        importlib.import_module(module)

    built_in = builtin_catalog()
    if built_in != CATALOG:
        raise RuntimeError(
            f"tfdeblur.models.registry.CATALOG is out of date; tfdeblur.models registers {built_in}."
        )
    _CATALOG_CHECKED = True


def builtin_catalog() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """``{name: (model presets, training presets)}`` of the networks registered by
    ``tfdeblur.models`` (the form of :data:`CATALOG`; networks registered elsewhere, e.g.
    by a user's own module, are left out)."""
    return {
        name: (tuple(spec.presets), tuple(spec.train_presets))
        for name, spec in sorted(_REGISTRY.items())
        if getattr(spec.builder, "__module__", "").startswith("tfdeblur.models.")
    }


def list_models() -> list[str]:
    """Names of all registered networks, sorted."""
    _ensure_models_imported()
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``.

    Raises:
        KeyError: naming the unknown model and listing the registered ones.
    """
    _ensure_models_imported()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"Unknown model {name!r}. Registered models: {', '.join(sorted(_REGISTRY))}."
        ) from None


def get_model_config(name: str, preset: str | None = None, **overrides: Any) -> dict[str, Any]:
    """The builder kwargs of ``name``'s ``preset`` (default preset if None) with overrides.

    Raises:
        KeyError: unknown model or preset.
        TypeError: an override that is not a key of the preset.
    """
    spec = get_spec(name)
    preset = preset or spec.default_preset
    if preset not in spec.presets:
        raise KeyError(
            f"Model {name!r} has no preset {preset!r}. Presets: {', '.join(sorted(spec.presets))}."
        )
    config = copy.deepcopy(dict(spec.presets[preset]))
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise TypeError(
            f"Model {name!r}: unknown config key(s) {unknown}. Known keys: {sorted(config)}."
        )
    config.update(overrides)
    return config


def build_model(name: str, preset: str | None = None, **overrides: Any):
    """Build a registered network by name.

    Args:
        name: registry name (see :func:`list_models`).
        preset: model preset; the network's default (the paper configuration) if None.
            Every network has ``"tiny"`` for tests.
        **overrides: builder kwargs replacing the preset's values.

    Returns:
        A ``keras.Model``.

    Example:
        >>> model = tfdeblur.build_model("lcnet", preset="tiny")
    """
    config = get_model_config(name, preset, **overrides)
    return get_spec(name).builder(**config)


def get_train_preset(name: str, preset: str = "paper") -> dict[str, Any]:
    """A copy of the training preset ``preset`` of model ``name``.

    Raises:
        KeyError: unknown model or training preset.
    """
    spec = get_spec(name)
    if preset not in spec.train_presets:
        raise KeyError(
            f"Model {name!r} has no training preset {preset!r}. "
            f"Training presets: {', '.join(sorted(spec.train_presets)) or 'none'}."
        )
    return copy.deepcopy(dict(spec.train_presets[preset]))


def config_dicts(node):
    """Every dict of a serialized Keras config tree (``model.get_config()``, nested lists and
    dicts to any depth), each before the dicts inside it: for the passes that rewrite a
    saved network's layer configs in place (the exporters' ``EXPORT_OVERRIDES``, the
    bfloat16 dtype policies). Changing a visited dict's values is safe; adding keys is not.
    """
    if isinstance(node, list):
        for item in node:
            yield from config_dicts(item)
    elif isinstance(node, dict):
        yield node
        for value in node.values():
            yield from config_dicts(value)
