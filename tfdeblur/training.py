"""Training: config -> strategy -> model, optimizer and loss in ``strategy.scope()`` -> fit.

``train.py`` is a thin flag parser over :class:`TrainConfig` and :func:`train`. Every
registered network trains through this one path with its paper preset (see
``tfdeblur.registry`` and the training-preset schema in :func:`resolve_train_settings`).

Distribution: the model, optimizer and loss are built inside ``strategy.scope()``;
``model.fit`` distributes the tf.data pipeline; each replica's loss is its batch mean
divided by the number of replicas, so summed gradients equal those of the global-batch
mean (``tf.nn.compute_average_loss`` semantics) and the learning rate needs no change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import pathlib
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfdeblur import registry
from tfdeblur.losses import DeblurLoss, bce_with_logits
from tfdeblur.metrics import psnr, ssim

logger = logging.getLogger(__name__)

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs besides the model's own configuration.

    Attributes left ``None`` come from the network's training preset (``train_preset``).
    """

    model: str = "lcnet"
    model_preset: str | None = None
    train_preset: str = "paper"
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
    vgg_weights: str = "imagenet"
    validate_every: int = 1
    max_val_images: int | None = None
    keep_checkpoints: int = 3
    resume: bool = False
    mixed_precision: bool = False
    seed: int = 0
    verbose: int = 1

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """A ``tf.distribute`` strategy from its name.

    ``auto``: ``MirroredStrategy`` over all visible GPUs when there are several, else the
    one device. ``one_device``: the first GPU, or the CPU. ``mirrored``: all GPUs, or all
    logical CPU devices when there is no GPU. ``multi_worker``:
    ``MultiWorkerMirroredStrategy`` configured from ``TF_CONFIG``.
    """
    if name not in STRATEGIES:
        raise ValueError(f"--strategy must be one of {STRATEGIES}, got {name!r}.")
    if name == "multi_worker":
        # Must come before anything initialises TensorFlow's runtime (collective ops are
        # configured at start-up), so before any device listing or op.
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy multi_worker needs the TF_CONFIG environment variable.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def resolve_train_settings(config: TrainConfig) -> dict[str, Any]:
    """The network's training preset with the config's explicit values applied.

    Preset schema (plain dict): ``batch_size``, ``patch_size``, ``optimizer`` ("adam"),
    ``learning_rate``, optional ``adam`` ({beta_1, beta_2, epsilon}), ``lr_schedule``
    ({"type": "constant"} | {"type": "step", "step_size", "unit", "factor"} |
    {"type": "multistep", "milestones", "unit", "factor"}, unit "epochs" or
    "iterations"), ``epochs`` or ``iterations``, ``loss`` ({term: weight}),
    ``augment`` ({flip, rotate, channel_shuffle, saturation, noise}), ``blur_key``,
    ``data`` ("images" or "clips") and ``clip_length``.
    """
    settings = registry.get_train_preset(config.model, config.train_preset)
    for key in ("batch_size", "patch_size", "learning_rate", "blur_key", "loss"):
        value = getattr(config, key)
        if value is not None:
            settings[key] = value
    if config.epochs is not None:
        settings["epochs"] = config.epochs
        settings.pop("iterations", None)
    if config.iterations is not None:
        settings["iterations"] = config.iterations
        settings.pop("epochs", None)
    for key in ("batch_size", "patch_size"):
        if int(settings[key]) < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be positive, got {settings[key]}.")
    return settings


def make_lr_schedule(settings: Mapping[str, Any], steps_per_epoch: int, total_steps: int):
    """A step-indexed Keras learning-rate schedule from the preset's ``lr_schedule``."""
    lr = float(settings["learning_rate"])
    spec = dict(settings.get("lr_schedule") or {"type": "constant"})
    kind = spec.get("type", "constant")
    if kind == "constant":
        return lr
    per_unit = steps_per_epoch if spec.get("unit", "epochs") == "epochs" else 1
    if kind == "step":
        step = int(spec["step_size"]) * per_unit
        boundaries = list(range(step, max(total_steps, step + 1), step))
    elif kind == "multistep":
        boundaries = [int(m) * per_unit for m in spec["milestones"]]
    else:
        raise ValueError(f"Unknown lr_schedule type {kind!r}.")
    if not boundaries:
        return lr
    factor = float(spec["factor"])
    values = [lr * factor**i for i in range(len(boundaries) + 1)]
    # The schedule sees the number of finished steps and keeps values[i] while
    # step <= boundary: shift by one so step ``b`` (the first of the new stage) decays.
    return keras.optimizers.schedules.PiecewiseConstantDecay([b - 1 for b in boundaries], values)


class DeblurTrainer(keras.Model):
    """Wraps a deblurring network for ``fit``: loss terms, validation PSNR/SSIM.

    The wrapped ``generator`` is what gets saved; this wrapper only holds the training
    step. Validation reports PSNR/SSIM of the finest output against the sharp image.
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
        self.psnr_tracker = keras.metrics.Mean(name="psnr")
        self.ssim_tracker = keras.metrics.Mean(name="ssim")
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
        # ("Attempt to convert a value (PerReplica...)"). Nothing needs building here: the
        # generator is a built functional model, the optimizers are built before fit and
        # there are no compiled losses or metrics.
        return

    @property
    def metrics(self):
        return [*self.loss_trackers.values(), self.psnr_tracker, self.ssim_tracker]

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
        self.optimizer.apply_gradients(zip(gradients, variables))
        if adversarial:
            # Discriminator step on the same batch (DeepDeblur sec. 3.3, trained jointly).
            fake = tf.stop_gradient(finest)
            d_variables = self.discriminator.trainable_variables
            with tf.GradientTape() as tape:
                d_loss = bce_with_logits(self.discriminator(fake, training=True), 0.0) + bce_with_logits(
                    self.discriminator(sharp, training=True), 1.0
                )
                d_scaled = self.d_optimizer.scale_loss(d_loss / replicas)
            d_gradients = tape.gradient(d_scaled, d_variables)
            self.d_optimizer.apply_gradients(zip(d_gradients, d_variables))
            self.loss_trackers["d_loss"].update_state(d_loss)
        self.loss_trackers["loss"].update_state(loss)
        for name, value in terms.items():
            self.loss_trackers[name].update_state(value)
        return self._report({name: t.result() for name, t in self.loss_trackers.items()})

    def test_step(self, data):
        blur, sharp = data
        prediction = self.generator(blur, training=False)
        if isinstance(prediction, (list, tuple)):
            prediction = prediction[0]
        prediction = tf.clip_by_value(tf.cast(prediction, tf.float32), 0.0, 1.0)
        self.psnr_tracker.update_state(psnr(prediction, sharp))
        self.ssim_tracker.update_state(ssim(prediction, sharp))
        return self._report({"psnr": self.psnr_tracker.result(), "ssim": self.ssim_tracker.result()})


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


class _Checkpointer(keras.callbacks.Callback):
    """Saves generator + optimizer + epoch with ``tf.train.CheckpointManager`` after each
    epoch (TensorFlow writes the checkpoint index last, so an interrupted save is never
    picked as the latest), and the best-PSNR generator as ``best.keras`` (atomic)."""

    def __init__(self, manager, epoch_var, best_path: pathlib.Path, is_chief: bool):
        super().__init__()
        self.manager = manager
        self.epoch_var = epoch_var
        self.best_path = best_path
        self.is_chief = is_chief
        self.best = -math.inf

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_var.assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)
        val = (logs or {}).get("val_psnr")
        if val is not None and val > self.best and self.is_chief:
            self.best = float(val)
            save_model_atomic(self.model.generator, self.best_path)


def save_model_atomic(model: keras.Model, path: str | os.PathLike) -> pathlib.Path:
    """``model.save(path)`` through a temporary file and ``os.replace``: a crash never
    leaves a half-written ``.keras`` where a good one was."""
    path = pathlib.Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"Model files must end in .keras, got {path}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".keras", dir=path.parent, prefix=f".{path.stem}-")
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def evaluate_psnr(model: keras.Model, pairs, limit: int | None = None) -> tuple[float, float]:
    """Mean PSNR of the blurry input and of the model's output against the sharp images."""
    from tfdeblur.data import load_pair

    before, after = [], []
    for pair in pairs[:limit] if limit else pairs:
        blur, sharp = load_pair(pair)
        out = model(blur[None], training=False)
        out = out[0] if isinstance(out, (list, tuple)) else out
        out = np.clip(np.asarray(out, dtype=np.float32)[0], 0.0, 1.0)
        before.append(float(psnr(blur, sharp)))
        after.append(float(psnr(out, sharp)))
    return float(np.mean(before)), float(np.mean(after))


def train(config: TrainConfig) -> dict[str, Any]:
    """Train ``config.model`` and write checkpoints and ``final.keras`` in ``output_dir``.

    Returns:
        A summary dict: paths, steps, final losses, validation PSNR before/after.
    """
    from tfdeblur import data as data_lib

    settings = resolve_train_settings(config)
    if settings.get("data", "images") != "images":
        raise ValueError(
            f"Model {config.model!r} trains on {settings['data']!r} data, which this "
            "trainer does not handle yet."
        )
    strategy = make_strategy(config.strategy)  # first: multi-worker set-up precedes any op
    keras.utils.set_random_seed(config.seed)
    replicas = strategy.num_replicas_in_sync
    batch_size = int(settings["batch_size"])
    if batch_size % replicas:
        raise ValueError(
            f"--batch-size {batch_size} must divide by the {replicas} replicas of the strategy."
        )

    root = data_lib.resolve_data(config.data)
    blur_key = settings.get("blur_key", "blur")
    train_pairs = data_lib.find_pairs(root, "train", blur_key)
    val_pairs = data_lib.find_pairs(root, "test", blur_key)
    data_lib.validate_pairs(train_pairs, min_size=int(settings["patch_size"]))
    data_lib.validate_pairs(val_pairs)
    if config.max_val_images:
        val_pairs = val_pairs[: config.max_val_images]

    steps_per_epoch = config.steps_per_epoch or max(1, len(train_pairs) // batch_size)
    if "iterations" in settings:
        total_steps = int(settings["iterations"])
        epochs = max(1, math.ceil(total_steps / steps_per_epoch))
    else:
        epochs = int(settings["epochs"])
        total_steps = epochs * steps_per_epoch

    augment = settings.get("augment", {})
    train_ds = data_lib.train_dataset(
        train_pairs,
        batch_size,
        int(settings["patch_size"]),
        seed=config.seed,
        **augment,
    )
    val_ds = data_lib.eval_dataset(val_pairs)

    out_dir = pathlib.Path(config.output_dir)
    is_chief = _is_chief(strategy)
    if is_chief:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "train_config.json").write_text(config.to_json())
        (out_dir / "train_settings.json").write_text(json.dumps(settings, indent=2))

    previous_policy = keras.mixed_precision.global_policy()
    if config.mixed_precision:
        # float16 with loss scaling where tensor cores are; bfloat16 (no scaling needed)
        # on CPUs. Losses are computed in float32 either way.
        gpu = bool(tf.config.list_logical_devices("GPU"))
        keras.mixed_precision.set_global_policy("mixed_float16" if gpu else "mixed_bfloat16")

    with strategy.scope():
        loss = DeblurLoss(settings["loss"], vgg_weights=config.vgg_weights)
        overrides = {"multi_scale_outputs": True} if loss.multi_scale else {}
        generator = registry.build_model(config.model, config.model_preset, **overrides)
        schedule = make_lr_schedule(settings, steps_per_epoch, total_steps)
        adam = settings.get("adam", {})
        optimizer = keras.optimizers.Adam(learning_rate=schedule, **adam)
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
        trainer.compile(optimizer=optimizer)
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            trainer.use_multi_worker_reduction()
        optimizer.build(generator.trainable_variables)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        checkpoint = tf.train.Checkpoint(
            model=generator, optimizer=optimizer, epoch=epoch_var, **extra
        )

    ckpt_dir = out_dir / "checkpoints" if is_chief else out_dir / f".worker-{_task_id()}"
    manager = tf.train.CheckpointManager(checkpoint, str(ckpt_dir), config.keep_checkpoints)
    initial_epoch = 0
    if config.resume and manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        initial_epoch = int(epoch_var.numpy())
        print(f"Resumed from {manager.latest_checkpoint} (epoch {initial_epoch}).")
    elif config.resume:
        print(f"--resume: no checkpoint in {ckpt_dir}; starting from scratch.")

    before_psnr, start_psnr = evaluate_psnr(generator, val_pairs)
    callbacks = [
        _NonFiniteLossStop(),
        _Checkpointer(manager, epoch_var, out_dir / "best.keras", is_chief),
    ]
    if is_chief:
        callbacks.append(keras.callbacks.TensorBoard(str(out_dir / "logs"), update_freq="epoch"))
    start = time.perf_counter()
    history = trainer.fit(
        train_ds,
        epochs=epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=steps_per_epoch,
        validation_data=val_ds,
        validation_freq=max(1, config.validate_every),
        shuffle=False,  # the tf.data pipeline shuffles
        callbacks=callbacks,
        verbose=config.verbose,
    )
    seconds = time.perf_counter() - start

    keras.mixed_precision.set_global_policy(previous_policy)
    final_model = generator
    if loss.multi_scale or config.mixed_precision:
        # Save the inference form (finest output only, float32) with the trained weights.
        final_model = registry.build_model(config.model, config.model_preset)
        final_model.set_weights(generator.get_weights())
    final_path = out_dir / "final.keras"
    if is_chief:
        save_model_atomic(final_model, final_path)
    _, after_psnr = evaluate_psnr(final_model, val_pairs)
    summary = {
        "weights_sha256": _weights_digest(final_model),
        "model": config.model,
        "final_model": str(final_path),
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "replicas": replicas,
        "seconds": seconds,
        "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
        "val_psnr_blurry": before_psnr,
        "val_psnr_untrained": start_psnr,
        "val_psnr_trained": after_psnr,
    }
    if is_chief:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _weights_digest(model: keras.Model) -> str:
    """SHA-256 of all weights: lets workers of a multi-worker run confirm they agree."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def _task_id() -> int:
    return int(json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index", 0))


def _is_chief(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (task_type == "worker" and task_id == 0)
