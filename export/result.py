"""What every exporter returns, and the verification step they share."""

from __future__ import annotations

import dataclasses
import os
import pathlib

from export.prepare import LayerSwitch
from export.verify import VerificationReport, verify


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


def finish(
    model,
    path,
    format: str,
    quantization: str,
    switches,
    *,
    verify_images,
    do_verify: bool,
    verbose: bool,
    crop=None,
) -> ExportResult:
    """Verify the written artifact (raising on disagreement) and build the result."""
    path = pathlib.Path(path)
    if verbose:
        print(f"export: wrote {format} artifact {os.fspath(path)} ({artifact_size(path):,} bytes)")
    report = None
    if do_verify:
        report = verify(
            model,
            path,
            verify_images,
            format=format,
            quantization=quantization,
            crop=crop,
            verbose=verbose,
        )
    return ExportResult(path, format, quantization, artifact_size(path), list(switches), report)


def check_output_path(path, suffix: str | None) -> pathlib.Path:
    """``path`` as a Path with the format's suffix, its parent created."""
    path = pathlib.Path(path).expanduser()
    if suffix is not None and path.suffix.lower() != suffix:
        raise ValueError(f"output path must end with {suffix!r}, got {str(path)!r}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
