"""Importers of official pretrained weights into tfdeblur's Keras models.

DeepDeblur: the authors' PyTorch code (``SeungjunNah/DeepDeblur-PyTorch``) saves
``model-<epoch>.pt`` as ``{"G": generator_state_dict, "D": ...}`` (``src/model/__init__.py``,
``Model.state_dict``), where the generator is ``src/model/MSResNet.py``. Its state_dict
keys, for scale ``s`` (0 = finest) and ResBlock ``i``:

* ``body_models.{s}.body.0.{weight,bias}``: first convolution (3 or 6 -> n_feats).
* ``body_models.{s}.body.{1+i}.body.{0,2}.{weight,bias}``: the two convolutions of
  ResBlock ``i`` (index 1 of its ``body`` is the ReLU).
* ``body_models.{s}.body.{n_resblocks+1}.{weight,bias}``: last convolution (-> 3).
* ``conv_end_models.{s}.uppath.0.{weight,bias}`` for ``s >= 1``: the 5x5 up-convolution
  (3 -> 12) before ``nn.PixelShuffle(2)``.

PyTorch kernels ``(O, I, kh, kw)`` become Keras ``(kh, kw, I, O)``. The up-convolution's
output channels are also permuted: ``nn.PixelShuffle`` reads channel ``c*r*r + i*r + j``
for output channel ``c`` at sub-pixel ``(i, j)``, ``tf.nn.depth_to_space``
(:class:`keras_layers.PixelShuffle`) reads ``(i*r + j)*C + c``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

_CONV_KEY = re.compile(r"^body_models\.(\d+)\.body\.(\d+)\.weight$")
_RES_KEY = re.compile(r"^body_models\.(\d+)\.body\.(\d+)\.body\.[02]\.weight$")


def read_torch_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Read a PyTorch checkpoint file (``torch.load`` on the CPU, tensors only).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ImportError: torch is not installed.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PyTorch checkpoint not found: {path}")
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            f"Reading the PyTorch checkpoint {path} needs torch: `pip install tfdeblur[torch]` "
            "(or pass a mapping of state_dict keys to NumPy arrays instead of a file)."
        ) from err
    return torch.load(path, map_location="cpu", weights_only=True)


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch.Tensor
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


def _generator_state_dict(checkpoint: Mapping, origin: str) -> dict[str, np.ndarray]:
    """The generator's state_dict from a checkpoint dict (``{"G": ...}``) or a bare one."""
    if "G" in checkpoint and isinstance(checkpoint["G"], Mapping):
        checkpoint = checkpoint["G"]
    elif not any(
        isinstance(k, str) and k.startswith(("body_models.", "module.body_models."))
        for k in checkpoint
    ):
        raise ValueError(
            f"{origin} is neither an official DeepDeblur checkpoint (a dict with key 'G') nor "
            f"an MSResNet state_dict (keys 'body_models.*'); its keys are {sorted(map(str, checkpoint))[:8]}."
        )
    state_dict = {str(k): v for k, v in checkpoint.items()}
    # A state_dict saved from a DataParallel-wrapped model has every key prefixed "module.".
    if state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module.") :]: v for k, v in state_dict.items()}
    return {k: _to_numpy(v) for k, v in state_dict.items()}


def deepdeblur_config_from_state_dict(state_dict: Mapping[str, Any]) -> dict[str, int]:
    """``n_scales``, ``n_resblocks``, ``n_feats``, ``kernel_size`` of an MSResNet state_dict.

    Raises:
        ValueError: the state_dict has no DeepDeblur keys, or lacks the finest scale's
            first convolution ``body_models.0.body.0.weight``, from which ``n_feats`` and
            ``kernel_size`` are read.
    """
    scales, convs = set(), set()
    for key in state_dict:
        match = _CONV_KEY.match(key) or _RES_KEY.match(key)
        if match:
            scales.add(int(match.group(1)))
        match = _CONV_KEY.match(key)
        if match and int(match.group(1)) == 0:
            convs.add(int(match.group(2)))
    if not scales:
        raise ValueError(
            "Not a DeepDeblur (MSResNet) state_dict: no 'body_models.<s>.body...' keys."
        )
    first = "body_models.0.body.0.weight"
    if first not in state_dict:
        raise ValueError(
            f"The state_dict is missing key {first!r}, needed to infer n_feats and kernel_size."
        )
    n_feats, _, kernel_size, _ = np.shape(state_dict[first])
    return {
        "n_scales": max(scales) + 1,
        "n_resblocks": max(convs) - 1,
        "n_feats": int(n_feats),
        "kernel_size": int(kernel_size),
    }


def _pixel_shuffle_permutation(channels: int, r: int) -> np.ndarray:
    """``perm[t]`` = PyTorch channel feeding TensorFlow depth_to_space channel ``t``."""
    t = np.arange(channels * r * r)
    c, sub_pixel = t % channels, t // channels  # t = (i*r + j) * C + c
    return c * r * r + sub_pixel  # PyTorch: c*r*r + i*r + j


def _deepdeblur_targets(model) -> dict[str, tuple[Any, np.ndarray | None]]:
    """Official state_dict key -> (Keras variable, output-channel permutation or None)."""
    names = {layer.name for layer in model.layers}
    n_scales = sum(1 for n in names if re.fullmatch(r"scale\d+_conv_in", n))
    n_resblocks = sum(1 for n in names if re.fullmatch(r"scale0_res\d+", n))
    if n_scales == 0:
        raise ValueError(
            f"model {model.name!r} is not a DeepDeblur model (no 'scale0_conv_in' layer)."
        )
    targets = {}

    def add(prefix, conv, perm=None):
        targets[f"{prefix}.weight"] = (conv.kernel, perm)
        targets[f"{prefix}.bias"] = (conv.bias, perm)

    for s in range(n_scales):
        add(f"body_models.{s}.body.0", model.get_layer(f"scale{s}_conv_in"))
        for i in range(n_resblocks):
            block = model.get_layer(f"scale{s}_res{i}")
            add(f"body_models.{s}.body.{i + 1}.body.0", block.conv1)
            add(f"body_models.{s}.body.{i + 1}.body.2", block.conv2)
        add(f"body_models.{s}.body.{n_resblocks + 1}", model.get_layer(f"scale{s}_conv_out"))
        if s > 0:
            shuffle = model.get_layer(f"scale{s}_shuffle")
            upconv = model.get_layer(f"scale{s}_upconv")
            r = shuffle.upscale_factor
            perm = _pixel_shuffle_permutation(upconv.filters // (r * r), r)
            add(f"conv_end_models.{s}.uppath.0", upconv, perm)
    return targets


def _torch_shape(variable) -> tuple[int, ...]:
    shape = tuple(variable.shape)
    if len(shape) == 4:  # Keras (kh, kw, I, O) <- PyTorch (O, I, kh, kw)
        return (shape[3], shape[2], shape[0], shape[1])
    return shape


def _list(keys, limit=6) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(repr(k) for k in keys[:limit]) + more


def load_deepdeblur_torch(source, model=None):
    """A Keras DeepDeblur with the weights of an official DeepDeblur-PyTorch checkpoint.

    Args:
        source: path of an official checkpoint (``model-<epoch>.pt``: a dict with key
            ``'G'`` holding the generator's state_dict, or a bare state_dict; needs torch,
            ``pip install tfdeblur[torch]``), or a mapping from official state_dict keys
            to arrays (NumPy arrays, or torch tensors; no torch needed for NumPy), or a
            mapping with key ``'G'`` holding such a mapping.
        model: a model from ``tfdeblur.build_model("deepdeblur", ...)`` to load into. If
            None, one is built with ``n_scales``, ``n_resblocks``, ``n_feats`` and
            ``kernel_size`` inferred from the state_dict.

    Returns:
        The ``keras.Model`` (inference form, input in [0, 1]) with the official weights.
        Its outputs equal the official network's outputs divided by 255.

    Raises:
        FileNotFoundError: ``source`` is a path that does not exist.
        ImportError: ``source`` is a file and torch is not installed.
        ValueError: a key is missing or extra (named), or an array's shape differs from
            the model's (the key and both shapes are named).
    """
    if isinstance(source, (str, os.PathLike)):
        origin = os.fspath(source)
        checkpoint = read_torch_state_dict(source)
        if not isinstance(checkpoint, Mapping):
            raise ValueError(f"{origin} does not hold a dict but a {type(checkpoint).__name__}.")
    elif isinstance(source, Mapping):
        origin, checkpoint = "the mapping given as source", source
    else:
        raise ValueError(
            f"source must be a checkpoint path or a mapping of state_dict keys to arrays, "
            f"got {type(source).__name__}."
        )
    state_dict = _generator_state_dict(checkpoint, origin)

    given_model = model is not None
    if model is None:
        from tfdeblur.models.registry import build_model

        config = deepdeblur_config_from_state_dict(state_dict)
        model = build_model("deepdeblur", **config)

    targets = _deepdeblur_targets(model)
    missing = set(targets) - set(state_dict)
    extra = set(state_dict) - set(targets)
    if missing or extra:
        hint = ""
        if given_model:
            try:
                hint = f" The checkpoint's configuration is {deepdeblur_config_from_state_dict(state_dict)}."
            except ValueError:
                pass
        if missing:
            raise ValueError(
                f"{origin} is missing key(s) {_list(missing)} for model {model.name!r}.{hint}"
            )
        raise ValueError(
            f"{origin} has unexpected key(s) {_list(extra)} for model {model.name!r}.{hint}"
        )
    for key, (variable, _) in targets.items():
        expected, got = _torch_shape(variable), tuple(state_dict[key].shape)
        if expected != got:
            raise ValueError(
                f"Shape mismatch for key {key!r}: {origin} has {got}, model {model.name!r} "
                f"expects {expected} (PyTorch layout)."
            )

    for key, (variable, perm) in targets.items():
        value = state_dict[key]
        if value.ndim == 4:
            value = value.transpose(2, 3, 1, 0)
        if perm is not None:
            value = value[..., perm]
        variable.assign(value.astype(variable.dtype))
    return model
