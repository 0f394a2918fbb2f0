"""Helpers shared by the tests (import as ``from tests.utils import ...``)."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_and_run_in_fresh_process(model_path, inputs: np.ndarray, tmp_path) -> np.ndarray:
    """Load ``model_path`` with ``keras.models.load_model(safe_mode=True)`` in a new Python
    process (after ``import tfdeblur`` only) and return its output on ``inputs``."""
    tmp_path = pathlib.Path(tmp_path)
    x_path, y_path = tmp_path / "fresh_in.npy", tmp_path / "fresh_out.npy"
    np.save(x_path, inputs)
    code = textwrap.dedent(
        f"""
        import os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
        import numpy as np, keras
        import tfdeblur  # registers the custom layers
        model = keras.models.load_model({str(model_path)!r}, safe_mode=True)
        y = model(np.load({str(x_path)!r}), training=False)
        y = y[0] if isinstance(y, (list, tuple)) else y
        np.save({str(y_path)!r}, np.asarray(y))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return np.load(y_path)


def assert_layer_config_roundtrip(layer) -> None:
    """``from_config(get_config())`` rebuilds a layer with the same config."""
    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config
