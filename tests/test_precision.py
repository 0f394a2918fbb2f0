"""``--precision``: how ``auto`` decides, bfloat16 Keras runs near float32, refusals."""

import keras
import numpy as np
import pytest

import export
import tfdeblur
from tfdeblur.cli import main
from tfdeblur.infer.precision import (
    BF16_FASTER,
    as_bfloat16,
    cpu_has_bf16,
    resolve_precision,
)
from tfdeblur.infer.runners import KerasRunner, load_runner

CPUINFO = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f {extra}\nbogomips\t: 4000\n"


def test_cpu_flags_are_read_from_the_flags_line_only():
    assert cpu_has_bf16(CPUINFO.format(extra="avx512_bf16 avx512_vnni"))
    assert cpu_has_bf16(CPUINFO.format(extra="amx_bf16 amx_tile"))
    assert not cpu_has_bf16(CPUINFO.format(extra="avx512_vnni"))
    # A flag named elsewhere (e.g. a "bugs" line) or as part of another word does not count.
    assert not cpu_has_bf16("bugs\t: avx512_bf16\nflags\t: fpu xavx512_bf16\n")
    assert not cpu_has_bf16("")


def test_auto_picks_bfloat16_only_with_bf16_units_and_a_network_measured_faster():
    assert "deepdeblur" in BF16_FASTER and "lcnet" not in BF16_FASTER
    assert resolve_precision("auto", "deepdeblur", has_bf16=True) == "bfloat16"
    assert resolve_precision("auto", "deepdeblur", has_bf16=False) == "float32"
    assert resolve_precision("auto", "lcnet", has_bf16=True) == "float32"
    assert resolve_precision("auto", None, has_bf16=True) == "float32"
    # Explicit choices are kept whatever the CPU.
    assert resolve_precision("bfloat16", "lcnet", has_bf16=False) == "bfloat16"
    assert resolve_precision("float32", "deepdeblur", has_bf16=True) == "float32"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("float16", "lcnet")


def test_bfloat16_runner_is_within_its_tolerance_of_float32():
    keras.utils.set_random_seed(3)
    model = tfdeblur.build_model("lcnet", preset="tiny")
    x = np.random.default_rng(0).random((1, 32, 40, 3), dtype=np.float32)
    runner = KerasRunner(model, precision="bfloat16")
    assert runner.precision == "bfloat16" and runner.model is not model
    assert {str(layer.dtype_policy.name) for layer in runner.model.layers[1:]} == {"mixed_bfloat16"}
    for new, old in zip(runner.model.weights, model.weights, strict=True):  # same weights
        assert new.dtype == "float32"
        np.testing.assert_array_equal(new.numpy(), old.numpy())
    f32 = KerasRunner(model).run_batch(x)
    bf16 = runner.run_batch(x)
    assert bf16.dtype == np.float32 and bf16.shape == f32.shape
    error = np.abs(bf16 - f32).max() / np.abs(f32).max()
    # bfloat16 keeps 8 significant bits (2^-8 = 0.4% per rounding); measured 0.5-0.8%
    # of the output's peak over seeds: 1.5% bounds it, and a run in float32 would give 0.
    assert 1e-4 < error < 0.015, error


def test_as_bfloat16_keeps_the_step_network_of_a_video_model():
    model = tfdeblur.build_model("sarn_video", preset="tiny")
    rebuilt = as_bfloat16(model)
    recurrence = next(layer for layer in rebuilt.layers if hasattr(layer, "step_model"))
    policies = {
        str(layer.dtype_policy.name)
        for layer in recurrence.step_model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    }
    assert policies == {"mixed_bfloat16"}


def test_non_keras_formats_refuse_bfloat16_naming_the_file(tmp_path):
    x = keras.Input((None, None, 3), name="blurry")
    model = keras.Model(x, keras.layers.Conv2D(3, 3, padding="same")(x))
    path = tmp_path / "conv.tflite"
    export.tflite(model, path, verify=False, verbose=False)
    with pytest.raises(ValueError, match=r"bfloat16.*conv\.tflite.*tflite model"):
        load_runner(path, precision="bfloat16")
    for precision in ("auto", "float32"):  # run as exported
        assert load_runner(path, precision=precision).precision == "float32"


def test_cli_precision_flag_is_plumbed_and_checked(tmp_path, capsys):
    for command in (["deblur", "in.png", "-o", "out.png"], ["eval", "--data", "demo"]):
        with pytest.raises(SystemExit) as info:
            main([*command, "--model", "lcnet", "--precision", "float16"])
        assert info.value.code == 2
        assert "--precision: invalid choice: 'float16'" in capsys.readouterr().err
    image = tmp_path / "in.png"
    from tfdeblur.data.image_io import write_image

    write_image(image, np.random.default_rng(0).random((24, 32, 3), dtype=np.float32))
    x = keras.Input((None, None, 3), name="blurry")
    conv = keras.Model(x, keras.layers.Conv2D(3, 3, padding="same")(x))
    tflite = tmp_path / "conv.tflite"
    export.tflite(conv, tflite, verify=False, verbose=False)
    rc = main(["deblur", str(image), "-o", str(tmp_path / "o.png"), "--model", str(tflite),
               "--precision", "bfloat16", "-q"])  # fmt: skip
    assert rc == 2 and not (tmp_path / "o.png").exists()
    assert "precision 'bfloat16' applies to Keras models" in capsys.readouterr().err


def test_python_api_runs_in_the_precision_asked():
    keras.utils.set_random_seed(0)
    x = keras.Input((None, None, 3), name="blurry")
    model = keras.Model(x, keras.layers.Conv2D(3, 3, padding="same")(x), name="conv")
    image = np.random.default_rng(0).random((16, 24, 3), dtype=np.float32)
    f32 = tfdeblur.deblur(image, model, precision="float32")
    bf16 = tfdeblur.deblur(image, model, precision="bfloat16")
    assert bf16.dtype == np.float32
    # One 3x3 convolution in bfloat16 (inputs and weights rounded to 8 significant
    # bits): measured 6.3e-3 max-abs from float32; float32 itself would give 0.
    assert 1e-4 < np.abs(bf16 - f32).max() < 1.5e-2
    runner = KerasRunner(model, precision="bfloat16")  # a given runner runs as it is
    np.testing.assert_array_equal(tfdeblur.deblur(image, runner), bf16)
