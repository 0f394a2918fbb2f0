"""Training: config -> strategy -> model, optimizer and loss in ``strategy.scope()`` -> fit.

``train.py`` is a thin flag parser over :class:`TrainConfig` and :func:`train`. Every
registered network trains through this one path with its training preset (see
``tfdeblur.models.registry`` and the training-preset schema in :func:`resolve_train_settings`);
:func:`build_training` is the one place that turns settings into a loss, a generator,
optimizers, a trainer and a checkpoint (``train`` and :func:`measure_input_pipeline`
share it).

Distribution: the model, optimizer and loss are built inside ``strategy.scope()``;
``model.fit`` distributes the tf.data pipeline; each replica's loss is its batch mean
divided by the number of replicas, so summed gradients equal those of the global-batch
mean (``tf.nn.compute_average_loss`` semantics) and the learning rate needs no change.

Resume: the checkpoint holds the generator, the optimizer the trainer uses (under
``mixed_float16`` the ``LossScaleOptimizer``, so the loss scale carries on), the epoch and
the best validation PSNR; the training stream skips the elements the interrupted run had
consumed (``initial_epoch * steps_per_epoch * batch_size``, before decoding), so a resumed
run sees the patches an uninterrupted one would have seen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import pathlib
import shutil
import time
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfdeblur.backend import require_tensorflow
from tfdeblur.fileio import atomic_path, check_output_path, write_text_atomic
from tfdeblur.metrics import psnr, ssim
from tfdeblur.models import registry
from tfdeblur.options import (  # noqa: F401
    MIXED_POLICIES,
    STRATEGIES,
    add_device_arguments,
    add_loss_arguments,
)
from tfdeblur.train import cluster as cluster_lib
from tfdeblur.train.cluster import DEFAULT_CLUSTER_TIMEOUT, SignalGuard, check_tf_config, peer_lost
from tfdeblur.train.losses import (
    DEFAULT_PERCEPTUAL_LAYER,
    MULTISCALE_TERMS,
    DeblurLoss,
    bce_with_logits,
)
from tfdeblur.train.run_folder import prepare_run_folder, worker_temp_dir

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs besides the model's own configuration.

    Attributes left ``None`` come from the network's training preset: ``train_preset``,
    or when that is None ``"demo"`` for ``data="demo"`` and ``"paper"`` otherwise
    (:func:`train_preset_name`). ``model_preset`` None means the training preset's
    ``model_preset`` or the network's default (paper) configuration.
    ``mixed_precision``: False (float32), True or ``"auto"`` (see
    :func:`precision_policy`), or a policy name from :data:`MIXED_POLICIES`.
    """

    model: str = "lcnet"
    model_preset: str | None = None
    train_preset: str | None = None
    data: str = "demo"
    output_dir: str = "runs/lcnet"
    strategy: str = "auto"
    batch_size: int | None = None
    patch_size: int | None = None
    learning_rate: float | None = None
    epochs: int | None = None
    iterations: int | None = None
    steps_per_epoch: int | None = None
    blur_key: str | None = None
    loss: dict[str, float] | None = None
    clip_length: int | None = None
    vgg_layer: str | None = None
    vgg_weights: str = "imagenet"
    validate_every: int | None = None
    max_val_images: int | None = None
    keep_checkpoints: int = 3
    resume: bool = False
    overwrite: bool = False
    cluster_timeout: float = DEFAULT_CLUSTER_TIMEOUT
    mixed_precision: bool | str = False
    seed: int = 0
    verbose: int = 1

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


def make_strategy(
    name: str, cluster_timeout: float = DEFAULT_CLUSTER_TIMEOUT
) -> tf.distribute.Strategy:
    """A ``tf.distribute`` strategy from its name.

    ``auto``: ``MirroredStrategy`` over all visible GPUs when there are several, else the
    one device. ``one_device``: the first GPU, or the CPU. ``mirrored``: all GPUs, or all
    logical CPU devices when there is no GPU. ``multi_worker``:
    ``MultiWorkerMirroredStrategy`` configured from ``TF_CONFIG``, waiting at most
    ``cluster_timeout`` seconds for the other tasks
    (:func:`tfdeblur.train.cluster.multi_worker_strategy`).
    """
    if name not in STRATEGIES:
        raise ValueError(f"--strategy must be one of {STRATEGIES}, got {name!r}.")
    if name == "multi_worker":
        # Must come before anything initialises TensorFlow's runtime (collective ops are
        # configured at start-up), so before any device listing or op.
        check_tf_config(os.environ.get("TF_CONFIG"))
        return cluster_lib.multi_worker_strategy(cluster_timeout)
    gpus = tf.config.list_logical_devices("GPU")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if not gpus and visible and visible != "-1":
        # TensorFlow's own reason (cuInit, missing libraries) is among its log lines.
        logger.warning(
            "CUDA_VISIBLE_DEVICES=%s asks for a GPU, but TensorFlow found none: training on "
            "the CPU (TFDEBLUR_VERBOSE=1 shows TensorFlow's reason).",
            visible,
        )
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


# TrainConfig attribute -> the training-preset key it overrides when not None.
_OVERRIDES = {
    "model_preset": "model_preset",
    "batch_size": "batch_size",
    "patch_size": "patch_size",
    "learning_rate": "learning_rate",
    "blur_key": "blur_key",
    "loss": "loss",
    "clip_length": "clip_length",
    "vgg_layer": "perceptual_layer",
    "validate_every": "validate_every",
    "max_val_images": "max_val_images",
    "steps_per_epoch": "steps_per_epoch",
}
# Settings that must be positive integers when present, with the flag that sets them.
_POSITIVE = {
    "batch_size": "--batch-size",
    "patch_size": "--patch-size",
    "epochs": "--epochs",
    "iterations": "--iterations",
    "clip_length": "--clip-length",
    "validate_every": "--validate-every",
    "max_val_images": "--max-val-images",
    "steps_per_epoch": "--steps-per-epoch",
}


def train_preset_name(config: TrainConfig) -> str:
    """The training preset of a run: ``config.train_preset``, else ``"demo"`` for the demo
    data (a recipe that finishes in minutes on a CPU) and ``"paper"`` for real data."""
    if config.train_preset:
        return config.train_preset
    return "demo" if config.data == "demo" else "paper"


def resolve_train_settings(config: TrainConfig) -> dict[str, Any]:
    """The network's training preset with the config's explicit values applied.

    Preset schema (plain dict): ``batch_size``, ``patch_size``, ``optimizer`` ("adam"),
    ``learning_rate``, optional ``adam`` ({beta_1, beta_2, epsilon}), ``lr_schedule``
    ({"type": "constant"} | {"type": "step", "step_size", "unit", "factor"} |
    {"type": "multistep", "milestones", "unit", "factor"}, unit "epochs" or
    "iterations"), ``epochs`` or ``iterations``, ``loss`` ({term: weight}),
    ``augment`` ({flip, rotate, channel_shuffle, saturation, noise}), ``blur_key``,
    ``data`` ("images" or "clips") and ``clip_length``. Optional: ``model_preset`` (the
    model preset this recipe trains unless ``--model-preset`` says otherwise, e.g.
    ``"tiny"`` for demo recipes; only a name, the model configuration stays in the
    registry), ``perceptual_layer`` (VGG-19 layer of the perceptual term, default
    ``block3_conv3``), ``validate_every`` (epochs between validations, default 1),
    ``max_val_images`` (validation frames, spread evenly over the test split, or the
    first clips; default all) and ``steps_per_epoch`` (default: one pass over the
    training pairs; the demo recipes set it, as their 24 pairs make 3-step epochs whose
    per-epoch validation and checkpoint would cost more than the training).

    The result always holds ``model_preset``, ``validate_every`` and ``max_val_images``
    (None: all), so ``train_settings.json`` records what ran.

    Raises:
        KeyError: unknown model, training preset or model preset.
        ValueError: a non-positive size or count, or a multi-scale loss that the model or
            the patch size cannot give (see :func:`check_multi_scale`).
    """
    settings = registry.get_train_preset(config.model, train_preset_name(config))
    for attribute, key in _OVERRIDES.items():
        value = getattr(config, attribute)
        if value is not None:
            settings[key] = value
    if config.epochs is not None:
        settings["epochs"] = config.epochs
        settings.pop("iterations", None)
    if config.iterations is not None:
        settings["iterations"] = config.iterations
        settings.pop("epochs", None)
    settings.setdefault("model_preset", registry.get_spec(config.model).default_preset)
    settings.setdefault("validate_every", 1)
    settings.setdefault("max_val_images", None)
    for key, flag in _POSITIVE.items():
        if settings.get(key) is not None and int(settings[key]) < 1:
            raise ValueError(f"{flag} must be positive, got {settings[key]}.")
    registry.get_model_config(config.model, settings["model_preset"])  # KeyError naming it
    check_multi_scale(config.model, settings)
    return settings


def check_multi_scale(model: str, settings: Mapping[str, Any]) -> None:
    """Fail before any data or model is built when a multi-scale loss term cannot work.

    A multi-scale term needs a model whose config has ``multi_scale_outputs`` (and
    ``n_scales`` = K). The model halves the patch K - 1 times and pads internally to a
    multiple of ``2 ** (K - 1)``; a patch that is not such a multiple gives coarse outputs
    one pixel larger than the target pyramid's levels, which would only fail deep inside
    the first training step.

    Raises:
        ValueError: naming ``--loss`` or ``--patch-size`` and the required multiple.
    """
    terms = sorted(t for t, w in settings["loss"].items() if w and t in MULTISCALE_TERMS)
    if not terms:
        return
    model_config = registry.get_model_config(model, settings.get("model_preset"))
    if "multi_scale_outputs" not in model_config:
        raise ValueError(
            f"--loss {terms[0]} needs a multi-scale model; {model!r} has a single output "
            "(use l1, mse or charbonnier)."
        )
    scales = int(model_config.get("n_scales", 1))
    multiple = 2 ** (scales - 1)
    patch = int(settings["patch_size"])
    if patch % multiple:
        raise ValueError(
            f"--patch-size {patch} must be a multiple of {multiple} (2^(K-1) for the K = "
            f"{scales} scales of {model!r}) with the multi-scale loss {terms[0]}: every "
            "output level must match the target's Gaussian pyramid."
        )


def precision_policy(mixed: bool | str | None) -> str:
    """The Keras dtype policy of a run.

    False/None: ``float32``. True or ``"auto"``: ``mixed_float16`` (with loss scaling) on
    GPUs, where tensor cores make float16 fast, and ``mixed_bfloat16`` elsewhere (CPUs and
    TPUs compute bfloat16 natively and it needs no loss scaling). A policy name from
    :data:`MIXED_POLICIES` is used as given (e.g. ``mixed_bfloat16`` on Ampere or newer
    GPUs). Variables, outputs and losses stay float32 either way.

    Raises:
        ValueError: an unknown policy name.
    """
    if mixed is None or mixed is False:
        return "float32"
    if mixed is True or mixed == "auto":
        return "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16"
    if mixed not in MIXED_POLICIES:
        raise ValueError(
            f"--mixed-precision must be auto, {' or '.join(MIXED_POLICIES)}, got {mixed!r}."
        )
    return mixed


@contextlib.contextmanager
def _global_policy(name: str):
    """Keras' global dtype policy set to ``name`` inside the block and restored after it,
    also when the block raises: a failed run must not leave the process (a notebook, the
    test session) in mixed precision."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


@contextlib.contextmanager
def _training_graph_options(model: keras.Model):
    """Grappler's remapper off while the training step of a network with LeakyReLU is
    traced (the setting is read at trace time), on again after.

    TensorFlow 2.21's CPU remapper (oneDNN) fuses ``Conv2D -> BiasAdd -> LeakyRelu`` into
    one ``_FusedConv2D`` although the backward pass's ``LeakyReluGrad`` still reads the
    ``BiasAdd``; its graph edit then fails (``E... meta_optimizer.cc] remapper failed:
    INVALID_ARGUMENT: Mutation::Apply error: fanout '.../enc3_act/LeakyRelu/LeakyReluGrad'
    exist for missing node '.../enc3_conv/BiasAdd'``, any biased convolution followed by
    a LeakyReLU, reproduced with one ``Conv2D`` + ``LeakyReLU``) and the meta-optimizer
    drops the whole remapper pass for that graph. With it off the training graph is the
    same, without the error: LCNet's train step took the same time either way (455 vs
    473 ms, batch 8 of 64x64, 2-core EPYC under load). Networks without LeakyReLU (the
    others; DeepDeblur's discriminator has bias-free convolutions) keep the remapper,
    whose fusions make their steps 10-25% faster. Inference graphs always keep it.
    """
    # Keras' own recursive walk over the layers (sub-layers of ResBlock included).
    broken = any(isinstance(layer, keras.layers.LeakyReLU) for layer in model._flatten_layers())
    if not broken:
        yield
        return
    previous = tf.config.optimizer.get_experimental_options().get("remapping", True)
    tf.config.optimizer.set_experimental_options({"remapping": False})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({"remapping": previous})


def make_lr_schedule(settings: Mapping[str, Any], steps_per_epoch: int, total_steps: int):
    """A step-indexed Keras learning-rate schedule from the preset's ``lr_schedule``."""
    lr = float(settings["learning_rate"])
    spec = dict(settings.get("lr_schedule") or {"type": "constant"})
    kind = spec.get("type", "constant")
    if kind == "constant":
        return lr
    required = {"step": ("step_size", "factor"), "multistep": ("milestones", "factor")}
    if kind not in required:
        raise ValueError(f"Unknown lr_schedule type {kind!r} (want constant, step or multistep).")
    missing = [key for key in required[kind] if key not in spec]
    if missing or spec.get("unit", "epochs") not in ("epochs", "iterations"):
        raise ValueError(
            f"lr_schedule {spec} needs keys {list(required[kind])} and unit 'epochs' or "
            f"'iterations' (missing: {missing})."
        )
    per_unit = steps_per_epoch if spec.get("unit", "epochs") == "epochs" else 1
    if kind == "step":
        step = int(spec["step_size"]) * per_unit
        boundaries = list(range(step, max(total_steps, step + 1), step))
    elif kind == "multistep":
        boundaries = [int(m) * per_unit for m in spec["milestones"]]
    if not boundaries:
        return lr
    factor = float(spec["factor"])
    values = [lr * factor**i for i in range(len(boundaries) + 1)]
    # The schedule sees the number of finished steps and keeps values[i] while
    # step <= boundary: shift by one so step ``b`` (the first of the new stage) decays.
    return keras.optimizers.schedules.PiecewiseConstantDecay([b - 1 for b in boundaries], values)


class DeblurTrainer(keras.Model):
    """Wraps a deblurring network for ``fit``: its loss terms and training step.

    The wrapped ``generator`` is what gets saved; this wrapper only holds the training
    step. Validation runs outside ``fit`` (:class:`_Validation`).
    """

    def __init__(
        self,
        generator: keras.Model,
        loss: DeblurLoss,
        discriminator: keras.Model | None = None,
        d_optimizer: keras.optimizers.Optimizer | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if loss.adversarial_weight and (discriminator is None or d_optimizer is None):
            raise ValueError("An adversarial loss term needs a discriminator and its optimizer.")
        self.generator = generator
        self.deblur_loss = loss
        self.discriminator = discriminator
        self.d_optimizer = d_optimizer
        names = ["loss", *loss.terms] + (["d_loss"] if loss.adversarial_weight else [])
        self.loss_trackers = {name: keras.metrics.Mean(name=name) for name in names}
        self.multi_worker = False

    def use_multi_worker_reduction(self) -> None:
        """Keras 3.15's fit() reduces step results across workers with
        ``strategy.reduce("MEAN", value, axis=0)``, which fails on scalars; results are
        then reported as shape-(1,) tensors, which that reduction turns into the mean
        over all replicas."""
        self.multi_worker = True

    def _report(self, results: dict) -> dict:
        if self.multi_worker:
            return {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    def call(self, inputs, training=False):
        return self.generator(inputs, training=training)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3.15's fit() first reduces one batch across replicas eagerly to build the
        # model symbolically; MultiWorkerMirroredStrategy cannot run that eager collective
        # ("Attempt to convert a value (PerReplica...)"). The generator is a built
        # functional model and there are no compiled losses or metrics, so only the
        # optimizers need building, in the strategy's scope (building them lazily inside
        # a replica step fails under MirroredStrategy).
        with self.distribute_strategy.scope():
            for optimizer, model in (
                (self.optimizer, self.generator),
                (self.d_optimizer, self.discriminator),
            ):
                if optimizer is not None and not optimizer.built:
                    optimizer.build(model.trainable_variables)

    @property
    def metrics(self):
        return list(self.loss_trackers.values())

    def train_step(self, data):
        blur, sharp = data
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.generator.trainable_variables
        adversarial = self.deblur_loss.adversarial_weight
        with tf.GradientTape() as tape:
            prediction = self.generator(blur, training=True)
            terms = self.deblur_loss(sharp, prediction)
            if adversarial:
                finest = prediction[0] if isinstance(prediction, (list, tuple)) else prediction
                fake_logits = self.discriminator(finest, training=False)
                terms["adversarial"] = adversarial * bce_with_logits(fake_logits, 1.0)
            loss = tf.add_n(list(terms.values()))
            scaled = self.optimizer.scale_loss(loss / replicas)
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables, strict=True))
        if adversarial:
            # Discriminator step on the same batch (DeepDeblur sec. 3.3, trained jointly).
            fake = tf.stop_gradient(finest)
            d_variables = self.discriminator.trainable_variables
            with tf.GradientTape() as tape:
                d_loss = bce_with_logits(
                    self.discriminator(fake, training=True), 0.0
                ) + bce_with_logits(self.discriminator(sharp, training=True), 1.0)
                d_scaled = self.d_optimizer.scale_loss(d_loss / replicas)
            d_gradients = tape.gradient(d_scaled, d_variables)
            self.d_optimizer.apply_gradients(zip(d_gradients, d_variables, strict=True))
            self.loss_trackers["d_loss"].update_state(d_loss)
        self.loss_trackers["loss"].update_state(loss)
        for name, value in terms.items():
            self.loss_trackers[name].update_state(value)
        return self._report({name: t.result() for name, t in self.loss_trackers.items()})


class _NonFiniteLossStop(keras.callbacks.Callback):
    """Stops the run before a non-finite loss turns into NaN weights on disk."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True
            raise FloatingPointError(
                f"Non-finite training loss ({loss}) at batch {batch}: stopping without "
                "saving. Lower the learning rate or check the data."
            )


class _Throughput(keras.callbacks.Callback):
    """Adds ``step_s`` and ``images_per_s`` (training steps only, validation excluded) and
    ``learning_rate`` (the rate of the next step) to the epoch logs, so the progress line,
    the history and TensorBoard show throughput and the schedule's stage."""

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size = batch_size

    def on_epoch_begin(self, epoch, logs=None):
        self.start, self.steps, self.train_seconds = time.perf_counter(), 0, 0.0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        self.train_seconds = time.perf_counter() - self.start

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if self.steps:
            logs["step_s"] = self.train_seconds / self.steps
            logs["images_per_s"] = self.steps * self.batch_size / self.train_seconds
        logs["learning_rate"] = _current_learning_rate(self.model.optimizer)


def _current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The learning rate the optimizer's next step uses (its schedule at ``iterations``)."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class _ImageLogger(keras.callbacks.Callback):
    """Writes blurry | output | sharp strips of a few validation samples to TensorBoard
    after each validation."""

    def __init__(self, log_dir: pathlib.Path, samples, every: int, infer):
        super().__init__()
        self.writer = tf.summary.create_file_writer(str(log_dir / "images"))
        self.samples = samples
        self.every = every
        self.infer = infer

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        strips = []
        for blur, sharp in self.samples:
            out = self.infer(blur)
            out = tf.clip_by_value(tf.cast(out, tf.float32), 0.0, 1.0)
            frame = lambda t: t[0, 0] if t.shape.rank == 5 else t[0]  # noqa: E731
            strips.append(tf.concat([frame(blur), frame(out), frame(sharp)], axis=1))
        with self.writer.as_default():
            for i, strip in enumerate(strips):
                tf.summary.image(f"blurry_output_sharp/{i}", strip[None], step=epoch + 1)
        self.writer.flush()


class _Validation(keras.callbacks.Callback):
    """PSNR/SSIM of the generator on the validation set every ``every`` epochs, written
    into the epoch logs as ``val_psnr`` / ``val_ssim`` (for the checkpointer, the progress
    line and TensorBoard).

    It runs the generator locally on every worker instead of ``fit(validation_data=...)``:
    Keras' distributed evaluation splits the batch-1, full-frame validation set across
    replicas, and a replica whose share has run out gets an empty batch, which fails
    inside the convolutions under ``MultiWorkerMirroredStrategy``. The weights are
    identical on every worker, so every worker computes the same numbers. ``infer`` is the run's one compiled inference
    function (:func:`_inference_function`): a new ``tf.function`` per validation would
    trace the full-frame graph again every time.
    """

    def __init__(self, dataset: tf.data.Dataset, every: int, infer):
        super().__init__()
        self.dataset = dataset
        self.every = every
        self.infer = infer

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or (epoch + 1) % self.every:
            return
        scores = validation_scores(self.model.generator, self.dataset, infer=self.infer)
        logs["val_psnr"], logs["val_ssim"] = scores["psnr"], scores["ssim"]


class _Checkpointer(keras.callbacks.Callback):
    """After each epoch: ``best.keras`` (atomic, chief only, in inference form) when the
    validation PSNR beat ``best_var``, then generator + optimizer + epoch + best PSNR with
    ``tf.train.CheckpointManager`` (TensorFlow writes the checkpoint index last, so an
    interrupted save is never picked as the latest).

    The best PSNR lives in the checkpoint so that ``--resume`` does not start from
    ``-inf`` and let a worse epoch overwrite ``best.keras``. ``best.keras`` is written
    before the checkpoint: a run killed in between redoes the epoch on the same data and
    at worst rewrites an equally good ``best.keras``; the other order could lose a best
    model for good. Every worker updates ``best_var`` (all compute the same PSNR) and
    saves the checkpoint (a collective step of the strategy).
    """

    def __init__(
        self,
        manager: tf.train.CheckpointManager,
        epoch_var: tf.Variable,
        best_var: tf.Variable,
        best_path: pathlib.Path,
        inference_form: InferenceForm,
        is_chief: bool,
    ):
        super().__init__()
        self.manager = manager
        self.epoch_var = epoch_var
        self.best_var = best_var
        self.best_path = best_path
        self.inference_form = inference_form
        self.is_chief = is_chief

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_var.assign(epoch + 1)
        val = (logs or {}).get("val_psnr")
        if val is not None and val > float(self.best_var.numpy()):
            self.best_var.assign(val)
            if self.is_chief:
                save_model_atomic(self.inference_form(), self.best_path)
        self.manager.save(checkpoint_number=epoch + 1)


def save_model_atomic(model: keras.Model, path: str | os.PathLike) -> pathlib.Path:
    """``model.save(path)`` through :func:`tfdeblur.fileio.atomic_path`: a crash never
    leaves a half-written ``.keras`` where a good one was."""
    path = pathlib.Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"Model files must end in .keras, got {path}.")
    with atomic_path(path) as tmp:
        model.save(tmp)
    return path


class InferenceForm:
    """The generator in the form that is saved (``best.keras`` and ``final.keras``):
    float32 and the finest output only, with the generator's current weights.

    A run trains the training form: multi-scale outputs for a multi-scale loss (DeepDeblur)
    and the mixed dtype policy under ``--mixed-precision``. Users load the saved file to
    deblur, so it is the registry model of the same preset, rebuilt in float32, with the
    weights copied in (the training form has the same weights in the same order, and its
    variables are float32 under mixed precision too).

    Args:
        generator: the training-form generator.
        model_name: its registry name.
        model_preset: its model preset.
        convert: whether the training form differs from the inference form; when False
            calling returns ``generator`` itself.
    """

    def __init__(self, generator: keras.Model, model_name: str, model_preset, convert: bool):
        self.generator = generator
        self.target = None
        if convert:
            # Built once, here, outside strategy.scope() and in float32. Built lazily in a
            # callback, it would create variables inside fit's strategy scope: a broadcast
            # collective under MultiWorkerMirroredStrategy that the workers which do not
            # save (all but the chief) would never join.
            with _global_policy("float32"):
                self.target = registry.build_model(model_name, model_preset)

    def __call__(self) -> keras.Model:
        if self.target is None:
            return self.generator
        self.target.set_weights(self.generator.get_weights())
        return self.target


def _inference_function(model: keras.Model):
    """``model(x, training=False)``'s finest output as a retrace-tolerant ``tf.function``."""

    @tf.function(reduce_retracing=True)
    def infer(x):
        out = model(x, training=False)
        return out[0] if isinstance(out, (list, tuple)) else out

    return infer


def validation_scores(model: keras.Model, dataset: tf.data.Dataset, *, infer=None) -> dict:
    """Mean PSNR of the blurry input, and mean PSNR and SSIM of the (clamped) model
    output, against the sharp images of a ``(blur, sharp)`` dataset of frames or clips.

    Args:
        model: the model (its finest output is scored).
        dataset: ``(blur, sharp)`` batches of frames ``(B, H, W, 3)`` or clips
            ``(B, T, H, W, 3)``.
        infer: ``_inference_function(model)`` to reuse across calls; a new one (traced
            again) when None.

    Returns:
        ``{"blurry_psnr", "psnr", "ssim"}``, means over all frames.
    """
    infer = infer or _inference_function(model)
    blurry, scores, similarity = [], [], []
    for blur, sharp in dataset:
        out = tf.clip_by_value(tf.cast(infer(blur), tf.float32), 0.0, 1.0)
        sharp = tf.cast(sharp, tf.float32)
        frames = tf.concat([[-1], tf.shape(sharp)[-3:-1], [3]], axis=0)  # clips -> frames
        blurry.extend(np.ravel(psnr(blur, sharp)))
        scores.extend(np.ravel(psnr(out, sharp)))
        similarity.extend(np.ravel(ssim(tf.reshape(out, frames), tf.reshape(sharp, frames))))
    return {
        "blurry_psnr": float(np.mean(blurry)),
        "psnr": float(np.mean(scores)),
        "ssim": float(np.mean(similarity)),
    }


def _spread(items: Sequence, limit: int | None) -> list:
    """``limit`` items spread evenly over ``items`` (all when ``limit`` is None): a
    validation subset that samples every test sequence, not only the first ones."""
    items = list(items)
    if not limit or limit >= len(items):
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def make_datasets(
    settings: Mapping[str, Any],
    root,
    config: TrainConfig,
    batch_size: int,
    initial_epoch: int = 0,
    *,
    decode_check: bool = True,
):
    """Training and validation datasets of the preset's kind, checked before training
    (every image decoded with the pipeline's decoder unless ``decode_check`` is False:
    :func:`measure_input_pipeline` times the pipeline and skips it).

    ``data == "images"``: random crops of frame pairs; validation on full test frames
    (``max_val_images`` of them, spread evenly over the test split). ``data == "clips"``:
    random crops of ``clip_length`` consecutive frames (``tfdeblur.data.clips``);
    validation on the first ``max_val_images`` test clips with one fixed crop.

    A resumed run (``initial_epoch > 0``) skips the ``initial_epoch * steps_per_epoch *
    batch_size`` elements the earlier run consumed from the image stream (global batch:
    under ``MultiWorkerMirroredStrategy`` every worker runs this whole pipeline and keeps
    its replicas' share of each global batch, tf.data's DATA auto-sharding, so every
    worker skips the same global count); the clip stream likewise. Needs the same seed,
    batch size and steps per epoch as the interrupted run.

    Returns:
        ``(train_ds, val_ds, steps_per_epoch)``; by default an epoch sees every training
        pair (or clip window) once on average; the settings' ``steps_per_epoch``
        (``--steps-per-epoch`` or the preset's) overrides it.
    """
    from tfdeblur import data as data_lib

    kind = settings.get("data", "images")
    blur_key = settings.get("blur_key", "blur")
    patch = int(settings["patch_size"])
    augment = dict(settings.get("augment", {}))
    limit = settings.get("max_val_images")
    if kind == "images":
        train_pairs = data_lib.find_pairs(root, "train", blur_key)
        val_pairs = _spread(data_lib.find_pairs(root, "test", blur_key), limit)
        data_lib.validate_pairs(train_pairs, min_size=patch, decode=decode_check)
        data_lib.validate_pairs(val_pairs, decode=decode_check)
        steps = settings.get("steps_per_epoch") or max(1, len(train_pairs) // batch_size)
        train_ds = data_lib.train_dataset(
            train_pairs,
            batch_size,
            patch,
            seed=config.seed,
            skip=initial_epoch * steps * batch_size,
            **augment,
        )
        return train_ds, data_lib.eval_dataset(val_pairs), steps
    if kind == "clips":
        from tfdeblur.data import clips

        length = int(settings["clip_length"])
        train_seqs = clips.find_clips(root, "train", blur_key)
        val_seqs = clips.find_clips(root, "test", blur_key)
        train_frames = [p for seq in train_seqs for p in seq]
        data_lib.validate_pairs(train_frames, min_size=patch, decode=decode_check)
        val_frames = [p for seq in val_seqs for p in seq]
        data_lib.validate_pairs(val_frames, min_size=patch, decode=decode_check)
        windows = len(clips.clip_windows(train_seqs, length))
        steps = settings.get("steps_per_epoch") or max(1, windows // batch_size)
        train_ds = clips.clip_dataset(
            train_seqs,
            length,
            batch_size,
            patch,
            flip=augment.get("flip", True),
            seed=config.seed,
            skip=initial_epoch * steps * batch_size,
        )
        val_ds = clips.clip_dataset(
            val_seqs, length, 1, patch, flip=False, seed=0, repeat=False, shuffle=False
        )
        return train_ds, val_ds.take(limit) if limit else val_ds, steps
    raise ValueError(f"Unknown training data kind {kind!r} (want 'images' or 'clips').")


def global_batch_size(settings: Mapping[str, Any], strategy: tf.distribute.Strategy) -> int:
    """The preset's (global) batch size, checked against the strategy's replicas.

    Raises:
        ValueError: the batch does not divide by the number of replicas.
    """
    batch_size = int(settings["batch_size"])
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(
            f"--batch-size {batch_size} must divide by the {replicas} replicas of the strategy."
        )
    return batch_size


@dataclasses.dataclass
class TrainingParts:
    """What :func:`build_training` builds; ``trainer.optimizer`` is the optimizer that
    steps (a ``LossScaleOptimizer`` around Adam under ``mixed_float16``)."""

    loss: DeblurLoss
    generator: keras.Model
    trainer: DeblurTrainer
    checkpoint: tf.train.Checkpoint
    epoch: tf.Variable
    best_val_psnr: tf.Variable


def build_training(
    config: TrainConfig,
    settings: Mapping[str, Any],
    strategy: tf.distribute.Strategy,
    steps_per_epoch: int,
    total_steps: int,
) -> TrainingParts:
    """Loss, generator, optimizer(s), trainer and checkpoint of a run, in ``strategy.scope()``.

    The one place that turns resolved settings into trainable objects: :func:`train` and
    :func:`measure_input_pipeline` both use it, so the benchmark times the step that
    trains. Call it under the run's global dtype policy (:func:`precision_policy`).

    The generator is the training form (multi-scale outputs when a loss term needs them);
    :class:`InferenceForm` gives the saved form.
    """
    with strategy.scope():
        loss = DeblurLoss(
            settings["loss"],
            perceptual_layer=settings.get("perceptual_layer", DEFAULT_PERCEPTUAL_LAYER),
            vgg_weights=config.vgg_weights,
        )
        overrides = {"multi_scale_outputs": True} if loss.multi_scale else {}
        generator = registry.build_model(config.model, settings["model_preset"], **overrides)
        schedule = make_lr_schedule(settings, steps_per_epoch, total_steps)
        adam = settings.get("adam", {})
        discriminator = d_optimizer = None
        extra = {}
        if loss.adversarial_weight:
            from tfdeblur.models.discriminator import build_discriminator

            discriminator = build_discriminator()
            d_optimizer = keras.optimizers.Adam(learning_rate=schedule, **adam)
            if keras.mixed_precision.global_policy().name == "mixed_float16":
                d_optimizer = keras.optimizers.LossScaleOptimizer(d_optimizer)
            d_optimizer.build(discriminator.trainable_variables)
            extra = {"discriminator": discriminator, "d_optimizer": d_optimizer}
        trainer = DeblurTrainer(generator, loss, discriminator, d_optimizer)
        # Under mixed_float16, compile() wraps the Adam in a LossScaleOptimizer
        # (auto_scale_loss): that wrapper is what steps, and what the checkpoint must hold
        # so the dynamic loss scale survives a resume. Its iterations are Adam's.
        trainer.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule, **adam))
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            trainer.use_multi_worker_reduction()
        trainer.optimizer.build(generator.trainable_variables)
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        best = tf.Variable(-math.inf, dtype=tf.float64, trainable=False, name="best_val_psnr")
        checkpoint = tf.train.Checkpoint(
            model=generator, optimizer=trainer.optimizer, epoch=epoch, best_val_psnr=best, **extra
        )
    return TrainingParts(loss, generator, trainer, checkpoint, epoch, best)


def _checkpoint_epoch(path: str) -> int:
    """The epoch stored in checkpoint ``path``, after reading every tensor of it (the
    reader checks each tensor's checksum), so a damaged checkpoint fails here, naming
    nothing yet, rather than inside ``restore``.

    Raises:
        Exception: whatever the damaged file makes TensorFlow raise (OpError,
            IndexError, ValueError, ...).
    """
    reader = tf.train.load_checkpoint(path)
    for key in reader.get_variable_to_shape_map():
        reader.get_tensor(key)
    return int(reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE"))


def _resume_point(config: TrainConfig, out_dir: pathlib.Path) -> tuple[str | None, int]:
    """``(checkpoint path, epoch)`` to resume from, or ``(None, 0)``.

    Every worker reads the chief's ``out_dir/checkpoints`` (under ``multi_worker`` the
    output directory must be on a filesystem all workers see), so they all restore the
    same state and run the same number of steps. The epoch is read before anything is
    built: the training stream needs it to skip what was consumed.

    The newest checkpoint (``ckpt-N`` with the largest N) that reads in full is used; a
    damaged newer one is named and skipped, with a line saying which one is used
    instead.

    Raises:
        ValueError: checkpoints exist but none of them reads (each named with its error).
    """
    if not config.resume:
        return None, 0
    ckpt_dir = out_dir / "checkpoints"
    numbered = []
    if ckpt_dir.is_dir():
        for index in ckpt_dir.glob("ckpt-*.index"):
            number = index.name[len("ckpt-") : -len(".index")]
            if number.isdigit():
                numbered.append((int(number), str(index.with_suffix(""))))
    if not numbered:
        print(f"--resume: no checkpoint in {ckpt_dir}; starting from scratch.")
        return None, 0
    damaged = []
    for _, path in sorted(numbered, reverse=True):
        try:
            epoch = _checkpoint_epoch(path)
        except Exception as err:  # noqa: BLE001 - a damaged file raises anything
            reason = (getattr(err, "message", None) or str(err) or type(err).__name__).strip()
            damaged.append(f"{path} ({type(err).__name__}: {reason.splitlines()[0][:200]})")
            continue
        if damaged:
            print(
                f"--resume: checkpoint {damaged[0]} cannot be read; resuming from {path}, "
                f"the newest checkpoint that can (epoch {epoch})."
            )
        return path, epoch
    raise ValueError(
        f"--resume: no checkpoint in {ckpt_dir} can be read: {'; '.join(damaged)}. "
        "Restore the files, or start afresh with --overwrite."
    )


def _check_same_run(
    out_dir: pathlib.Path, latest: str, model: str, settings: Mapping[str, Any], policy: str
) -> None:
    """Refuse to resume ``latest`` with another ``--model``, ``--model-preset``, ``--loss``
    or ``--mixed-precision`` than the run that wrote it (its ``train_config.json`` and
    ``train_settings.json`` in ``out_dir``; a checkpoint without them is left to
    :func:`_restore`'s structural check). Some of these changes would restore without
    error (another loss, or dropping the adversarial term) and silently train another
    recipe.

    Raises:
        ValueError: naming the checkpoint, each differing flag and both values.
    """
    try:
        old_config = json.loads((out_dir / "train_config.json").read_text())
        old_settings = json.loads((out_dir / "train_settings.json").read_text())
    except (OSError, ValueError):
        return
    pairs = {
        "--model": (old_config.get("model"), model),
        "--model-preset": (old_settings.get("model_preset"), settings["model_preset"]),
        "--loss": (old_settings.get("loss"), dict(settings["loss"])),
        "--mixed-precision": (
            precision_policy(old_config.get("mixed_precision", False)),
            policy,
        ),
    }
    differ = [
        f"{flag} {old!r} (this run: {new!r})" for flag, (old, new) in pairs.items() if old != new
    ]
    if differ:
        raise ValueError(
            f"--resume: checkpoint {latest} does not match this run: it was written with "
            f"{'; '.join(differ)}. Resume with the flags of the run that wrote it, or "
            "start a new run in another --output-dir."
        )


def _restore(checkpoint: tf.train.Checkpoint, path: str) -> None:
    """Restore ``path`` into ``checkpoint``, every object of the run matched.

    Raises:
        ValueError: naming the checkpoint, when it holds other objects than this run
            builds (another model or preset, ``--mixed-precision`` switched on or off,
            which adds or removes the loss-scale optimizer, or an adversarial term
            added or dropped).
    """
    try:
        checkpoint.restore(path).assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as err:
        # Unmatched objects (AssertionError), or values matched by position that differ
        # in shape (ValueError) or dtype (InvalidArgumentError).
        raise ValueError(
            f"--resume: checkpoint {path} does not match this run (resume with the flags "
            f"of the run that wrote it: --model, --model-preset, --loss, --mixed-precision): "
            f"{str(err)[:300]}"
        ) from None


def train(config: TrainConfig) -> dict[str, Any]:
    """Train ``config.model`` and write checkpoints and ``final.keras`` in ``output_dir``.

    Before anything is written: the settings, the run folder (refused when it holds a run
    unless ``resume`` or ``overwrite``, see :func:`tfdeblur.train.run_folder.prepare_run_folder`;
    temporaries of an interrupted run removed) and every image (decoded with the
    pipeline's decoder) are checked. ``history.json`` keeps the untrained validation
    scores and every epoch's logs across resumes; ``summary.json`` reports them.

    Returns:
        A summary dict: paths, steps, final losses, the optimizer's iteration count and
        next learning rate, validation PSNR before/after.

    Raises:
        KeyError, ValueError, FileNotFoundError: bad settings, run folder or data, before
            training.
        FloatingPointError: a non-finite training loss (nothing is saved for that epoch).
        tfdeblur.train.cluster.ClusterError: a multi-worker cluster that did not form within
            ``cluster_timeout``, or lost a task during training.
    """
    require_tensorflow("Training (train.py, tfdeblur.train.loop.train)")
    from tfdeblur import data as data_lib

    settings = resolve_train_settings(config)
    out_dir = pathlib.Path(config.output_dir)
    check_output_path(out_dir, "--output-dir", directory=True)
    if config.resume and config.overwrite:
        raise ValueError("--resume continues the run in --output-dir; --overwrite replaces it.")
    # First: multi-worker set-up precedes any op.
    strategy = make_strategy(config.strategy, config.cluster_timeout)
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    with SignalGuard() if multi_worker else contextlib.nullcontext() as guard:
        try:
            return _train(config, settings, strategy, out_dir, guard, data_lib)
        except _PEER_LOST as err:
            if not multi_worker:
                raise
            raise peer_lost(err) from None


# What a collective raises when a peer of a multi-worker run is gone (or unreachable).
_PEER_LOST = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.CancelledError,
    tf.errors.AbortedError,
    tf.errors.InternalError,
    tf.errors.UnknownError,
    tf.errors.FailedPreconditionError,
)


def _train(config, settings, strategy, out_dir, guard, data_lib) -> dict[str, Any]:
    keras.utils.set_random_seed(config.seed)
    batch_size = global_batch_size(settings, strategy)
    policy = precision_policy(config.mixed_precision)
    is_chief = _is_chief(strategy)
    if is_chief:  # refuse before the data check
        prepare_run_folder(out_dir, resume=config.resume, overwrite=config.overwrite, dry_run=True)
    latest, initial_epoch = _resume_point(config, out_dir)

    root = data_lib.resolve_data(config.data)
    train_ds, val_ds, steps_per_epoch = make_datasets(
        settings, root, config, batch_size, initial_epoch
    )
    if "iterations" in settings:
        total_steps = int(settings["iterations"])
        epochs = max(1, math.ceil(total_steps / steps_per_epoch))
    else:
        epochs = int(settings["epochs"])
        total_steps = epochs * steps_per_epoch

    # The run folder is cleared (--overwrite) and its settings written by _fit, once the
    # loss is built: a recipe that cannot run (VGG-19 weights missing) writes nothing.

    # Non-chief workers save too (saving is a collective step of the strategy), into a
    # private temporary directory that is removed at the end (or on the next start of
    # the same task of the same run, when this one was killed).
    if is_chief:
        ckpt_dir = out_dir / "checkpoints"
    else:
        resolver = strategy.cluster_resolver
        ckpt_dir = worker_temp_dir(out_dir, f"{resolver.task_type}{resolver.task_id}")
        if guard is not None:
            guard.cleanups.append(lambda: shutil.rmtree(ckpt_dir, ignore_errors=True))
    try:
        return _fit(
            config, settings, strategy, out_dir, ckpt_dir, is_chief, policy, batch_size,
            latest, initial_epoch, train_ds, val_ds, steps_per_epoch, epochs, total_steps,
        )  # fmt: skip
    finally:
        if not is_chief:
            shutil.rmtree(ckpt_dir, ignore_errors=True)


def _fit(
    config, settings, strategy, out_dir, ckpt_dir, is_chief, policy, batch_size,
    latest, initial_epoch, train_ds, val_ds, steps_per_epoch, epochs, total_steps,
) -> dict[str, Any]:  # fmt: skip
    with _global_policy(policy):
        parts = build_training(config, settings, strategy, steps_per_epoch, total_steps)
        generator, optimizer = parts.generator, parts.trainer.optimizer
        # The terms that train (zero weights dropped); a term that cannot run (VGG-19
        # weights missing) stopped build_training above, before anything was written.
        settings = {**settings, "loss": dict(parts.loss.terms)}
        if latest:
            _check_same_run(out_dir, latest, config.model, settings, policy)
        if is_chief:
            for path in prepare_run_folder(
                out_dir, resume=config.resume, overwrite=config.overwrite
            ):
                print(f"Removed {path}.")
            out_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(out_dir / "train_config.json", config.to_json())
            write_text_atomic(out_dir / "train_settings.json", json.dumps(settings, indent=2))
        inference_form = InferenceForm(
            generator,
            config.model,
            settings["model_preset"],
            convert=parts.loss.multi_scale or policy != "float32",
        )
        manager = tf.train.CheckpointManager(
            parts.checkpoint, str(ckpt_dir), config.keep_checkpoints
        )
        if latest:
            _restore(parts.checkpoint, latest)
            print(f"Resumed from {latest} (epoch {initial_epoch}).")

        infer = _inference_function(generator)  # one trace for every validation
        if config.verbose:  # tracing the graphs prints nothing for a while
            print("Scoring the untrained network on the validation set (first graph trace) ...")
        start_scores = validation_scores(generator, val_ds, infer=infer)
        if config.verbose:
            print(
                f"Validation PSNR: blurry {start_scores['blurry_psnr']:.2f} dB, untrained "
                f"{start_scores['psnr']:.2f} dB. Training {epochs} epochs of {steps_per_epoch} "
                "steps; the first step traces the training graph ..."
            )
        record = _HistoryRecord(
            out_dir / "history.json", start_scores, initial_epoch, latest is not None, is_chief
        )
        every = int(settings["validate_every"])
        callbacks = [
            _NonFiniteLossStop(),
            _Validation(val_ds, every, infer),
            _Throughput(batch_size),
            record,
            _Checkpointer(
                manager,
                parts.epoch,
                parts.best_val_psnr,
                out_dir / "best.keras",
                inference_form,
                is_chief,
            ),
        ]
        if is_chief:
            samples = list(val_ds.take(3))
            callbacks.append(_ImageLogger(out_dir / "logs", samples, every, infer))
            callbacks.append(
                keras.callbacks.TensorBoard(str(out_dir / "logs"), update_freq="epoch")
            )
        start = time.perf_counter()
        with _training_graph_options(generator):
            parts.trainer.fit(
                train_ds,
                epochs=epochs,
                initial_epoch=initial_epoch,
                steps_per_epoch=steps_per_epoch,
                shuffle=False,  # the tf.data pipeline shuffles
                callbacks=callbacks,
                verbose=config.verbose,
            )
        seconds = time.perf_counter() - start

    final_model = inference_form()
    final_path = out_dir / "final.keras"
    if is_chief:
        save_model_atomic(final_model, final_path)
    final_scores = validation_scores(
        final_model, val_ds, infer=infer if final_model is generator else None
    )
    best = float(parts.best_val_psnr.numpy())
    summary = {
        "weights_sha256": _weights_digest(final_model),
        "model": config.model,
        "model_preset": settings["model_preset"],
        "train_preset": train_preset_name(config),
        "loss": settings["loss"],
        "final_model": str(final_path) if is_chief else None,  # the chief writes it
        "epochs": epochs,
        "initial_epoch": initial_epoch,
        "steps_per_epoch": steps_per_epoch,
        "optimizer_iterations": int(optimizer.iterations.numpy()),
        "learning_rate": _current_learning_rate(optimizer),
        "replicas": strategy.num_replicas_in_sync,
        "seconds": seconds,
        "history": record.columns(),
        "val_psnr_blurry": start_scores["blurry_psnr"],
        "val_psnr_untrained": record.untrained_psnr,
        "val_psnr_start": start_scores["psnr"],
        "val_psnr_trained": final_scores["psnr"],
        "val_ssim_trained": final_scores["ssim"],
        "best_val_psnr": best if math.isfinite(best) else None,
    }
    if is_chief:
        write_text_atomic(out_dir / "summary.json", json.dumps(summary, indent=2))
    return summary


class _HistoryRecord(keras.callbacks.Callback):
    """``history.json``: the untrained validation scores and every epoch's logs, kept
    across resumes (chief only writes it; every worker keeps the same record in memory).

    A fresh run records the scores it starts from as the untrained ones. A resumed run
    keeps the recorded untrained scores and the entries of the epochs its checkpoint
    holds (``epoch <= initial_epoch``; a run killed between this record and its
    checkpoint left one entry too many, dropped here). Each epoch's entry is written
    before that epoch's checkpoint (this callback runs before :class:`_Checkpointer`),
    so every checkpoint's epochs are in the record. A resume of a run that has no record
    (written before it existed) has no untrained score (None).
    """

    def __init__(self, path, start_scores, initial_epoch: int, resumed: bool, is_chief: bool):
        super().__init__()
        self.path = pathlib.Path(path)
        self.is_chief = is_chief
        old = {}
        if resumed and self.path.is_file():
            with contextlib.suppress(ValueError, OSError):
                old = json.loads(self.path.read_text())
        if resumed:
            self.untrained_psnr = old.get("val_psnr_untrained")
            self.untrained_ssim = old.get("val_ssim_untrained")
        else:
            self.untrained_psnr = start_scores["psnr"]
            self.untrained_ssim = start_scores["ssim"]
        self.blurry_psnr = start_scores["blurry_psnr"]
        self.entries = [e for e in old.get("epochs", []) if e.get("epoch", 0) <= initial_epoch]
        self._write()

    def _write(self):
        if not self.is_chief:
            return
        record = {
            "val_psnr_blurry": self.blurry_psnr,
            "val_psnr_untrained": self.untrained_psnr,
            "val_ssim_untrained": self.untrained_ssim,
            "epochs": self.entries,
        }
        write_text_atomic(self.path, json.dumps(record, indent=1))

    def on_epoch_end(self, epoch, logs=None):
        entry = {"epoch": epoch + 1}
        entry.update({k: np.asarray(v, np.float64).item() for k, v in (logs or {}).items()})
        self.entries = [e for e in self.entries if e["epoch"] < epoch + 1] + [entry]
        self._write()

    def columns(self) -> dict[str, list]:
        """The record as Keras' ``history.history``: key -> one value per epoch (None
        where an epoch lacks the key, e.g. ``val_psnr`` between validations)."""
        keys = [k for e in self.entries for k in e if k != "epoch"]
        keys = list(dict.fromkeys(keys))
        return {k: [e.get(k) for e in self.entries] for k in keys}


def _weights_digest(model: keras.Model) -> str:
    """SHA-256 of all weights: lets workers of a multi-worker run confirm they agree."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def _is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes checkpoints, logs, ``best.keras`` and ``final.keras``.

    ``strategy.extended.should_checkpoint``: True for the single-process strategies; under
    ``MultiWorkerMirroredStrategy`` it is TensorFlow's ``multi_worker_util.is_chief``, the
    rule that exactly one task writes: the ``chief`` task when the cluster has one, else
    worker 0.
    """
    return bool(strategy.extended.should_checkpoint)


def measure_input_pipeline(config: TrainConfig, steps: int = 20) -> dict[str, float]:
    """Does the tf.data pipeline keep up with training? Times ``steps`` batches of the
    training pipeline alone, and ``steps`` training steps on one already-loaded batch
    (the step :func:`train` runs, built by the same :func:`build_training`, under the
    same dtype policy; the discriminator's step included where there is one).

    Returns:
        ``{"pipeline_batches_per_s", "pipeline_images_per_s", "train_step_s",
        "train_images_per_s", "headroom"}``; ``headroom`` = pipeline rate / training
        rate, which must stay above 1 (with ``prefetch`` the input then costs nothing).

    Raises:
        ValueError: ``steps`` is not a positive integer (``--steps``), or bad settings.
    """
    require_tensorflow("tfdeblur.train.loop.measure_input_pipeline")
    from tfdeblur import data as data_lib

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"--steps must be a positive integer, got {steps!r}.")
    settings = resolve_train_settings(config)
    strategy = make_strategy(config.strategy)
    batch_size = global_batch_size(settings, strategy)
    root = data_lib.resolve_data(config.data)
    train_ds, _, steps_per_epoch = make_datasets(
        settings, root, config, batch_size, decode_check=False
    )

    iterator = iter(train_ds)
    next(iterator)  # start the pipeline's workers
    start = time.perf_counter()
    for _ in range(steps):
        batch = next(iterator)
    pipeline_s = (time.perf_counter() - start) / steps

    with _global_policy(precision_policy(config.mixed_precision)):
        trainer = build_training(config, settings, strategy, steps_per_epoch, steps + 2).trainer
        fixed = tf.data.Dataset.from_tensors(batch).repeat()
        with _training_graph_options(trainer.generator):  # trace
            trainer.fit(fixed, epochs=1, steps_per_epoch=2, verbose=0, shuffle=False)
        start = time.perf_counter()
        trainer.fit(fixed, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
        step_s = (time.perf_counter() - start) / steps
    return {
        "pipeline_batches_per_s": 1.0 / pipeline_s,
        "pipeline_images_per_s": batch_size / pipeline_s,
        "train_step_s": step_s,
        "train_images_per_s": batch_size / step_s,
        "headroom": step_s / pipeline_s,
    }
