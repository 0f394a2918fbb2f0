"""What every exporter returns, and the write-verify-replace step that finishes each."""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable

from export.prepare import LayerSwitch
from export.verify import VerificationReport
from export.verify import verify as verify_artifact
from tfdeblur.fileio import atomic_path
from tfdeblur.infer.runners import check_suffix


def artifact_size(path) -> int:
    """Bytes of a file, or of all files under a directory (SavedModel)."""
    path = pathlib.Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


@dataclasses.dataclass
class ExportResult:
    """An exported artifact.

    Attributes:
        path: the artifact (file, or directory for SavedModel).
        format: ``saved_model``, ``keras``, ``tflite`` or ``onnx``.
        quantization: TFLite quantization, ``none`` elsewhere.
        size_bytes: size on disk.
        switches: layers switched to their export formulation.
        verification: the verification report, None when verification was skipped.
    """

    path: pathlib.Path
    format: str
    quantization: str
    size_bytes: int
    switches: list[LayerSwitch]
    verification: VerificationReport | None

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "format": self.format,
            "quantization": self.quantization,
            "size_bytes": self.size_bytes,
            "switched_layers": [str(s) for s in self.switches],
            "verification": None if self.verification is None else self.verification.to_dict(),
        }


def finish_export(
    model,
    path,
    write: Callable[[pathlib.Path], None],
    format: str,
    quantization: str = "none",
    switches=(),
    *,
    directory: bool = False,
    input_size=None,
    verify: bool = True,
    images=None,
    crop=None,
    verbose: bool = True,
) -> ExportResult:
    """The last step of every exporter: write the artifact beside ``path``, verify it
    there, and only then move it into place.

    ``write(tmp)`` writes the artifact at ``tmp``, a temporary path beside ``path`` with
    the same suffix (see :func:`tfdeblur.fileio.atomic_path`). Verification runs on
    ``tmp``; only an artifact that passes replaces ``path``, so a failed export
    (:class:`export.ExportVerificationError`, or any error while writing) leaves what was
    at ``path`` as it was, e.g. a good earlier export.

    The keywords from ``verify`` on are those every exporter (:func:`export.keras_file`,
    :func:`export.saved_model`, :func:`export.onnx`, :func:`export.tflite`) takes and
    passes on as they are.

    Args:
        model: the Keras model the artifact comes from (verification's reference).
        path: the destination file (or directory with ``directory=True``).
        write: writes the artifact at the path it is given.
        format: one of :data:`tfdeblur.infer.runners.FORMATS`.
        quantization: TFLite quantization, ``none`` elsewhere.
        switches: layers switched to their export formulation.
        directory: the artifact is a directory (SavedModel).
        input_size: the export's fixed ``(H, W)``, if any: the default ``crop``.
        verify: run the artifact (in its own runtime: Keras, ``tf.saved_model.load``,
            onnxruntime, the LiteRT interpreter) on ``images`` and raise
            :class:`export.ExportVerificationError` if it disagrees with Keras beyond
            the tolerance of its format and quantization (an existing artifact at
            ``path`` is then left as it was). False moves it into place unchecked.
        images: verification images (see :func:`export.verify.load_image_pairs`;
            default the demo dataset's test split).
        crop: ``(H, W)`` centre crop of the verification images (``input_size`` if
            None).
        verbose: print the verification summary and what was written.

    Returns:
        :class:`ExportResult` with the final ``path``.
    """
    path = pathlib.Path(path)
    report = None
    with atomic_path(path, directory=directory) as tmp:
        write(tmp)
        size = artifact_size(tmp)
        if verify:
            report = verify_artifact(
                model,
                tmp,
                images,
                format=format,
                quantization=quantization,
                crop=crop or input_size,
                verbose=verbose,
                report_path=path,
            )
    if verbose:
        print(f"export: wrote {format} artifact {os.fspath(path)} ({size:,} bytes)")
    return ExportResult(path, format, quantization, size, list(switches), report)


def check_output_path(path, format: str) -> pathlib.Path:
    """``path`` as a Path ending with the exact suffix of ``format``, its parent created.

    Raises:
        ValueError: another suffix, or the right one in other case (``.KERAS``), naming
            the path (the rule of :func:`tfdeblur.infer.runners.check_suffix`).
    """
    path = pathlib.Path(path).expanduser()
    check_suffix(path, format)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
