"""tfdeblur.weights.load_deepdeblur_torch and ``tfdeblur import-weights``.

The reference state_dict and outputs come from the official DeepDeblur-PyTorch code (see
the docstring of tests/models/test_deepdeblur.py for how they were made).
"""

import pathlib
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdeblur
from tfdeblur.cli import main as cli_main
from tfdeblur.weights import (
    _pixel_shuffle_permutation,
    deepdeblur_config_from_state_dict,
    load_deepdeblur_torch,
)

REFERENCE = pathlib.Path(__file__).resolve().parent / "data_files" / "deepdeblur_reference.npz"


@pytest.fixture(scope="module")
def reference():
    data = np.load(REFERENCE)
    state_dict = {
        k[len("state_dict/") :]: data[k] for k in data.files if k.startswith("state_dict/")
    }
    return data, state_dict


def finest_error(model, data):
    """Max |Keras - official| of the finest output, in [0, 255] units."""
    y = np.asarray(model(data["input"].astype(np.float32) / 255.0)) * 255.0
    return np.abs(y - data["output_0"]).max()


def torch_pixel_shuffle(x, r):
    """``torch.nn.PixelShuffle`` on (H, W, C*r*r), written from its definition."""
    h, w, crr = x.shape
    c = crr // (r * r)
    y = np.zeros((h * r, w * r, c), x.dtype)
    for ch in range(c):
        for i in range(r):
            for j in range(r):
                y[i::r, j::r, ch] = x[:, :, ch * r * r + i * r + j]
    return y


def test_pixel_shuffle_permutation_maps_torch_to_depth_to_space():
    for c, r in [(3, 2), (2, 3)]:
        x = np.random.default_rng(c).uniform(size=(4, 5, c * r * r)).astype(np.float32)
        perm = _pixel_shuffle_permutation(c, r)
        ours = np.asarray(tf.nn.depth_to_space(x[None][..., perm], r))[0]
        np.testing.assert_array_equal(ours, torch_pixel_shuffle(x, r))


def test_config_is_inferred_from_the_state_dict(reference):
    data, state_dict = reference
    config = deepdeblur_config_from_state_dict(state_dict)
    assert config == dict(
        zip(
            ["n_scales", "n_resblocks", "n_feats", "kernel_size"],
            data["config"].tolist(),
            strict=True,
        )
    )


def test_mapping_with_generator_key_and_module_prefix_loads(reference):
    # model-<epoch>.pt holds {"G": generator, "D": discriminator}; D is ignored. A
    # DataParallel state_dict prefixes every key with "module.".
    data, state_dict = reference
    checkpoint = {
        "G": {f"module.{k}": v for k, v in state_dict.items()},
        "D": {"conv_layers.0.weight": np.zeros((4, 3, 5, 5), np.float32)},
    }
    model = load_deepdeblur_torch(checkpoint)
    assert model.count_params() == sum(v.size for v in state_dict.values())
    assert finest_error(model, data) < 1e-2


def test_loading_into_a_given_model(reference):
    data, state_dict = reference
    model = tfdeblur.build_model("deepdeblur", "tiny", n_resblocks=2, kernel_size=5)
    assert load_deepdeblur_torch(state_dict, model) is model
    assert finest_error(model, data) < 1e-2


def test_missing_key_is_named(reference):
    _, state_dict = reference
    broken = dict(state_dict)
    del broken["conv_end_models.2.uppath.0.bias"]
    with pytest.raises(ValueError, match=r"missing key\(s\) 'conv_end_models\.2\.uppath\.0\.bias'"):
        load_deepdeblur_torch(broken)


def test_extra_key_is_named(reference):
    _, state_dict = reference
    broken = {**state_dict, "body_models.0.extra.weight": np.zeros(3, np.float32)}
    with pytest.raises(ValueError, match=r"unexpected key\(s\) 'body_models\.0\.extra\.weight'"):
        load_deepdeblur_torch(broken)


def test_shape_mismatch_is_named(reference):
    _, state_dict = reference
    broken = dict(state_dict)
    broken["body_models.1.body.2.body.2.weight"] = np.zeros((8, 8, 3, 3), np.float32)
    with pytest.raises(
        ValueError,
        match=r"'body_models\.1\.body\.2\.body\.2\.weight'.*\(8, 8, 3, 3\).*\(8, 8, 5, 5\)",
    ):
        load_deepdeblur_torch(broken)


def test_a_different_configuration_is_refused_by_a_given_model(reference):
    _, state_dict = reference
    model = tfdeblur.build_model("deepdeblur", "tiny")  # 1 ResBlock, 3x3
    # body.2 is a ResBlock in the checkpoint but the last conv in the model.
    with pytest.raises(
        ValueError, match=r"missing key.*'body_models\.0\.body\.2\.weight'.*'n_resblocks': 2"
    ):
        load_deepdeblur_torch(state_dict, model)


def test_not_a_deepdeblur_state_dict():
    with pytest.raises(ValueError, match="'G'"):
        load_deepdeblur_torch({"conv.weight": np.zeros((1, 1, 1, 1), np.float32)})
    with pytest.raises(ValueError, match="source"):
        load_deepdeblur_torch(42)


def test_missing_file_and_missing_torch(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        load_deepdeblur_torch(tmp_path / "nothere.pt")
    path = tmp_path / "model-1000.pt"
    path.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(ImportError, match=r"pip install tfdeblur\[torch\]"):
        load_deepdeblur_torch(path)


def test_real_pt_checkpoint(tmp_path, reference):
    torch = pytest.importorskip("torch")
    data, state_dict = reference
    path = tmp_path / "model-1000.pt"
    torch.save({"G": {k: torch.from_numpy(v) for k, v in state_dict.items()}}, path)
    assert finest_error(load_deepdeblur_torch(path), data) < 1e-2


def test_cli_writes_a_loadable_keras_file(tmp_path, reference, monkeypatch, capsys):
    # The checkpoint reader (torch.load, tested above where torch is installed) stands
    # aside here so the command's own work is tested everywhere: convert, save atomically.
    data, state_dict = reference
    source = tmp_path / "model-1000.pt"
    source.write_bytes(b"checkpoint")
    monkeypatch.setattr(
        "tfdeblur.weights.read_torch_state_dict", lambda path: {"G": dict(state_dict)}
    )
    output = tmp_path / "deepdeblur_gopro.keras"
    assert cli_main(["import-weights", "deepdeblur", str(source), "-o", str(output)]) == 0
    assert "deepdeblur" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == [output.name, source.name]  # no temp left
    model = keras.models.load_model(output, safe_mode=True)
    assert finest_error(model, data) < 1e-2


def test_cli_refuses_bad_paths(tmp_path, capsys):
    source = tmp_path / "weights.keras"
    source.write_bytes(b"checkpoint")
    assert cli_main(["import-weights", "deepdeblur", str(source), "-o", str(source)]) == 2
    assert "refusing to write over" in capsys.readouterr().err
    assert source.read_bytes() == b"checkpoint"
    assert (
        cli_main(["import-weights", "deepdeblur", str(source), "-o", str(tmp_path / "m.h5")]) == 2
    )
    assert ".keras" in capsys.readouterr().err
    missing = tmp_path / "model-9.pt"
    assert (
        cli_main(["import-weights", "deepdeblur", str(missing), "-o", str(tmp_path / "m.keras")])
        == 2
    )
    assert "model-9.pt" in capsys.readouterr().err


def test_cli_without_torch_says_how_to_install(tmp_path, monkeypatch, capsys):
    source = tmp_path / "model-1000.pt"
    source.write_bytes(b"checkpoint")
    monkeypatch.setitem(sys.modules, "torch", None)
    output = tmp_path / "m.keras"
    assert cli_main(["import-weights", "deepdeblur", str(source), "-o", str(output)]) == 2
    assert "pip install tfdeblur[torch]" in capsys.readouterr().err
    assert not output.exists()
