"""Run an exported artifact on real images and compare it with the Keras model.

Every exporter calls :func:`verify` on its artifact before moving it into place (a
failing artifact never replaces the file or folder at the destination): the artifact
runs in the runtime a user deploys it with (``tf.saved_model.load``,
``keras.models.load_model`` with ``safe_mode=True``, the LiteRT interpreter of
``ai_edge_litert``, onnxruntime), through the runners of :mod:`tfdeblur.infer.runners` (the
same code ``tfdeblur deblur`` and ``tfdeblur bench`` run), on real blurry images, and the
report gives, per image,

* PSNR of the artifact's output against the Keras model's output (unclamped outputs;
  peak: the Keras output's dynamic range ``max - min``, at least 1): the agreement,
  which must reach the format's tolerance (:data:`TOLERANCES_DB`), else
  :class:`ExportVerificationError`. For a trained network the range is about 1 and this
  is the usual PSNR; an untrained one (tests, random weights) may output a range of 5,
  and every rounding error (float16, int8) scales with it, so the peak does too;
* PSNR against the sharp image, where there is one, for the artifact, the Keras model
  and the blurry input (outputs clipped to [0, 1], as written to an image file).

Tolerances (dB of PSNR against the Keras output):

* float32 formats (SavedModel, .keras, TFLite ``none``, ONNX): 45 dB. They compute the
  same function in float32; what differs is the order of summation and fused kernels,
  errors near 1e-6 (> 100 dB). 45 dB is the issue's bound and leaves room for deep
  networks on large images while catching any wrong op, layout or weight.
* TFLite ``float16``: 45 dB (weights rounded to float16, relative error 2^-11, computed
  in float32 on CPU).
* TFLite ``dynamic`` (int8 weights, float activations quantized on the fly inside the
  hybrid kernels): 30 dB. Per-channel int8 weights carry a relative error up to 2^-8
  of each channel's range; untrained tiny networks measure 46-67 dB.
* TFLite ``int8`` (int8 weights and activations): 25 dB. Every activation is rounded to
  256 levels of its calibrated range: the output's rounding alone gives
  ``20 log10(255) + 10.8 = 59 dB`` of its range, and each layer adds its own rounding,
  compounding through the network: untrained tiny networks measure 31-48 dB on GOPRO
  crops. The bound catches broken calibration or a wrong float<->int mapping (below 15
  dB); the quality target for trained models (PSNR against the sharp image within 0.5
  dB of the float model's) is checked by ``tfdeblur bench``, not here.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from collections.abc import Callable, Sequence

import numpy as np

from export.signature import as_model_input, first_output, model_input
from tfdeblur.infer.runners import Runner, TFLiteRunner, detect_format, load_runner

TOLERANCES_DB = {
    ("saved_model", "none"): 45.0,
    ("keras", "none"): 45.0,
    ("onnx", "none"): 45.0,
    ("tflite", "none"): 45.0,
    ("tflite", "float16"): 45.0,
    ("tflite", "dynamic"): 30.0,
    ("tflite", "int8"): 25.0,
}

# Frames of a clip made from one still image for video networks (see make_samples).
CLIP_LENGTH = 3
CLIP_SHIFT = 2


class ExportVerificationError(RuntimeError):
    """An exported artifact disagrees with its Keras model beyond the format's tolerance."""


def tolerance_db(format: str, quantization: str = "none") -> float:
    """Minimum PSNR (dB) of the artifact against Keras for ``format``/``quantization``."""
    key = (format, quantization or "none")
    if key not in TOLERANCES_DB:
        raise ValueError(
            f"no tolerance for format={format!r}, quantization={quantization!r}; known: "
            f"{sorted(TOLERANCES_DB)}."
        )
    return TOLERANCES_DB[key]


def psnr(prediction: np.ndarray, target: np.ndarray, data_range: float = 1.0) -> float:
    """PSNR in dB of two arrays (all values together); ``inf`` if equal, ``nan`` on NaN."""
    prediction = np.asarray(prediction, np.float64)
    target = np.asarray(target, np.float64)
    if prediction.shape != target.shape:
        raise ValueError(f"shapes differ: {prediction.shape} vs {target.shape}.")
    mse = float(np.mean((prediction - target) ** 2))
    if math.isnan(mse):
        return math.nan
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def load_artifact(path, format: str | None = None, num_threads: int | None = None) -> Runner:
    """The artifact at ``path`` as a :class:`tfdeblur.infer.runners.Runner`.

    A thin alias of :func:`tfdeblur.infer.runners.load_runner` for exported artifacts (a
    file or SavedModel directory, never a registry name): ``runner.run_batch(x)`` maps
    float32 ``(1, ..., 3)`` to float32, quantized TFLite inputs/outputs mapped with the
    interpreter's scale and zero point.

    Raises:
        FileNotFoundError: nothing at ``path``.
    """
    if not pathlib.Path(path).expanduser().exists():
        raise FileNotFoundError(f"Artifact not found: {str(path)!r}")
    return load_runner(path, format=format, num_threads=num_threads)


# --------------------------------------------------------------------------- images


@dataclasses.dataclass
class Sample:
    """One verification input: the model input and, where known, the sharp target."""

    name: str
    x: np.ndarray  # (1, H, W, C) or (1, T, H, W, C)
    sharp: np.ndarray | None  # same shape as the model output, or None


def _sharp_twin(path: pathlib.Path) -> pathlib.Path | None:
    name = path.name
    for blur in ("blur_gamma", "blur"):
        if blur in name:
            twin = path.with_name(name.replace(blur, "sharp", 1))
            return twin if twin.is_file() else None
    return None


def find_images(spec) -> list[tuple[str, pathlib.Path, pathlib.Path | None]]:
    """Blurry images (with their sharp twin where one exists) named by ``spec``.

    ``spec`` is an image file, a list of files, or a folder: a GOPRO-layout or paired
    dataset (its ``test`` split, see :func:`tfdeblur.data.find_pairs`), else a flat folder
    whose images named ``*blur*`` are inputs and ``*sharp*`` (same name, ``blur`` or
    ``blur_gamma`` replaced by ``sharp``) their targets; a flat folder without such names
    gives inputs without targets.
    """
    from tfdeblur import data

    if isinstance(spec, (str, os.PathLike)):
        path = pathlib.Path(spec).expanduser()
        if path.is_dir():
            try:
                pairs = data.find_pairs(path, "test")
                return [(p.name, pathlib.Path(p.blur), pathlib.Path(p.sharp)) for p in pairs]
            except (data.DatasetError, FileNotFoundError):
                pass
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in data.IMAGE_EXTENSIONS)
            if not files:
                raise FileNotFoundError(f"No images in verification folder {str(path)!r}.")
            blurry = [p for p in files if "blur" in p.name]
            if not blurry:
                blurry = [p for p in files if "sharp" not in p.name]
            return [(p.name, p, _sharp_twin(p)) for p in blurry]
        if not path.is_file():
            raise FileNotFoundError(f"Verification image not found: {str(path)!r}")
        return [(path.name, path, _sharp_twin(path))]
    found = []
    for item in spec:
        found.extend(find_images(item))
    return found


def load_image_pairs(spec=None) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """``(name, blurry, sharp or None)`` float32 ``(H, W, 3)`` images.

    Args:
        spec: None for the demo dataset's test split (built offline on first use, see
            :func:`tfdeblur.data.resolve_data`); a path or list of paths (see
            :func:`find_images`); or a list of arrays, ``(blurry, sharp)`` tuples or
            ``(name, blurry, sharp)`` tuples (what this function returns).
    """
    from tfdeblur.data import image_io

    if spec is None:
        from tfdeblur import data

        spec = data.resolve_data("demo")
    if isinstance(spec, np.ndarray):
        spec = [spec]
    if isinstance(spec, (str, os.PathLike)) or (
        isinstance(spec, Sequence) and spec and isinstance(spec[0], (str, os.PathLike))
    ):
        return [
            (name, image_io.read_image(blur), None if sharp is None else image_io.read_image(sharp))
            for name, blur, sharp in find_images(spec)
        ]
    pairs = []
    for i, item in enumerate(spec):
        name = f"image{i}"
        if isinstance(item, tuple) and len(item) == 3 and isinstance(item[0], str):
            name, blurry, sharp = item  # already loaded by this function
        elif isinstance(item, tuple):
            blurry, sharp = item
        else:
            blurry, sharp = item, None
        blurry = np.asarray(blurry, np.float32)
        if blurry.ndim != 3:
            raise ValueError(f"verification image {i} must be (H, W, C), got {blurry.shape}.")
        pairs.append((name, blurry, None if sharp is None else np.asarray(sharp, np.float32)))
    if not pairs:
        raise ValueError("no verification images given.")
    return pairs


def _window(image: np.ndarray, box, frame: int) -> np.ndarray:
    """``box = (top, left, h, w)`` shifted right by ``frame * CLIP_SHIFT`` pixels."""
    top, left, h, w = box
    x0 = left + frame * CLIP_SHIFT
    return image[top : top + h, x0 : x0 + w]


def make_samples(model, images=None, *, crop=None) -> list[Sample]:
    """Model inputs (batch 1) from image pairs.

    Image networks take each blurry image; video networks ``(B, T, H, W, C)`` take a clip
    of :data:`CLIP_LENGTH` windows of it shifted by :data:`CLIP_SHIFT` pixels per frame
    (a camera pan over a still scene), the sharp clip built the same way.

    Args:
        model: the Keras model (its input layout).
        images: see :func:`load_image_pairs`.
        crop: ``(H, W)`` centre crop of every image (per frame for clips), None for full
            images.
    """
    shape = tuple(model_input(model).shape)
    video = len(shape) == 5
    samples = []
    for name, blurry, sharp in load_image_pairs(images):
        height, width = blurry.shape[:2]
        extra = CLIP_SHIFT * (CLIP_LENGTH - 1) if video else 0
        h, w = (height, width - extra) if crop is None else crop
        if h > height or w + extra > width:
            raise ValueError(
                f"verification image {name!r} ({height}x{width}) is smaller than the crop "
                f"{h}x{w + extra}."
            )
        box = ((height - h) // 2, (width - w - extra) // 2, h, w)
        if video:
            frames = [_window(blurry, box, t) for t in range(CLIP_LENGTH)]
            target = None
            if sharp is not None:
                target = np.stack([_window(sharp, box, t) for t in range(CLIP_LENGTH)])
        else:
            frames = _window(blurry, box, 0)
            target = None if sharp is None else _window(sharp, box, 0)
        x = as_model_input(shape, frames)
        samples.append(Sample(name, x, None if target is None else target[None]))
    return samples


# --------------------------------------------------------------------------- report


@dataclasses.dataclass
class ImageResult:
    name: str
    shape: tuple
    psnr_vs_keras: float
    psnr_vs_sharp: float | None = None
    keras_psnr_vs_sharp: float | None = None
    blurry_psnr_vs_sharp: float | None = None


@dataclasses.dataclass
class VerificationReport:
    """What :func:`verify` measured; ``passed`` is ``min_psnr_vs_keras >= tolerance_db``."""

    path: str
    format: str
    quantization: str
    tolerance_db: float
    images: list[ImageResult]

    @property
    def min_psnr_vs_keras(self) -> float:
        values = [r.psnr_vs_keras for r in self.images]
        return math.nan if any(math.isnan(v) for v in values) else min(values)

    def _mean(self, field):
        values = [getattr(r, field) for r in self.images if getattr(r, field) is not None]
        return float(np.mean(values)) if values else None

    @property
    def psnr_vs_sharp(self) -> float | None:
        return self._mean("psnr_vs_sharp")

    @property
    def keras_psnr_vs_sharp(self) -> float | None:
        return self._mean("keras_psnr_vs_sharp")

    @property
    def blurry_psnr_vs_sharp(self) -> float | None:
        return self._mean("blurry_psnr_vs_sharp")

    @property
    def passed(self) -> bool:
        return self.min_psnr_vs_keras >= self.tolerance_db  # False on NaN

    def summary(self) -> str:
        label = self.format if self.quantization == "none" else f"{self.format}/{self.quantization}"
        line = (
            f"verify {label}: PSNR vs Keras min {self.min_psnr_vs_keras:.2f} dB over "
            f"{len(self.images)} image(s) (tolerance {self.tolerance_db:.0f} dB)"
        )
        if self.psnr_vs_sharp is not None:
            line += (
                f"; vs sharp: artifact {self.psnr_vs_sharp:.2f} dB, Keras "
                f"{self.keras_psnr_vs_sharp:.2f} dB, blurry {self.blurry_psnr_vs_sharp:.2f} dB"
            )
        return line + (" -- OK" if self.passed else " -- FAILED")

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "format": self.format,
            "quantization": self.quantization,
            "tolerance_db": self.tolerance_db,
            "min_psnr_vs_keras": self.min_psnr_vs_keras,
            "psnr_vs_sharp": self.psnr_vs_sharp,
            "keras_psnr_vs_sharp": self.keras_psnr_vs_sharp,
            "blurry_psnr_vs_sharp": self.blurry_psnr_vs_sharp,
            "passed": self.passed,
            "images": [dataclasses.asdict(r) for r in self.images],
        }


def verify(
    model,
    artifact,
    images=None,
    *,
    format: str | None = None,
    quantization: str = "none",
    tolerance: float | None = None,
    crop=None,
    runner: Runner | Callable | None = None,
    raise_on_failure: bool = True,
    verbose: bool = False,
    report_path=None,
) -> VerificationReport:
    """Run ``artifact`` and the Keras ``model`` on real images and compare them.

    Args:
        model: the Keras model the artifact was exported from (its original
            formulation: any layer switched for export is compared against it).
        artifact: path of the exported artifact.
        images: verification images (see :func:`load_image_pairs`; default: the demo
            dataset's test split).
        format: artifact format; detected from the path if None.
        quantization: TFLite quantization (``none``, ``float16``, ``dynamic``, ``int8``).
        tolerance: minimum PSNR against Keras in dB; :data:`TOLERANCES_DB` if None.
        crop: ``(H, W)`` centre crop of the images, None for full images.
        runner: what runs the artifact: a :class:`tfdeblur.infer.runners.Runner` or a
            callable on model inputs (default :func:`load_artifact`).
        raise_on_failure: raise :class:`ExportVerificationError` when the artifact
            disagrees beyond the tolerance (else only ``report.passed`` is False).
        verbose: print the summary line.
        report_path: the path the report and errors name (default ``artifact``); the
            exporters verify a temporary file and name its final path.

    Returns:
        :class:`VerificationReport`.
    """
    format = format or detect_format(artifact)
    tol = tolerance_db(format, quantization) if tolerance is None else float(tolerance)
    name = str(artifact if report_path is None else report_path)
    run = runner or load_artifact(artifact, format)
    if isinstance(run, Runner):
        run = run.run_batch
    results = []
    references = {}
    for sample in make_samples(model, images, crop=crop):
        reference = np.asarray(first_output(model(sample.x, training=False)), np.float32)
        references[sample.name] = (sample.x, reference)
        output = np.asarray(run(sample.x), np.float32)
        if output.shape != reference.shape:
            hint = _delegate_hint(artifact, format, runner, sample.x, reference, tol)
            raise ExportVerificationError(
                f"{format} artifact {name!r} returned shape {output.shape} for input "
                f"{sample.x.shape}; the Keras model returns {reference.shape}.{hint}"
            )
        # Peak: the Keras output's dynamic range, at least 1 (see the module docstring).
        peak = max(1.0, float(np.ptp(reference))) if np.isfinite(reference).all() else 1.0
        result = ImageResult(sample.name, tuple(sample.x.shape), psnr(output, reference, peak))
        if sample.sharp is not None:
            result.psnr_vs_sharp = psnr(np.clip(output, 0, 1), sample.sharp)
            result.keras_psnr_vs_sharp = psnr(np.clip(reference, 0, 1), sample.sharp)
            # Video samples compare the whole clip; the blurry clip has the same layout.
            result.blurry_psnr_vs_sharp = psnr(sample.x, sample.sharp)
        results.append(result)
    report = VerificationReport(name, format, quantization or "none", tol, results)
    if verbose:
        print(report.summary())
    if raise_on_failure and not report.passed:
        worst = min(
            results, key=lambda r: -math.inf if math.isnan(r.psnr_vs_keras) else r.psnr_vs_keras
        )
        hint = _delegate_hint(artifact, format, runner, *references[worst.name], tol)
        raise ExportVerificationError(
            f"{format} artifact {name!r} (quantization {quantization!r}) disagrees with "
            f"the Keras model: PSNR {worst.psnr_vs_keras:.2f} dB on {worst.name!r} "
            f"{worst.shape}, below the {tol:.1f} dB tolerance of its format.{hint}"
        )
    return report


def _delegate_hint(artifact, format, runner, x, reference, tol) -> str:
    """For a failing TFLite file: does it pass without the XNNPACK delegate?"""
    if format != "tflite" or runner is not None:
        return ""
    try:
        output = TFLiteRunner(artifact, default_delegates=False).run_batch(x)
    except Exception:  # the diagnosis must not hide the original error
        return ""
    if output.shape == reference.shape and psnr(output, reference) >= tol:
        return (
            " Without the default XNNPACK delegate (reference kernels) it agrees "
            f"({psnr(output, reference):.1f} dB): the converted model is right and the "
            "delegate mis-runs one of its ops; rewrite that layer or run with "
            "OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES."
        )
    return " It disagrees without the XNNPACK delegate too (a conversion error)."
