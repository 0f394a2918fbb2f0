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
from tfdeblur.losses import KNOWN_TERMS, DeblurLoss
from tfdeblur.training import (
    DeblurTrainer,
    TrainConfig,
    make_lr_schedule,
    make_strategy,
    measure_input_pipeline,
    resolve_train_settings,
    train,
)

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
    settings = resolve_train_settings(TrainConfig(model="lcnet"))
    assert settings["batch_size"] == 32 and settings["patch_size"] == 200
    assert settings["loss"] == {"l1": 1.0, "perceptual": 0.1}
    settings = resolve_train_settings(TrainConfig(model="lcnet", batch_size=4, iterations=7))
    assert settings["batch_size"] == 4 and settings["iterations"] == 7 and "epochs" not in settings


def test_train_end_to_end_then_resume(tmp_path):
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

    config.epochs, config.resume = 3, True
    resumed = train(config)
    assert len(resumed["history"]["loss"]) == 1  # only epoch 3 was left to run
    ckpt = tf.train.latest_checkpoint(str(out / "checkpoints"))
    assert ckpt.endswith("-3")


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
        cmd[:3] + ["nosuchnet", "--data", str(root)], capture_output=True, text=True
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


@pytest.mark.slow
@pytest.mark.parametrize("name", tfdeblur.list_models())
def test_every_network_trains_through_train_py_on_demo_data(name, tmp_path, capsys):
    """``python train.py --model NAME --data demo`` with the tiny model preset: one step of
    the network's own training recipe (its "tiny" training preset where it has one, e.g.
    short clips for video networks), then the final model reloads."""
    from train import main

    spec = tfdeblur.get_spec(name)
    train_preset = "tiny" if "tiny" in spec.train_presets else "paper"
    out = tmp_path / name
    code = main(
        [
            "--model",
            name,
            "--model-preset",
            "tiny",
            "--train-preset",
            train_preset,
            "--data",
            "demo",
            "--output-dir",
            str(out),
            "--strategy",
            "one_device",
            "--epochs",
            "1",
            "--steps-per-epoch",
            "1",
            "--batch-size",
            "2",
            "--patch-size",
            "32",
            "--max-val-images",
            "1",
            "--verbose",
            "0",
        ]
    )
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert np.isfinite(summary["history"]["loss"]).all()
    final = keras.models.load_model(out / "final.keras", safe_mode=True)
    assert final.count_params() == tfdeblur.build_model(name, preset="tiny").count_params()


def test_input_pipeline_measurement_and_perceptual_fallback(tmp_path, caplog):
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


def test_perceptual_term_dropped_with_clear_message_when_vgg_unavailable(monkeypatch, caplog):
    def offline(*args, **kwargs):  # what keras raises when the download fails
        raise Exception(
            "URL fetch failure on https://storage.googleapis.com/...: Name or service not known"
        )

    monkeypatch.setattr(keras.applications, "VGG19", offline)
    with caplog.at_level("WARNING"):
        loss = DeblurLoss({"l1": 1.0, "perceptual": 0.1})
    assert loss.terms == {"l1": 1.0}
    assert "--vgg-weights" in caplog.text and "without the perceptual term" in caplog.text
    with pytest.raises(OSError, match="VGG-19"):
        DeblurLoss({"l1": 1.0, "perceptual": 0.1}, on_missing_vgg="raise")


def test_every_registered_training_preset_resolves_to_a_schedule():
    for name in tfdeblur.list_models():
        for preset in tfdeblur.get_spec(name).train_presets:
            settings = tfdeblur.get_train_preset(name, preset)
            make_lr_schedule(settings, steps_per_epoch=10, total_steps=1000)
            assert set(settings["loss"]) <= set(KNOWN_TERMS), (name, preset)
    with pytest.raises(ValueError, match="step_size"):
        make_lr_schedule({"learning_rate": 1.0, "lr_schedule": {"type": "step", "every": 3}}, 1, 10)


def test_non_finite_loss_stops_without_writing_weights(tmp_path):
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
