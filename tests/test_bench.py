"""``tfdeblur bench``: JSON schema, parameters, file sizes, FLOP counting (no timings)."""

import json
import pathlib

import keras
import pytest

import tfdeblur
from tfdeblur.cli import main
from tfdeblur.evaluate.bench import count_gflops
from tfdeblur.infer.runners import tflite_interpreter


def test_gflops_of_a_plain_conv_model_match_the_formula():
    x = keras.Input((None, None, 3))
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    y = keras.layers.DepthwiseConv2D(5, padding="same")(y)
    y = keras.layers.Conv2D(3, 1)(y)
    model = keras.Model(x, keras.layers.Add()([x, y]))
    h, w = 16, 24
    macs = h * w * (8 * 3 * 3 * 3 + 8 * 5 * 5 + 3 * 8)  # 3x3 conv, 5x5 depthwise, 1x1 conv
    flops = count_gflops(model, (h, w))
    assert flops["gflops_conv"] * 1e9 == pytest.approx(2 * macs)
    assert flops["gflops"] * 1e9 == pytest.approx(2 * macs + h * w * 3)  # + the residual add
    assert flops["frames"] == 1 and flops["ops_with_unknown_shapes"] == 0


@pytest.mark.filterwarnings("ignore:.*untrained weights")
def test_bench_cli_tiny(tmp_path, gopro_samples, capsys):
    out, artifacts = tmp_path / "bench.json", tmp_path / "artifacts"
    code = main(
        [
            "bench", "--models", "lcnet", "--preset", "tiny",
            "--formats", "keras,tflite,tflite_float16",
            "--sizes", "32x32,24x40", "--flops-size", "64x96",
            "--warmup", "1", "--runs", "2",
            "--verify-images", str(gopro_samples / "Istanbul_blur1.png"), "--verify-crop", "48x64",
            "--lc-batch-size", "2", "--lc-patch-size", "32", "--lc-steps", "1",
            "--precision", "bfloat16",
            "--artifacts-dir", str(artifacts), "--output", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    results = json.loads(out.read_text())
    assert set(results) == {"machine", "settings", "models", "lcblock"}
    assert results["machine"]["cpu_count"] >= 1 and results["machine"]["tensorflow"]
    assert results["machine"]["default_threads"] >= 1  # what the runners use (--threads unset)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts", "bench.json"]  # atomic
    assert results["settings"]["sizes"] == [[32, 32], [24, 40]]

    (entry,) = results["models"]
    assert entry["model"] == "lcnet" and entry["preset"] == "tiny"
    assert entry["parameters"] == tfdeblur.build_model("lcnet", preset="tiny").count_params()
    assert (
        entry["flops"]["size"] == [64, 96]
        and 0 < entry["flops"]["gflops_conv"] <= entry["flops"]["gflops"]
    )
    assert [a["label"] for a in entry["artifacts"]] == ["keras", "tflite", "tflite_float16"]
    for artifact in entry["artifacts"]:
        path = pathlib.Path(artifact["path"])
        assert path.parent == artifacts and artifact["size_bytes"] == path.stat().st_size
        assert set(artifact["latency_ms"]) == {"32x32", "24x40"}
        assert all(ms > 0 for ms in artifact["latency_ms"].values())
        assert artifact["agrees"] and artifact["psnr_vs_sharp"] is not None
    keras_entry, f32, f16 = entry["artifacts"]
    # TFLite latency is timed on files converted for each size, and on the dynamic file.
    assert set(f32["latency_ms_dynamic_shape"]) == {"32x32", "24x40"}
    assert (artifacts / "lcnet_32x32.tflite").is_file()
    assert (artifacts / "lcnet_24x40_float16.tflite").is_file()
    assert keras_entry["psnr_vs_keras"] == "inf"  # the reloaded .keras file is exact
    assert f32["psnr_vs_keras"] >= 45 and f16["psnr_vs_keras"] >= 45
    assert f16["size_bytes"] < f32["size_bytes"]
    assert entry["targets"]["tflite_within_45db"] and entry["targets"]["tflite_float16_within_45db"]
    assert set(entry["targets"]["tflite_not_slower_than_keras"]) == {"32x32", "24x40"}

    # Issue #11's ratio rows: any-size over fixed-size file, operator count, bf16.
    rows = entry["deployment"]
    assert set(rows["any_size_slowdown"]["tflite"]) == {"32x32", "24x40"}
    ratios = rows["any_size_slowdown"]["tflite"]
    for size, ratio in ratios.items():
        assert ratio == pytest.approx(
            f32["latency_ms_dynamic_shape"][size] / f32["latency_ms"][size]
        )
    ops = rows["tflite_operators"]
    interpreter = tflite_interpreter(f32["path"], default_delegates=False)
    assert ops["total"] == len(interpreter._get_ops_details())  # the interpreter's own count
    assert ops["total"] == sum(ops["by_type"].values()) and ops["by_type"]["CONV_2D"] > 0
    assert entry["keras_precision"] == "bfloat16"
    precision = entry["precision"]
    assert set(precision["bf16_speedup"]) == {"32x32", "24x40"}
    # bf16 vs float32 outputs of LCNet tiny on the GOPRO crop: measured 45-50 dB.
    assert 35 < precision["psnr_bf16_vs_float32"] < 80

    lc = results["lcblock"]
    assert set(lc["train_step_ms"]) == set(lc["keras_ms"]) == {"lcnet", "no_lc"}
    assert lc["batch_size"] == 2 and lc["patch_size"] == 32 and lc["lc_blocks"] == 3
    # The tiny LCNet's three LCBlocks: 31 operators each (tests/export/test_artifacts.py).
    assert lc["tflite_ops_per_lcblock"] <= 31
    assert lc["tflite_ops"]["lcnet"] == lc["tflite_ops"]["no_lc"] + 3 * lc["tflite_ops_per_lcblock"]

    table = capsys.readouterr().out
    assert "| lcnet (tiny) | tflite_float16 |" in table
    assert "LCBlocks, LCNet (tiny) vs num_lc_blocks=0" in table
    assert "any-size tflite file vs fixed-size" in table and "bfloat16 vs float32" in table


def test_bench_rejects_unknown_format(capsys):
    assert main(["bench", "--models", "lcnet", "--formats", "tflite,pt"]) == 2
    assert "unknown format 'pt'" in capsys.readouterr().err


def test_bench_data_cli_and_its_errors(tmp_path, capsys):
    """``tfdeblur bench-data``: its three printed rates agree with each other (images =
    batch x batches; headroom = step time x batch rate), and bad arguments exit 2 with
    the argument named."""
    import re

    from tests.test_training import write_gopro_tree

    root = write_gopro_tree(tmp_path / "gopro")
    base = ["bench-data", "--model", "lcnet", "--model-preset", "tiny", "--train-preset", "demo"]
    base += ["--data", str(root), "--patch-size", "32", "--strategy", "one_device"]
    assert main([*base, "--batch-size", "2", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    images, batches = (
        float(v) for v in re.search(r"([\d.]+) images/s \(([\d.]+) batches/s", out).groups()
    )
    step_ms = float(re.search(r"training step:\s+(\d+) ms", out).group(1))
    headroom = float(re.search(r"headroom: ([\d.]+)x", out).group(1))
    assert images == pytest.approx(2 * batches, abs=0.11)
    assert headroom == pytest.approx(step_ms / 1000 * batches, rel=0.1, abs=0.06)

    for extra, named in (
        (["--steps", "0"], "--steps must be a positive integer"),
        (["--batch-size", "0"], "--batch-size must be positive"),
        (["--model", "nosuchnet"], "Unknown model 'nosuchnet'. Registered models: deepdeblur"),
        (["--data", str(tmp_path / "missing")], "missing"),
        # LCNet's paper recipe has a perceptual term: --vgg-weights reaches the loss.
        (["--train-preset", "paper", "--vgg-weights", str(tmp_path / "vgg.h5")], "vgg.h5"),
    ):
        assert main([*base, *extra]) == 2, extra
        assert named in capsys.readouterr().err, extra
