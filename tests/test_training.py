"""The trainer: distributed step equivalence, schedules, an end-to-end run, resume, bad input."""

import json
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdeblur
from tfdeblur.train import loop as training
from tfdeblur.train.loop import (
    DeblurTrainer,
    TrainConfig,
    make_lr_schedule,
    make_strategy,
    measure_input_pipeline,
    resolve_train_settings,
    train,
)
from tfdeblur.train.losses import KNOWN_TERMS, DeblurLoss

REPO = pathlib.Path(__file__).resolve().parents[1]


def write_gopro_tree(root, sequences=2, frames=3, size=(40, 48), seed=0):
    """A tiny GOPRO_Large-layout tree: blur = a box-blurred copy of a random sharp image."""
    import imageio.v3 as iio

    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for s in range(sequences if split == "train" else 1):
            seq = root / split / f"GOPR{s:04d}_{split}"
            for key in ("blur", "blur_gamma", "sharp"):
                (seq / key).mkdir(parents=True, exist_ok=True)
            for f in range(frames):
                sharp = rng.uniform(size=(*size, 3))
                blur = (sharp + np.roll(sharp, 1, 1) + np.roll(sharp, 2, 1)) / 3
                name = f"{f:06d}.png"
                iio.imwrite(seq / "sharp" / name, (sharp * 255).round().astype(np.uint8))
                for key in ("blur", "blur_gamma"):
                    iio.imwrite(seq / key / name, (blur * 255).round().astype(np.uint8))
    return root


def _train_steps(strategy, weights, blur, sharp, steps=3):
    """``steps`` Adam steps, one global batch each; returns final weights and per-step losses."""
    with strategy.scope():
        model = tfdeblur.build_model("lcnet", preset="tiny")
        model.set_weights(weights)
        trainer = DeblurTrainer(model, DeblurLoss({"l1": 1.0}))
        trainer.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-2))
    batch = len(blur) // steps
    ds = tf.data.Dataset.from_tensor_slices((blur, sharp)).batch(batch).repeat()
    history = trainer.fit(ds, epochs=steps, steps_per_epoch=1, verbose=0, shuffle=False)
    return model.get_weights(), history.history["loss"]


def test_mirrored_on_two_cpus_follows_the_single_device_trajectory():
    assert len(tf.config.list_logical_devices("CPU")) == 2
    rng = np.random.default_rng(0)
    blur = rng.uniform(size=(12, 16, 16, 3)).astype(np.float32)
    sharp = rng.uniform(size=(12, 16, 16, 3)).astype(np.float32)
    weights = tfdeblur.build_model("lcnet", preset="tiny").get_weights()

    mirrored = make_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2
    w_one, loss_one = _train_steps(make_strategy("one_device"), weights, blur, sharp)
    w_two, loss_two = _train_steps(mirrored, weights, blur, sharp)
    np.testing.assert_allclose(loss_two, loss_one, rtol=1e-4)
    assert loss_one[2] < loss_one[0]  # the steps did something
    for a, b in zip(w_one, w_two, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize(
    "tf_config, match",
    [
        (None, "needs the TF_CONFIG environment variable"),
        ("{not json", "TF_CONFIG is not valid JSON"),
        ('{"task": {"type": "worker", "index": 0}}', "needs a 'cluster'"),
        ('{"cluster": {"worker": "127.0.0.1:1"}, "task": {}}', r"cluster\['worker'\]"),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}}', "needs a 'task'"),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "ps"}}', "needs a 'task'"),
        (
            '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}',
            r"index must be an int in \[0, 1\)",
        ),
    ],
)
def test_missing_or_malformed_tf_config_is_a_clear_error(monkeypatch, tf_config, match):
    """Checked before MultiWorkerMirroredStrategy reads it (nothing is started)."""
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=match):
        make_strategy("multi_worker")
    good = (
        '{"cluster": {"chief": ["h:1"], "worker": ["h:2"]}, "task": {"type": "chief", "index": 0}}'
    )
    assert training.check_tf_config(good)["task"] == {"type": "chief", "index": 0}


def test_step_schedule_boundaries():
    settings = {
        "learning_rate": 1e-3,
        "lr_schedule": {"type": "step", "step_size": 2, "unit": "epochs", "factor": 0.1},
    }
    schedule = make_lr_schedule(settings, steps_per_epoch=5, total_steps=30)
    values = [float(schedule(s)) for s in (0, 9, 10, 19, 20, 29)]
    np.testing.assert_allclose(values, [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5], rtol=1e-6)
    multistep = {
        "learning_rate": 1.0,
        "lr_schedule": {
            "type": "multistep",
            "milestones": [3, 7],
            "unit": "iterations",
            "factor": 0.5,
        },
    }
    schedule = make_lr_schedule(multistep, steps_per_epoch=100, total_steps=10)
    assert [float(schedule(s)) for s in (2, 3, 6, 7)] == [1.0, 0.5, 0.5, 0.25]


def test_settings_take_preset_then_flags():
    settings = resolve_train_settings(TrainConfig(model="lcnet", data="/data/GOPRO_Large"))
    assert settings["batch_size"] == 32 and settings["patch_size"] == 200
    assert settings["loss"] == {"l1": 1.0, "perceptual": 0.1}
    assert settings["model_preset"] == "paper" and settings["validate_every"] == 10
    settings = resolve_train_settings(TrainConfig(model="lcnet", batch_size=4, iterations=7))
    assert settings["batch_size"] == 4 and settings["iterations"] == 7 and "epochs" not in settings
    # --data demo picks the demo recipe; a demo recipe may name a model preset, which
    # --model-preset overrides.
    assert resolve_train_settings(TrainConfig(model="lcnet"))["batch_size"] == 8
    demo = resolve_train_settings(TrainConfig(model="deepdeblur"))
    assert demo["model_preset"] == "tiny" and demo["loss"] == {"multiscale_l1": 1.0}
    paper_model = resolve_train_settings(TrainConfig(model="deepdeblur", model_preset="k2"))
    assert paper_model["model_preset"] == "k2" and paper_model["batch_size"] == demo["batch_size"]
    assert (
        resolve_train_settings(TrainConfig(model="lcnet", vgg_layer="block2_conv2"))[
            "perceptual_layer"
        ]
        == "block2_conv2"
    )
    with pytest.raises(KeyError, match="nosuch"):
        resolve_train_settings(TrainConfig(model="lcnet", model_preset="nosuch"))


def test_multi_scale_loss_needs_a_patch_multiple_of_two_to_the_k_minus_1():
    base = dict(model="deepdeblur", model_preset="tiny", data="/nowhere")
    assert resolve_train_settings(TrainConfig(**base, patch_size=36))["patch_size"] == 36
    with pytest.raises(ValueError, match=r"--patch-size 30 must be a multiple of 4"):
        resolve_train_settings(TrainConfig(**base, patch_size=30))
    with pytest.raises(ValueError, match=r"--patch-size 33 must be a multiple of 2 .*K = 2"):
        resolve_train_settings(TrainConfig(**{**base, "model_preset": "k2"}, patch_size=33))
    assert resolve_train_settings(TrainConfig(**{**base, "model_preset": "k1"}, patch_size=33))
    with pytest.raises(ValueError, match="needs a multi-scale model"):
        resolve_train_settings(TrainConfig(model="lcnet", loss={"multiscale_l1": 1.0}))


def test_chief_is_the_chief_task_else_worker_0():
    """``_is_chief`` is ``strategy.extended.should_checkpoint``, which
    MultiWorkerMirroredStrategy takes from ``multi_worker_util.is_chief``: with a "chief"
    task in the cluster only it writes; without one, worker 0 does. Exactly one writer."""
    from tensorflow.python.distribute import multi_worker_util

    def writers(cluster):
        tasks = [(kind, i) for kind, hosts in cluster.items() for i in range(len(hosts))]
        return [t for t in tasks if multi_worker_util.is_chief(cluster, *t)]

    with_chief = {"chief": ["h0:1"], "worker": ["h1:1", "h2:1"]}
    assert writers(with_chief) == [("chief", 0)]
    assert writers({"worker": ["h0:1", "h1:1", "h2:1"]}) == [("worker", 0)]
    assert training._is_chief(make_strategy("one_device"))
    assert training._is_chief(make_strategy("mirrored"))


def _halving_schedule(monkeypatch, model="lcnet", preset="demo"):
    """The model's ``preset`` with the learning rate halved every epoch (for the tests only)."""
    presets = tfdeblur.get_spec(model).train_presets
    schedule = {"type": "step", "step_size": 1, "unit": "epochs", "factor": 0.5}
    monkeypatch.setitem(presets, preset, {**presets[preset], "lr_schedule": schedule})


def test_train_end_to_end_then_resume(tmp_path, monkeypatch):
    _halving_schedule(monkeypatch)
    skips = []  # the stream position each run's training pipeline starts at
    real_train_dataset = tfdeblur.data.train_dataset

    def spy(*args, **kwargs):
        skips.append(kwargs["skip"])
        return real_train_dataset(*args, **kwargs)

    monkeypatch.setattr(tfdeblur.data, "train_dataset", spy)
    root = write_gopro_tree(tmp_path / "gopro")
    out = tmp_path / "run"
    config = TrainConfig(
        model="lcnet",
        model_preset="tiny",
        train_preset="demo",
        data=str(root),
        output_dir=str(out),
        strategy="one_device",
        batch_size=2,
        patch_size=32,
        learning_rate=0.01,
        epochs=2,
        steps_per_epoch=2,
        verbose=0,
    )
    summary = train(config)
    assert (out / "final.keras").is_file() and (out / "best.keras").is_file()
    assert json.loads((out / "train_config.json").read_text())["model"] == "lcnet"
    assert len(summary["history"]["loss"]) == 2
    assert all(np.isfinite(summary["history"]["loss"]))
    assert "val_psnr" in summary["history"]
    assert all(v > 0 for v in summary["history"]["images_per_s"])
    assert list((out / "logs" / "images").glob("events.out.tfevents.*"))  # before/after strips
    # The saved final model reproduces the in-memory evaluation.
    final = keras.models.load_model(out / "final.keras", safe_mode=True)
    assert final.count_params() == tfdeblur.build_model("lcnet", preset="tiny").count_params()
    # 4 steps; the rate halves at every epoch boundary inside the run (step 2 of 0..3),
    # the logged rate being the next step's.
    assert summary["optimizer_iterations"] == 4
    assert summary["history"]["learning_rate"] == pytest.approx([0.005, 0.005])

    config.epochs, config.resume = 3, True
    resumed = train(config)
    # Only epoch 3 was left to run; the history holds all three (history.json).
    assert len(resumed["history"]["loss"]) == 3
    assert resumed["history"]["loss"][:2] == summary["history"]["loss"]
    ckpt = tf.train.latest_checkpoint(str(out / "checkpoints"))
    assert ckpt.endswith("-3")
    # The optimizer's step count and the schedule carry on from the checkpoint: epoch 3
    # (steps 4 and 5) runs at 0.01 / 4; a fresh optimizer would stand at 2 iterations and
    # 0.005. The data stream continues after the 2 epochs x 2 steps x 2 patches seen.
    assert resumed["initial_epoch"] == 2 and resumed["optimizer_iterations"] == 6
    assert resumed["history"]["learning_rate"] == pytest.approx([0.005, 0.005, 0.0025])
    assert skips == [0, 8]
    # So the interrupted run ends where an uninterrupted one does (same seed: same data,
    # same steps; bit-identical on this CPU, compared with a tolerance).
    config.output_dir, config.resume = str(tmp_path / "uninterrupted"), False
    uninterrupted = train(config)
    assert uninterrupted["history"]["loss"][2] == pytest.approx(resumed["history"]["loss"][2])
    resumed_model = keras.models.load_model(out / "final.keras", safe_mode=True)
    whole_model = keras.models.load_model(tmp_path / "uninterrupted" / "final.keras")
    for a, b in zip(resumed_model.get_weights(), whole_model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_resume_keeps_the_best_validation_psnr(tmp_path, monkeypatch):
    """A resumed run knows the best PSNR so far: a worse epoch after ``--resume`` leaves
    ``best.keras`` alone (a run that forgot it would start from -inf and overwrite it)."""
    root = write_gopro_tree(tmp_path / "gopro")
    out = tmp_path / "run"
    config = TrainConfig(
        model="lcnet", model_preset="tiny", train_preset="demo", data=str(root),
        output_dir=str(out), strategy="one_device", batch_size=2, patch_size=32,
        epochs=1, steps_per_epoch=1, max_val_images=1, verbose=0,
    )  # fmt: skip
    first = train(config)
    best = out / "best.keras"
    saved = best.read_bytes()
    assert first["best_val_psnr"] == pytest.approx(first["history"]["val_psnr"][0])

    def worse(model, dataset, *, infer=None):  # every later epoch validates lower
        return {"blurry_psnr": 1.0, "psnr": first["best_val_psnr"] - 5.0, "ssim": 0.1}

    monkeypatch.setattr(training, "validation_scores", worse)
    config.epochs, config.resume = 2, True
    resumed = train(config)
    assert resumed["history"]["val_psnr"] == [
        pytest.approx(first["best_val_psnr"]),
        pytest.approx(first["best_val_psnr"] - 5.0),
    ]
    assert resumed["best_val_psnr"] == pytest.approx(first["best_val_psnr"])
    assert best.read_bytes() == saved
    ckpt = tf.train.latest_checkpoint(str(out / "checkpoints"))
    assert tf.train.load_variable(ckpt, "best_val_psnr/.ATTRIBUTES/VARIABLE_VALUE") == (
        pytest.approx(first["best_val_psnr"])
    )


def test_resumed_pipeline_continues_the_random_stream(tmp_path):
    from tfdeblur.data import find_pairs, train_dataset

    pairs = find_pairs(write_gopro_tree(tmp_path / "gopro", size=(24, 24)), "train", "blur")
    assert len(pairs) == 6  # 2 steps of 2 per epoch below: the stream wraps mid-epoch 2
    options = dict(batch_size=2, patch_size=16, seed=3, saturation=True, noise=True)
    uninterrupted = [b for b, _ in train_dataset(pairs, **options).take(7)]
    resumed = [b for b, _ in train_dataset(pairs, skip=5 * 2, **options).take(2)]
    np.testing.assert_array_equal(resumed[0], uninterrupted[5])
    np.testing.assert_array_equal(resumed[1], uninterrupted[6])
    assert not np.array_equal(uninterrupted[0], uninterrupted[5])
    with pytest.raises(ValueError, match="skip"):
        train_dataset(pairs, skip=-1, **options)


def test_multi_scale_best_and_final_are_saved_in_inference_form(tmp_path):
    """DeepDeblur trains on its multi-scale outputs; ``best.keras`` and ``final.keras``
    hold the float32 model with the finest output only (here also under bfloat16)."""
    root = write_gopro_tree(tmp_path / "gopro")
    out = tmp_path / "dd"
    config = TrainConfig(
        model="deepdeblur", train_preset="demo", data=str(root), output_dir=str(out),
        strategy="one_device", batch_size=2, patch_size=32, epochs=1, steps_per_epoch=1,
        max_val_images=1, mixed_precision="mixed_bfloat16", verbose=0,
    )  # fmt: skip
    summary = train(config)
    assert summary["model_preset"] == "tiny"  # named by the demo training preset
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    x = np.random.default_rng(0).uniform(size=(1, 24, 20, 3)).astype("float32")
    for name in ("best.keras", "final.keras"):
        model = keras.models.load_model(out / name, safe_mode=True)
        assert len(model.outputs) == 1, name
        assert model.dtype_policy.name == "float32" and all(
            w.dtype == "float32" for w in model.weights
        )
        y = model(x)
        assert y.shape == (1, 24, 20, 3) and y.dtype == "float32"


def test_mixed_float16_checkpoints_the_loss_scale_and_resumes(tmp_path):
    """Under mixed_float16 the trainer steps with a LossScaleOptimizer; the checkpoint
    holds it, so the dynamic loss scale survives a resume, and the global policy is
    restored after a run, also one that fails."""
    from tfdeblur.train.loop import build_training

    root = write_gopro_tree(tmp_path / "gopro")
    out = tmp_path / "fp16"
    config = TrainConfig(
        model="lcnet", model_preset="tiny", train_preset="demo", data=str(root),
        output_dir=str(out), strategy="one_device", batch_size=2, patch_size=32,
        epochs=1, steps_per_epoch=2, max_val_images=1, mixed_precision="mixed_float16",
        verbose=0,
    )  # fmt: skip
    settings = resolve_train_settings(config)
    strategy = make_strategy("one_device")
    with training._global_policy("mixed_float16"):
        parts = build_training(config, settings, strategy, 2, 2)
        optimizer = parts.trainer.optimizer
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        optimizer.dynamic_scale.assign(123.0)
        optimizer.iterations.assign(7)
        path = parts.checkpoint.save(str(tmp_path / "unit" / "ckpt"))
        fresh = build_training(config, settings, strategy, 2, 2)
        fresh.checkpoint.restore(path).assert_existing_objects_matched()
        assert float(fresh.trainer.optimizer.dynamic_scale.numpy()) == 123.0
        assert int(fresh.trainer.optimizer.iterations.numpy()) == 7
    assert keras.mixed_precision.global_policy().name == "float32"

    first = train(config)
    assert keras.mixed_precision.global_policy().name == "float32"
    config.epochs, config.resume = 2, True
    resumed = train(config)
    assert resumed["initial_epoch"] == 1 and np.isfinite(resumed["history"]["loss"]).all()
    # Steps with overflowing float16 gradients are skipped (and halve the scale): the
    # count goes on from the first run's, whatever it was.
    assert first["optimizer_iterations"] <= resumed["optimizer_iterations"] <= 4
    # ... and steps did run: the resumed epoch applied updates (a resume that restored
    # and stepped nothing, e.g. every step skipped, would leave these equal).
    assert resumed["optimizer_iterations"] > first["optimizer_iterations"] >= 1
    assert resumed["weights_sha256"] != first["weights_sha256"]
    ckpt = tf.train.latest_checkpoint(str(out / "checkpoints"))
    assert "optimizer/dynamic_scale/.ATTRIBUTES/VARIABLE_VALUE" in dict(
        tf.train.list_variables(ckpt)
    )
    # Resuming it in float32 (no loss-scale optimizer) is refused with a clear message.
    config.mixed_precision = False
    with pytest.raises(ValueError, match="does not match this run.*--mixed-precision"):
        train(config)
    config.mixed_precision = "mixed_float16"
    config.loss, config.resume, config.overwrite = {"l1": float("inf")}, False, True
    with pytest.raises(FloatingPointError):
        train(config)
    assert keras.mixed_precision.global_policy().name == "float32"


def test_bad_input_fails_fast_with_names(tmp_path):
    root = write_gopro_tree(tmp_path / "gopro", size=(24, 24))
    base = dict(
        model="lcnet",
        model_preset="tiny",
        train_preset="demo",
        output_dir=str(tmp_path / "o"),
        verbose=0,
    )
    with pytest.raises(KeyError, match="nosuch"):
        train(TrainConfig(**{**base, "model": "nosuch"}, data=str(root)))
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        train(TrainConfig(**base, data=str(tmp_path / "missing_dir")))
    with pytest.raises(ValueError, match="replicas"):
        train(TrainConfig(**base, data=str(root), strategy="mirrored", batch_size=3))
    with pytest.raises(ValueError, match="24"):  # patch larger than the images
        train(TrainConfig(**base, data=str(root), patch_size=64, batch_size=2))


def test_train_py_command_line(tmp_path):
    root = write_gopro_tree(tmp_path / "gopro")
    out = tmp_path / "cli_run"
    cmd = [
        sys.executable,
        str(REPO / "train.py"),
        "--model",
        "lcnet",
        "--model-preset",
        "tiny",
        "--train-preset",
        "demo",
        "--data",
        str(root),
        "--output-dir",
        str(out),
        "--epochs",
        "1",
        "--steps-per-epoch",
        "1",
        "--batch-size",
        "2",
        "--patch-size",
        "32",
        "--verbose",
        "0",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Validation PSNR" in result.stdout and (out / "final.keras").is_file()
    bad = subprocess.run(
        cmd[:3] + ["nosuchnet", "--data", str(root)], capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 2 and "nosuchnet" in bad.stderr and "lcnet" in bad.stderr


def test_discriminator_follows_table1():
    from tfdeblur.models.discriminator import build_discriminator

    table1 = [
        (32, 3, 5),
        (64, 32, 5),
        (64, 64, 5),
        (128, 64, 5),
        (128, 128, 5),
        (256, 128, 5),
        (256, 256, 5),
        (512, 256, 5),
        (512, 512, 4),
        (1, 512, 1),
    ]
    d = build_discriminator()
    assert d.count_params() == sum(o * i * k * k for o, i, k in table1)
    assert d(np.zeros((2, 256, 256, 3), np.float32)).shape == (2, 1, 1, 1)


def test_adversarial_step_updates_generator_and_discriminator():
    from tfdeblur.models.discriminator import build_discriminator

    rng = np.random.default_rng(0)
    blur = rng.uniform(size=(2, 32, 32, 3)).astype(np.float32)
    sharp = rng.uniform(size=(2, 32, 32, 3)).astype(np.float32)
    generator = tfdeblur.build_model("lcnet", preset="tiny")
    discriminator = build_discriminator(width_scale=0.125)
    g0, d0 = generator.get_weights(), discriminator.get_weights()
    trainer = DeblurTrainer(
        generator,
        DeblurLoss({"l1": 1.0, "adversarial": 1e-2}),
        discriminator,
        keras.optimizers.Adam(1e-3),
    )
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    logs = trainer.fit(
        tf.data.Dataset.from_tensors((blur, sharp)), epochs=1, verbose=0, shuffle=False
    ).history
    assert {"l1", "adversarial", "d_loss"} <= set(logs)
    # Initial D is near chance: generator BCE ~ log 2, D loss ~ 2 log 2.
    assert logs["adversarial"][0] / 1e-2 == pytest.approx(np.log(2), abs=0.2)
    assert logs["d_loss"][0] == pytest.approx(2 * np.log(2), abs=0.4)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(g0, generator.get_weights(), strict=True))
    assert any(
        np.abs(a - b).max() > 0 for a, b in zip(d0, discriminator.get_weights(), strict=True)
    )
    with pytest.raises(ValueError, match="discriminator"):
        DeblurTrainer(generator, DeblurLoss({"adversarial": 1e-4, "l1": 1.0}))


@pytest.mark.parametrize("name", tfdeblur.list_models())
def test_every_network_trains_through_train_py_on_demo_data(name, tmp_path, capsys):
    """The literal ``python train.py --model NAME --data demo`` (its demo training preset,
    which names the model preset), cut to one step and one validation frame by flags that
    change nothing else; then the final model reloads."""
    from train import main

    out = tmp_path / name
    code = main(
        ["--model", name, "--data", "demo"]
        + ["--epochs", "1", "--steps-per-epoch", "1", "--max-val-images", "1"]
        + ["--output-dir", str(out)]
    )
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    demo = tfdeblur.get_train_preset(name, "demo")
    model_preset = demo.get("model_preset", "paper")
    assert summary["train_preset"] == "demo" and summary["model_preset"] == model_preset
    assert summary["optimizer_iterations"] == 1
    assert np.isfinite(summary["history"]["loss"]).all()
    settings = json.loads((out / "train_settings.json").read_text())
    assert settings["batch_size"] == demo["batch_size"] and settings["loss"] == demo["loss"]
    final = keras.models.load_model(out / "final.keras", safe_mode=True)
    assert final.count_params() == tfdeblur.build_model(name, model_preset).count_params()


def test_input_pipeline_measurement_and_a_missing_vgg_file(tmp_path):
    root = write_gopro_tree(tmp_path / "gopro")
    config = TrainConfig(
        model="lcnet",
        model_preset="tiny",
        data=str(root),
        strategy="one_device",
        batch_size=2,
        patch_size=32,
        vgg_weights=str(tmp_path / "missing_vgg.h5"),
    )
    # The paper loss has a perceptual term; a missing weights file names the file.
    with pytest.raises(FileNotFoundError, match="missing_vgg.h5"):
        DeblurLoss({"l1": 1.0, "perceptual": 0.1}, vgg_weights=config.vgg_weights)
    config.loss = {"l1": 1.0}
    result = measure_input_pipeline(config, steps=3)
    assert result["pipeline_images_per_s"] > 0 and result["train_step_s"] > 0
    assert result["headroom"] == pytest.approx(
        result["train_step_s"] * result["pipeline_batches_per_s"], rel=1e-6
    )


def test_paper_recipe_without_vgg_weights_refuses_to_start(tmp_path, monkeypatch):
    """LCNet's paper loss has a perceptual term: without the VGG-19 weights the run stops
    before anything is written, naming both ways on; it never drops the term itself."""
    from tfdeblur.train.losses import VGGWeightsUnavailable

    def offline(*args, **kwargs):  # what keras raises when the download fails
        raise Exception(
            "URL fetch failure on https://storage.googleapis.com/...: Name or service not known"
        )

    monkeypatch.setattr(keras.applications, "VGG19", offline)
    with pytest.raises(VGGWeightsUnavailable, match=r"--vgg-weights FILE.*--loss l1=1"):
        DeblurLoss({"l1": 1.0, "perceptual": 0.1})
    root = write_gopro_tree(tmp_path / "gopro")
    out = tmp_path / "paper"
    config = TrainConfig(
        model="lcnet", model_preset="tiny", train_preset="paper", data=str(root),
        output_dir=str(out), strategy="one_device", batch_size=2, patch_size=32, epochs=1,
        steps_per_epoch=1, verbose=0,
    )  # fmt: skip
    assert resolve_train_settings(config)["loss"] == {"l1": 1.0, "perceptual": 0.1}
    with pytest.raises(VGGWeightsUnavailable, match=r"--vgg-weights FILE.*--loss l1=1"):
        train(config)
    assert not out.exists()  # no train_settings.json claiming a perceptual term ran


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """A one-step lcnet run whose loss names a zero-weight term, to resume from."""
    tmp = tmp_path_factory.mktemp("first_run")
    config = TrainConfig(
        model="lcnet", model_preset="tiny", train_preset="demo",
        data=str(write_gopro_tree(tmp / "gopro")), output_dir=str(tmp / "run"),
        strategy="one_device", batch_size=2, patch_size=32, epochs=1, steps_per_epoch=1,
        max_val_images=1, loss={"l1": 1.0, "mse": 0.0}, verbose=0,
    )  # fmt: skip
    return config, train(config)


def test_settings_and_summary_record_the_loss_that_ran(first_run):
    config, summary = first_run
    settings = json.loads((pathlib.Path(config.output_dir) / "train_settings.json").read_text())
    assert settings["loss"] == summary["loss"] == {"l1": 1.0}  # the zero-weight term dropped


@pytest.mark.parametrize(
    "flag, change",
    [
        ("--model", {"model": "deepdeblur"}),
        ("--model-preset", {"model_preset": "paper"}),
        ("--loss", {"loss": {"charbonnier": 1.0}}),
        ("--mixed-precision", {"mixed_precision": "mixed_bfloat16"}),
    ],
)
def test_resume_refuses_another_recipe(first_run, flag, change):
    """Each of these flags changed on --resume is refused, naming the flag; another loss
    (or the adversarial term dropped) would otherwise restore without any error."""
    import dataclasses

    config, _ = first_run
    resumed = dataclasses.replace(config, epochs=2, resume=True, **change)
    checkpoints = sorted(
        p.name for p in (pathlib.Path(config.output_dir) / "checkpoints").iterdir()
    )
    with pytest.raises(
        ValueError, match=rf"does not match this run: it was written with .*{flag} "
    ):
        train(resumed)
    # Nothing of the first run was touched.
    after = sorted(p.name for p in (pathlib.Path(config.output_dir) / "checkpoints").iterdir())
    assert after == checkpoints
    assert (
        json.loads((pathlib.Path(config.output_dir) / "train_config.json").read_text())["resume"]
        is False
    )


def test_every_registered_training_preset_resolves_to_a_schedule():
    for name in tfdeblur.list_models():
        for preset in tfdeblur.get_spec(name).train_presets:
            settings = tfdeblur.get_train_preset(name, preset)
            make_lr_schedule(settings, steps_per_epoch=10, total_steps=1000)
            assert set(settings["loss"]) <= set(KNOWN_TERMS), (name, preset)
    with pytest.raises(ValueError, match="step_size"):
        make_lr_schedule({"learning_rate": 1.0, "lr_schedule": {"type": "step", "every": 3}}, 1, 10)


def test_non_finite_loss_stops_without_writing_weights(tmp_path, capsys):
    from train import main

    root = write_gopro_tree(tmp_path / "gopro")
    out = tmp_path / "nan_run"
    config = TrainConfig(
        model="lcnet", model_preset="tiny", train_preset="demo", data=str(root),
        output_dir=str(out), strategy="one_device", batch_size=2, patch_size=32,
        epochs=2, steps_per_epoch=2, loss={"l1": float("inf")}, verbose=0,
    )  # fmt: skip
    with pytest.raises(FloatingPointError, match="Non-finite training loss"):
        train(config)
    assert not (out / "final.keras").exists() and not (out / "best.keras").exists()
    assert tf.train.latest_checkpoint(str(out / "checkpoints")) is None
    # train.py turns it into one clean error line and exit code 1.
    argv = ["--model", "lcnet", "--model-preset", "tiny", "--train-preset", "demo"]
    argv += ["--data", str(root), "--output-dir", str(out), "--batch-size", "2"]
    argv += ["--patch-size", "32", "--steps-per-epoch", "1", "--loss", "l1=inf", "--overwrite"]
    assert main(argv + ["--verbose", "0"]) == 1
    err = capsys.readouterr().err
    assert "train.py: error: Non-finite training loss" in err and "Traceback" not in err


def test_help_lists_models_and_presets_without_markup(capsys):
    from train import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in tfdeblur.list_models():
        spec = tfdeblur.get_spec(name)
        line = next(line for line in text.splitlines() if line.strip().startswith(name + " "))
        assert all(p in line for p in spec.presets) and "demo" in line, line
        assert all(p in line for p in spec.train_presets), line
    assert "--vgg-layer" in text and "--mixed-precision" in text
    assert ":class:" not in text and ":func:" not in text and "``" not in text


def test_adversarial_training_checkpoints_and_resumes_the_discriminator(tmp_path):
    """With an adversarial term the discriminator and its optimizer are in the checkpoint:
    a run resumed after epoch 1 ends with the discriminator, its Adam state and the
    generator of an uninterrupted 2-epoch run, bit for bit (a resume that rebuilt D from
    scratch, or reset its optimizer, would differ)."""
    root = write_gopro_tree(tmp_path / "gopro")
    config = TrainConfig(
        model="lcnet", model_preset="tiny", train_preset="demo", data=str(root),
        output_dir=str(tmp_path / "resumed"), strategy="one_device", batch_size=2,
        patch_size=32, epochs=1, steps_per_epoch=2, max_val_images=1, verbose=0,
        loss={"l1": 1.0, "adversarial": 1e-3},
    )  # fmt: skip
    first = train(config)
    config.epochs, config.resume = 2, True
    resumed = train(config)
    config.output_dir, config.resume = str(tmp_path / "whole"), False
    whole = train(config)
    assert resumed["initial_epoch"] == 1 and "d_loss" in resumed["history"]
    assert resumed["weights_sha256"] == whole["weights_sha256"] != first["weights_sha256"]

    def discriminator_state(run):
        ckpt = tf.train.latest_checkpoint(str(tmp_path / run / "checkpoints"))
        names = [n for n, _ in tf.train.list_variables(ckpt) if n.startswith("d")]
        return {n: tf.train.load_variable(ckpt, n) for n in names}

    got, expected = discriminator_state("resumed"), discriminator_state("whole")
    # The checkpoint reaches D's 10 kernels (Table 1) through its optimizer, which also
    # holds Adam's two moments per kernel and its step count.
    kernels = [n for n in got if n.startswith("d_optimizer/_trainable_variables/")]
    moments = [n for n in got if n.startswith("d_optimizer/_variables/")]
    assert len(kernels) == 10 and len(moments) == 20
    assert int(got["d_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"]) == 4  # 2 x 2 steps
    assert got.keys() == expected.keys()
    for name in got:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
