"""tfdeblur.models.weights.load_deepdeblur_torch and ``tfdeblur import-weights``.

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
from tests.utils import import_or_skip
from tfdeblur.cli import main as cli_main
from tfdeblur.models.weights import (
    _pixel_shuffle_permutation,
    deepdeblur_config_from_state_dict,
    load_deepdeblur_torch,
)

REFERENCE = pathlib.Path(__file__).resolve().parent / "data_files" / "deepdeblur_reference.npz"
# Max |Keras - official| of the finest output in [0, 255] units: measured 4.6e-5 (see
# tests/models/test_deepdeblur.py).
OFFICIAL_ATOL = 2e-4
# The full-size network (19 ResBlocks per scale) against the torch forward: measured
# 1.5e-4 in [0, 255] units on outputs spanning 127.5 +- 100 (AMD EPYC, AVX-512).
FULL_SIZE_ATOL = 4e-4


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
    assert finest_error(model, data) < OFFICIAL_ATOL


def test_loading_into_a_given_model(reference):
    data, state_dict = reference
    model = tfdeblur.build_model("deepdeblur", "tiny", n_resblocks=2, kernel_size=5)
    assert load_deepdeblur_torch(state_dict, model) is model
    assert finest_error(model, data) < OFFICIAL_ATOL


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
    torch = import_or_skip("torch")
    data, state_dict = reference
    path = tmp_path / "model-1000.pt"
    torch.save({"G": {k: torch.from_numpy(v) for k, v in state_dict.items()}}, path)
    assert finest_error(load_deepdeblur_torch(path), data) < OFFICIAL_ATOL


def test_cli_writes_a_loadable_keras_file(tmp_path, reference, capsys):
    """``tfdeblur import-weights`` on a real ``.pt`` (torch.save of the official
    state_dict): convert, save atomically, reproduce the official outputs."""
    torch = import_or_skip("torch")
    data, state_dict = reference
    source = tmp_path / "model-1000.pt"
    torch.save({"G": {k: torch.from_numpy(v) for k, v in state_dict.items()}}, source)
    output = tmp_path / "deepdeblur_gopro.keras"
    assert cli_main(["import-weights", "deepdeblur", str(source), "-o", str(output)]) == 0
    assert "deepdeblur" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == [output.name, source.name]  # no temp left
    model = keras.models.load_model(output, safe_mode=True)
    assert finest_error(model, data) < OFFICIAL_ATOL


def official_msresnet(torch, n_scales=3, n_resblocks=19, n_feats=64, kernel_size=5):
    """DeepDeblur's generator as the official ``src/model/MSResNet.py`` defines it (module
    names, hence state_dict keys, and forward), written here from its structure:
    ``body_models[s]`` = ``ResNet(mean_shift=False)`` (conv, ResBlocks conv-ReLU-conv +
    identity, conv), finest scale first; ``conv_end_models[s]`` (s >= 1) = 5x5 conv(3 ->
    12) + PixelShuffle(2); inputs in [0, 255] shifted by -127.5 and outputs back."""
    nn = torch.nn

    def conv(cin, cout, k):
        return nn.Conv2d(cin, cout, k, padding=k // 2)

    class ResBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                conv(n_feats, n_feats, kernel_size),
                nn.ReLU(True),
                conv(n_feats, n_feats, kernel_size),
            )

        def forward(self, x):
            return self.body(x) + x

    class ResNet(nn.Module):
        def __init__(self, in_channels):
            super().__init__()
            self.body = nn.Sequential(
                conv(in_channels, n_feats, kernel_size),
                *[ResBlock() for _ in range(n_resblocks)],
                conv(n_feats, 3, kernel_size),
            )

        def forward(self, x):
            return self.body(x)

    class ConvEnd(nn.Module):
        def __init__(self):
            super().__init__()
            self.uppath = nn.Sequential(conv(3, 12, 5), nn.PixelShuffle(2))

        def forward(self, x):
            return self.uppath(x)

    class MSResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.body_models = nn.ModuleList([ResNet(6) for _ in range(n_scales - 1)] + [ResNet(3)])
            self.conv_end_models = nn.ModuleList([None] + [ConvEnd() for _ in range(n_scales - 1)])

        def forward(self, pyramid):  # pyramid[0] is the finest level, (1, 3, h, w)
            pyramid = [level - 127.5 for level in pyramid]
            outputs = [None] * n_scales
            x = pyramid[-1]
            for s in reversed(range(n_scales)):
                outputs[s] = self.body_models[s](x)
                if s > 0:
                    x = torch.cat((pyramid[s - 1], self.conv_end_models[s](outputs[s])), 1)
            return [o + 127.5 for o in outputs]

    return MSResNet()


@pytest.mark.slow
def test_full_size_pt_checkpoint_through_the_cli(tmp_path, capsys):
    """A full-size generator (3 scales, 19 ResBlocks, 64 features, 5x5) with torch's own
    initialisation, saved by torch in the official ``{"G": state_dict}`` layout, through
    ``tfdeblur import-weights``: every weight lands transposed (and, for the
    up-convolutions, PixelShuffle-permuted) exactly, and the .keras model reproduces the
    torch forward on the official loader's Gaussian pyramid."""
    torch = import_or_skip("torch")
    from skimage.transform import pyramid_gaussian

    torch.manual_seed(0)
    net = official_msresnet(torch).eval()
    state_dict = net.state_dict()
    assert len(state_dict) == 3 * (2 + 19 * 4 + 2) + 2 * 2 == 244
    source = tmp_path / "model-1000.pt"
    torch.save({"G": state_dict}, source)
    output = tmp_path / "deepdeblur_gopro.keras"
    assert cli_main(["import-weights", "deepdeblur", str(source), "-o", str(output)]) == 0
    capsys.readouterr()
    model = keras.models.load_model(output, safe_mode=True)
    assert model.count_params() == sum(v.numel() for v in state_dict.values()) == 11_721_321

    def torch_kernel(key):
        return state_dict[key].numpy().transpose(2, 3, 1, 0)  # (O, I, kh, kw) -> (kh, kw, I, O)

    # Ours: channel (i*2 + j)*3 + c of depth_to_space; torch: c*4 + i*2 + j (PixelShuffle).
    shuffle = [c * 4 + sub for sub in range(4) for c in range(3)]
    compared = 0
    for s in range(3):
        pairs = [(f"scale{s}_conv_in", f"body_models.{s}.body.0", None)]
        pairs += [
            (
                getattr(model.get_layer(f"scale{s}_res{i}"), f"conv{j + 1}"),
                f"body_models.{s}.body.{i + 1}.body.{2 * j}",
                None,
            )
            for i in range(19)
            for j in range(2)
        ]
        pairs.append((f"scale{s}_conv_out", f"body_models.{s}.body.20", None))
        if s > 0:
            pairs.append((f"scale{s}_upconv", f"conv_end_models.{s}.uppath.0", shuffle))
        for layer, key, perm in pairs:
            layer = model.get_layer(layer) if isinstance(layer, str) else layer
            kernel, bias = torch_kernel(f"{key}.weight"), state_dict[f"{key}.bias"].numpy()
            if perm is not None:
                kernel, bias = kernel[..., perm], bias[perm]
            np.testing.assert_array_equal(layer.kernel.numpy(), kernel, err_msg=key)
            np.testing.assert_array_equal(layer.bias.numpy(), bias, err_msg=key)
            compared += 2
    assert compared == len(state_dict)

    image = np.random.default_rng(0).integers(0, 256, (24, 32, 3)).astype(np.float32)
    pyramid = [
        torch.from_numpy(np.ascontiguousarray(level.transpose(2, 0, 1))[None].astype(np.float32))
        for level in pyramid_gaussian(image, 2, channel_axis=-1)
    ]
    with torch.no_grad():
        expected = net(pyramid)[0].numpy().transpose(0, 2, 3, 1)
    got = np.asarray(model(image[None] / 255.0)) * 255.0
    error = np.abs(got - expected).max()
    assert error < FULL_SIZE_ATOL, error


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
