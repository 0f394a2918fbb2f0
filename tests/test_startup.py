"""Entry points: --help without TensorFlow, the static model catalog, quiet TensorFlow logs."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.test_training import REPO, write_gopro_tree
from tfdeblur import startup
from tfdeblur.data.image_io import write_image
from tfdeblur.models import registry

# A TensorFlow/absl C++ log line, or the other marks of TensorFlow's logging.
TF_LOG = re.compile(
    r"^[IWEF]\d{4} |tensorflow/|absl::InitializeLog|oneDNN|cuInit|remapper|cuda_", re.M
)


def _env(**extra):
    """The environment of a user's shell: none of the test session's TensorFlow settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES", startup.VERBOSE_ENV)
    }
    env["PYTHONPATH"] = str(REPO)
    return {**env, **extra}


def _run(args, **env):
    result = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env=_env(**env),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def test_parsers_and_help_import_no_tensorflow():
    code = (
        "import contextlib, io, sys\n"
        "from tfdeblur.cli import build_parser, main\n"
        "import train\n"
        "parser = build_parser(); train.build_parser()\n"
        "commands = parser._subparsers._group_actions[0].choices\n"
        "for argv in [['--help']] + [[c, '--help'] for c in commands]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main(argv)\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "    train.main(['--help'])\n"
        "assert 'sarn_video' in out.getvalue() and 'official' in out.getvalue()\n"
        "print(len(commands), sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    out = _run(["-c", code])
    count, loaded = out.split(maxsplit=1)
    assert int(count) >= 7 and loaded.strip() == "[]", out


def test_static_catalog_is_the_registry():
    registry.list_models()  # imports the networks and checks CATALOG against them
    assert registry.builtin_catalog() == registry.CATALOG
    for name, (presets, train_presets) in registry.CATALOG.items():
        spec = registry.get_spec(name)
        assert tuple(spec.presets) == presets and tuple(spec.train_presets) == train_presets


def test_an_out_of_date_catalog_fails_loudly(monkeypatch):
    stale = dict(registry.CATALOG)
    stale["lcnet"] = (("paper",), ("paper", "demo"))
    monkeypatch.setattr(registry, "CATALOG", stale)
    monkeypatch.setattr(registry, "_CATALOG_CHECKED", False)
    with pytest.raises(RuntimeError, match="CATALOG is out of date"):
        registry.list_models()


def test_log_lines_written_while_tensorflow_loads_are_dropped(capfd):
    with startup.stderr_without_log_lines():
        os.write(2, b"I0000 00:00:1796407011.191903    5170 port.cc:153] oneDNN notice\n")
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called ...\n")
        os.write(2, b"a line for a person\n")
    assert capfd.readouterr().err == "a line for a person\n"
    with pytest.raises(ImportError), startup.stderr_without_log_lines():
        os.write(2, b"E0000 00:00:1.0   1 loader.cc:1] why the import failed\n")
        raise ImportError("no")
    assert "why the import failed" in capfd.readouterr().err  # all of it when it fails


@pytest.mark.slow
def test_deblur_and_train_print_no_tensorflow_logs_unless_verbose(tmp_path):
    image = tmp_path / "small.png"
    write_image(image, np.random.default_rng(0).uniform(size=(40, 48, 3)))
    deblur = ["-m", "tfdeblur", "deblur", str(image), "--model", "lcnet", "--preset", "tiny"]
    out = _run([*deblur, "-o", str(tmp_path / "quiet.png")])
    assert not TF_LOG.search(out), out
    assert "1 of 1 file(s) deblurred" in out and "warning: --model lcnet" in out  # ours
    loud = _run([*deblur, "-o", str(tmp_path / "loud.png"), "--verbose"])
    assert TF_LOG.search(loud), loud

    root = write_gopro_tree(tmp_path / "gopro")
    train = [str(REPO / "train.py"), "--model", "lcnet", "--model-preset", "tiny"]
    train += ["--train-preset", "demo"]
    train += ["--data", str(root), "--epochs", "1", "--steps-per-epoch", "2"]
    train += ["--batch-size", "2", "--patch-size", "32"]
    out = _run([*train, "--output-dir", str(tmp_path / "quiet")])
    assert not TF_LOG.search(out), out
    assert "Validation PSNR" in out
    loud = _run([*train, "--output-dir", str(tmp_path / "loud")], TFDEBLUR_VERBOSE="1")
    assert TF_LOG.search(loud), loud
    # The LeakyReLU training graph no longer trips grappler's remapper (see training.py).
    assert "remapper failed" not in loud, loud
