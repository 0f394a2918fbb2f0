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
import shutil
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfdeblur import registry
from tfdeblur.fileio import atomic_path
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
    """Adds ``step_s`` and ``images_per_s`` (training steps only, validation excluded) to
    the epoch logs, so the progress line and TensorBoard show input/compute throughput."""

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size = batch_size

    def on_epoch_begin(self, epoch, logs=None):
        self.start, self.steps, self.train_seconds = time.perf_counter(), 0, 0.0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        self.train_seconds = time.perf_counter() - self.start

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.steps:
            logs["step_s"] = self.train_seconds / self.steps
            logs["images_per_s"] = self.steps * self.batch_size / self.train_seconds


class _ImageLogger(keras.callbacks.Callback):
    """Writes blurry | output | sharp strips of a few validation samples to TensorBoard
    after each validation."""

    def __init__(self, log_dir: pathlib.Path, samples, every: int):
        super().__init__()
        self.writer = tf.summary.create_file_writer(str(log_dir / "images"))
        self.samples = samples
        self.every = every
        self.infer = None

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        if self.infer is None:  # graph mode: eager full-frame calls cost seconds each
            self.infer = _inference_function(self.model.generator)
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
    identical on every worker, so every worker computes the same numbers.
    """

    def __init__(self, dataset: tf.data.Dataset, every: int):
        super().__init__()
        self.dataset = dataset
        self.every = every

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or (epoch + 1) % self.every:
            return
        scores = validation_scores(self.model.generator, self.dataset)
        logs["val_psnr"], logs["val_ssim"] = scores["psnr"], scores["ssim"]


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
    """``model.save(path)`` through :func:`tfdeblur.fileio.atomic_path`: a crash never
    leaves a half-written ``.keras`` where a good one was."""
    path = pathlib.Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"Model files must end in .keras, got {path}.")
    with atomic_path(path) as tmp:
        model.save(tmp)
    return path


def _inference_function(model: keras.Model):
    """``model(x, training=False)``'s finest output as a retrace-tolerant ``tf.function``."""

    @tf.function(reduce_retracing=True)
    def infer(x):
        out = model(x, training=False)
        return out[0] if isinstance(out, (list, tuple)) else out

    return infer


def validation_scores(model: keras.Model, dataset: tf.data.Dataset) -> dict[str, float]:
    """Mean PSNR of the blurry input, and mean PSNR and SSIM of the (clamped) model
    output, against the sharp images of a ``(blur, sharp)`` dataset of frames or clips.

    Returns:
        ``{"blurry_psnr", "psnr", "ssim"}``, means over all frames.
    """
    infer = _inference_function(model)
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


def make_datasets(settings: Mapping[str, Any], root, config: TrainConfig, batch_size: int):
    """Training and validation datasets of the preset's kind, checked before training.

    ``data == "images"``: random crops of frame pairs; validation on full test frames.
    ``data == "clips"``: random crops of ``clip_length`` consecutive frames
    (``tfdeblur.data.video``); validation on the test clips with one fixed crop.

    Returns:
        ``(train_ds, val_ds, steps_per_epoch)``; an epoch sees every training pair (or
        clip window) once on average.
    """
    from tfdeblur import data as data_lib

    kind = settings.get("data", "images")
    blur_key = settings.get("blur_key", "blur")
    patch = int(settings["patch_size"])
    augment = dict(settings.get("augment", {}))
    limit = config.max_val_images
    if kind == "images":
        train_pairs = data_lib.find_pairs(root, "train", blur_key)
        val_pairs = data_lib.find_pairs(root, "test", blur_key)[:limit]
        data_lib.validate_pairs(train_pairs, min_size=patch)
        data_lib.validate_pairs(val_pairs)
        train_ds = data_lib.train_dataset(
            train_pairs, batch_size, patch, seed=config.seed, **augment
        )
        return train_ds, data_lib.eval_dataset(val_pairs), max(1, len(train_pairs) // batch_size)
    if kind == "clips":
        from tfdeblur.data import video

        length = int(settings["clip_length"])
        train_seqs = video.find_clips(root, "train", blur_key)
        val_seqs = video.find_clips(root, "test", blur_key)
        data_lib.validate_pairs([p for seq in train_seqs for p in seq], min_size=patch)
        data_lib.validate_pairs([p for seq in val_seqs for p in seq], min_size=patch)
        windows = len(video.clip_windows(train_seqs, length))
        train_ds = video.clip_dataset(
            train_seqs, length, batch_size, patch, flip=augment.get("flip", True), seed=config.seed
        )
        val_ds = video.clip_dataset(
            val_seqs, length, 1, patch, flip=False, seed=0, repeat=False, shuffle=False
        )
        return train_ds, val_ds.take(limit) if limit else val_ds, max(1, windows // batch_size)
    raise ValueError(f"Unknown training data kind {kind!r} (want 'images' or 'clips').")


def train(config: TrainConfig) -> dict[str, Any]:
    """Train ``config.model`` and write checkpoints and ``final.keras`` in ``output_dir``.

    Returns:
        A summary dict: paths, steps, final losses, validation PSNR before/after.
    """
    from tfdeblur import data as data_lib

    settings = resolve_train_settings(config)
    strategy = make_strategy(config.strategy)  # first: multi-worker set-up precedes any op
    keras.utils.set_random_seed(config.seed)
    replicas = strategy.num_replicas_in_sync
    batch_size = int(settings["batch_size"])
    if batch_size % replicas:
        raise ValueError(
            f"--batch-size {batch_size} must divide by the {replicas} replicas of the strategy."
        )

    root = data_lib.resolve_data(config.data)
    train_ds, val_ds, default_steps = make_datasets(settings, root, config, batch_size)
    steps_per_epoch = config.steps_per_epoch or default_steps
    if "iterations" in settings:
        total_steps = int(settings["iterations"])
        epochs = max(1, math.ceil(total_steps / steps_per_epoch))
    else:
        epochs = int(settings["epochs"])
        total_steps = epochs * steps_per_epoch

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

    # Non-chief workers save too (saving is a collective step of the strategy), into a
    # private temporary directory that is removed at the end.
    ckpt_dir = (
        out_dir / "checkpoints"
        if is_chief
        else pathlib.Path(tempfile.mkdtemp(prefix="tfdeblur-worker-"))
    )
    manager = tf.train.CheckpointManager(checkpoint, str(ckpt_dir), config.keep_checkpoints)
    initial_epoch = 0
    if config.resume and manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        initial_epoch = int(epoch_var.numpy())
        print(f"Resumed from {manager.latest_checkpoint} (epoch {initial_epoch}).")
    elif config.resume:
        print(f"--resume: no checkpoint in {ckpt_dir}; starting from scratch.")

    start_scores = validation_scores(generator, val_ds)
    every = max(1, config.validate_every)
    callbacks = [
        _NonFiniteLossStop(),
        _Validation(val_ds, every),
        _Checkpointer(manager, epoch_var, out_dir / "best.keras", is_chief),
    ]
    callbacks.append(_Throughput(batch_size))
    if is_chief:
        samples = list(val_ds.take(3))
        callbacks.append(_ImageLogger(out_dir / "logs", samples, every))
        callbacks.append(keras.callbacks.TensorBoard(str(out_dir / "logs"), update_freq="epoch"))
    start = time.perf_counter()
    history = trainer.fit(
        train_ds,
        epochs=epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=steps_per_epoch,
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
    final_scores = validation_scores(final_model, val_ds)
    summary = {
        "weights_sha256": _weights_digest(final_model),
        "model": config.model,
        "final_model": str(final_path) if is_chief else None,  # the chief writes it
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "replicas": replicas,
        "seconds": seconds,
        "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
        "val_psnr_blurry": start_scores["blurry_psnr"],
        "val_psnr_untrained": start_scores["psnr"],
        "val_psnr_trained": final_scores["psnr"],
        "val_ssim_trained": final_scores["ssim"],
    }
    if is_chief:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    else:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return summary


def _weights_digest(model: keras.Model) -> str:
    """SHA-256 of all weights: lets workers of a multi-worker run confirm they agree."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def _is_chief(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (task_type == "worker" and task_id == 0)


def measure_input_pipeline(config: TrainConfig, steps: int = 20) -> dict[str, float]:
    """Does the tf.data pipeline keep up with training? Times ``steps`` batches of the
    training pipeline alone, and ``steps`` training steps on one already-loaded batch.

    Returns:
        ``{"pipeline_batches_per_s", "pipeline_images_per_s", "train_step_s",
        "train_images_per_s", "headroom"}``; ``headroom`` = pipeline rate / training
        rate, which must stay above 1 (with ``prefetch`` the input then costs nothing).
    """
    from tfdeblur import data as data_lib

    settings = resolve_train_settings(config)
    strategy = make_strategy(config.strategy)
    batch_size = int(settings["batch_size"])
    root = data_lib.resolve_data(config.data)
    train_ds, _, _ = make_datasets(settings, root, config, batch_size)

    iterator = iter(train_ds)
    next(iterator)  # start the pipeline's workers
    start = time.perf_counter()
    for _ in range(steps):
        batch = next(iterator)
    pipeline_s = (time.perf_counter() - start) / steps

    with strategy.scope():
        # The generator's step (the discriminator's, where there is one, is left out).
        terms = {k: v for k, v in settings["loss"].items() if k != "adversarial"}
        loss = DeblurLoss(terms, vgg_weights=config.vgg_weights)
        overrides = {"multi_scale_outputs": True} if loss.multi_scale else {}
        generator = registry.build_model(config.model, config.model_preset, **overrides)
        trainer = DeblurTrainer(generator, loss)
        trainer.compile(optimizer=keras.optimizers.Adam(1e-4))
    fixed = tf.data.Dataset.from_tensors(batch).repeat()
    trainer.fit(fixed, epochs=1, steps_per_epoch=2, verbose=0, shuffle=False)  # trace, warm up
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
