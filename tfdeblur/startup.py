"""What an entry point sets up before TensorFlow is imported: quiet logs, deferred imports.

``tfdeblur`` and ``train.py`` call :func:`quiet_logs` first thing (their parsers import
no TensorFlow, so ``--help`` is instant and this always runs before TensorFlow loads).
Unless asked for verbose output, it keeps TensorFlow's own log lines off the terminal:

* the C++ logs (``I0000 ... port.cc] oneDNN custom operations are on``, ``E0000 ...
  failed call to cuInit``, grappler's ``meta_optimizer.cc] remapper failed``): every
  level below FATAL is dropped (``TF_CPP_MIN_LOG_LEVEL=3``);
* what TensorFlow's shared libraries print while they load, before that setting is read
  (absl's ``WARNING: All log messages before absl::InitializeLog() ...``, the oneDNN,
  CUDA-stub and CPU-feature notices): the first ``import tensorflow`` runs with the
  process's stderr (file descriptor 2) sent to a temporary file, whose non-log lines are
  written back afterwards (all of it when the import fails);
* Python-side logs and warnings of TensorFlow, absl and Keras: loggers ``tensorflow``
  and ``absl`` at ERROR, ``warnings`` from those packages ignored; the remaining
  warnings (tfdeblur's own, e.g. an untrained registry model) print as one
  ``warning: ...`` line, without the source path and code line.

``--verbose`` (``tfdeblur --verbose ...``, ``train.py --verbose 3``) or the environment
variable ``TFDEBLUR_VERBOSE=1`` leave all of it as TensorFlow does it (its own variables,
e.g. ``TF_CPP_MIN_LOG_LEVEL``, then apply). The library itself (``import tfdeblur`` in a
program) changes none of this; only the entry points call :func:`quiet_logs`.

:func:`when_imported` runs a callback once a module has been imported; ``tfdeblur``
registers its Keras layers with it when Keras loads, so that importing the package does
not import TensorFlow.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable

VERBOSE_ENV = "TFDEBLUR_VERBOSE"

#: A line TensorFlow's libraries log: absl/glog (``I0000 00:00:17... file.cc:12] ...``),
#: absl's pre-initialisation notice, the second line of the CPU-feature notice, and the
#: TFLite quantizer's ``fully_quantize: 0, inference_type: 6, ...`` (printed directly).
LOG_LINE = re.compile(
    r"^(?:[IWEF]\d{4} [\d:.]+ +\d+ [\w./-]+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions: .* rebuild TensorFlow"
    r"|fully_quantize: \d+, inference_type: )"
)

_LOUD_PACKAGES = r"(?:tensorflow|keras|absl|tf2onnx|onnx|google\.protobuf)(?:\.|$)"


def verbose_requested() -> bool:
    """Whether ``TFDEBLUR_VERBOSE`` asks for TensorFlow's own log lines (1/true/yes/on)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def quiet_logs(verbose: bool = False) -> bool:
    """Keep TensorFlow's log lines off the terminal unless ``verbose`` or
    ``TFDEBLUR_VERBOSE`` asks for them. Call before TensorFlow is imported (later calls
    still quiet the Python loggers and whatever the C++ side has not read yet).

    Returns:
        True when the logs were quieted, False in verbose mode.
    """
    if verbose or verbose_requested():
        os.environ[VERBOSE_ENV] = "1"  # sub-processes follow
        return False
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # FATAL only; read when TensorFlow loads
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # multi-worker runs
    for name in ("tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=_LOUD_PACKAGES)
    warnings.formatwarning = _one_line_warning
    if "tensorflow" not in sys.modules:
        _wrap_import("tensorflow", around=stderr_without_log_lines, after=_quiet_python_loggers)
    return True


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    # Our warnings are sentences for a person: no source path, no code line.
    return f"warning: {message}\n"


def _quiet_python_loggers() -> None:
    # TensorFlow's import may reset its logger; absl's handler is on the "absl" logger.
    for name in ("tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def stderr_without_log_lines():
    """File descriptor 2 (where the C++ libraries write, whatever ``sys.stderr`` is) into
    a temporary file for the block; afterwards its lines that are not :data:`LOG_LINE` go
    back to descriptor 2 (every line if the block raised). Does nothing in verbose mode
    (``TFDEBLUR_VERBOSE``). Also for steps that print C++ lines of their own (the TFLite
    converter)."""
    if verbose_requested():
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        yield
        return
    failed = False
    with tempfile.TemporaryFile(mode="w+b") as capture:
        _flush_stderr()
        os.dup2(capture.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            _flush_stderr()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().splitlines(keepends=True)
            kept = [
                line
                for line in lines
                if failed or not LOG_LINE.match(line.decode("utf-8", "replace"))
            ]
            if kept:
                os.write(2, b"".join(kept))


def _flush_stderr() -> None:
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stderr.flush()


def when_imported(name: str, callback: Callable[[], object]) -> None:
    """Run ``callback()`` once module ``name`` is imported: now if it already is, else
    right after its first import completes."""
    if name in sys.modules:
        callback()
    else:
        _wrap_import(name, after=callback)


def _wrap_import(name: str, *, around=None, after: Callable[[], object] | None = None) -> None:
    """Arrange for the first import of top-level module ``name`` to run inside the
    context manager ``around()`` and to call ``after()`` once it is complete."""
    sys.meta_path.insert(0, _ImportWrapper(name, around, after))


class _ImportWrapper(importlib.abc.MetaPathFinder):
    """A one-shot finder: finds ``name`` with the other finders and wraps its loader."""

    def __init__(self, name: str, around, after):
        self.name, self.around, self.after = name, around, after

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _WrappedLoader(spec.loader, self.around, self.after)
        return spec


class _WrappedLoader(importlib.abc.Loader):
    def __init__(self, loader, around, after):
        self.loader, self.around, self.after = loader, around, after

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with self.around() if self.around else contextlib.nullcontext():
            self.loader.exec_module(module)
        if self.after:
            self.after()

    def __getattr__(self, attribute):  # get_resource_reader, is_package, ...
        return getattr(self.loader, attribute)
