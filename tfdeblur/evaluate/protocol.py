"""Evaluation on a GOPRO-layout or paired dataset: a reproducible protocol.

Per image: PSNR on RGB in [0, 1] without border crop (:func:`tfdeblur.metrics.psnr`),
SSIM in scikit-image's Gaussian variant (:func:`tfdeblur.metrics.ssim`, the default and
DeepDeblur-PyTorch's) and in the MATLAB-compatible variant (:func:`tfdeblur.metrics.
ssim_matlab`: Wang et al.'s ``ssim_index.m`` on the Y channel of ``rgb2ycbcr``), seconds of
the network call alone (no reading, no metrics; after two warm-up calls, so Keras models
are timed in graph mode), and the blurry input's PSNR. Outputs are clamped to [0, 1] before scoring, as when written to disk;
``quantize=True`` also rounds them to 8 bits, scoring exactly what a saved PNG holds.

Results: one CSV row per image, means per sequence (GOPRO pair names are
``<sequence>/<file>``) and overall, a JSON record of the settings (for reproducing the
numbers), and a table beside the papers' numbers (:data:`PAPER_RESULTS`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import pathlib
import platform
import time
from collections.abc import Callable

import numpy as np

from tfdeblur.fileio import write_text_atomic
from tfdeblur.metrics import psnr, ssim, ssim_matlab

#: Metrics averaged per sequence and overall.
METRICS = ("psnr", "ssim", "ssim_matlab", "seconds", "psnr_blurry")

#: GOPRO test-set numbers as the papers report them (1111 pairs; SSIM variant as each
#: paper computed it, which none of them states exactly).
PAPER_RESULTS = [
    {"network": "lcnet", "source": "LCNet paper (ICASSP 2020), Table 1",
     "blur_key": "not stated", "psnr": 28.69, "ssim": 0.9204},
    {"network": "deepdeblur", "source": "DeepDeblur paper (CVPR 2017), Table 2, K=3",
     "blur_key": "blur_gamma (sec. 3: gamma-2.2 CRF synthesis)", "psnr": 29.08, "ssim": 0.9135},
    {"network": "deepdeblur", "source": "official DeepDeblur-PyTorch",
     "blur_key": "blur_gamma", "psnr": 30.40, "ssim": 0.9018},
    {"network": "sarn", "source": "SARN paper (AAAI 2020), Table 1",
     "blur_key": "not stated", "psnr": 31.13, "ssim": 0.947},
    {"network": "saphn", "source": "SAPHN paper (CVPR 2020), Table 1",
     "blur_key": "not stated", "psnr": 31.85, "ssim": 0.948},
]  # fmt: skip


def sequence_of(name: str) -> str:
    """The sequence of a pair name: ``"GOPR0384_11_00/000001.png"`` -> ``"GOPR0384_11_00"``;
    names without a folder (paired datasets) belong to the sequence ``""``."""
    return name.rsplit("/", 1)[0] if "/" in name else ""


def evaluate(
    model,
    pairs,
    csv_path: str | os.PathLike | None = None,
    limit: int | None = None,
    *,
    tile: int | str | None = None,
    overlap: int = 32,
    quantize: bool = False,
    progress: Callable[[int, int, dict], None] | None = None,
    precision: str | None = None,
) -> dict:
    """Evaluate a model on ``pairs`` (``tfdeblur.data.ImagePair``).

    Args:
        model: a ``keras.Model``, a :class:`tfdeblur.infer.runners.Runner`, or anything
            :func:`tfdeblur.infer.runners.load_runner` loads (``.keras``/``.tflite``/``.onnx``
            file, registry name).
        pairs: image pairs, evaluated in the given order.
        csv_path: where to write one row per image (atomically); optional. Columns
            ``name, sequence, psnr, ssim, ssim_matlab, seconds, psnr_blurry``.
        limit: evaluate the first ``limit`` pairs only.
        tile: tiled inference (see :func:`tfdeblur.infer.images.run_image`); default one pass.
        overlap: tile overlap.
        quantize: round outputs to 8 bits before scoring (what a saved PNG holds).
        progress: called as ``progress(done, total, row)`` after each image.
        precision: ``"float32"``, ``"bfloat16"`` or ``"auto"`` for Keras models (see
            :mod:`tfdeblur.infer.precision`); None (default): a given Runner as it is, anything
            else in float32.

    Returns:
        ``{"psnr", "ssim", "ssim_matlab", "seconds", "psnr_blurry"}`` means over images,
        ``"count"``, and ``"sequences"``: ``{sequence: {metric means..., "count"}}``.
    """
    from tfdeblur.data import load_pair
    from tfdeblur.infer.images import run_image
    from tfdeblur.infer.runners import load_runner
    from tfdeblur.infer.tiling import check_tiling

    check_tiling(tile, overlap)  # before the model is loaded
    runner = load_runner(model, precision=precision)
    pairs = list(pairs)[:limit] if limit else list(pairs)
    if not pairs:
        raise ValueError("evaluate: no image pairs to evaluate.")
    rows = []
    warmed = False
    for index, pair in enumerate(pairs):
        blur, sharp = load_pair(pair)
        if not warmed:
            # Twice: a Keras runner's first call of a shape is eager, its second traces
            # its graph (see tfdeblur.infer.runners.KerasRunner); the timed calls run the graph.
            run_image(runner, blur, tile, overlap)
            run_image(runner, blur, tile, overlap)
            warmed = True
        start = time.perf_counter()
        out = run_image(runner, blur, tile, overlap)
        seconds = time.perf_counter() - start
        out = np.clip(out, 0.0, 1.0)
        if quantize:
            out = (np.rint(out * 255.0) / 255.0).astype(np.float32)
        row = {
            "name": pair.name,
            "sequence": sequence_of(pair.name),
            "psnr": float(psnr(out, sharp)),
            "ssim": float(ssim(out, sharp)),
            "ssim_matlab": float(ssim_matlab(out, sharp)),
            "seconds": seconds,
            "psnr_blurry": float(psnr(blur, sharp)),
        }
        rows.append(row)
        if progress is not None:
            progress(index + 1, len(pairs), row)
    if csv_path is not None:
        write_csv(pathlib.Path(csv_path), rows)
    results = _means(rows)
    groups = {}
    for row in rows:
        groups.setdefault(row["sequence"], []).append(row)
    results["sequences"] = {seq: _means(group) for seq, group in groups.items()}
    return results


def _means(rows: list[dict]) -> dict:
    means = {key: float(np.mean([r[key] for r in rows])) for key in METRICS}
    means["count"] = len(rows)
    return means


def write_text(path: pathlib.Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    write_text_atomic(path, text)


def write_csv(path: pathlib.Path, rows: list[dict]) -> None:
    """Write dict rows (columns from the first row) to ``path`` atomically."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(pathlib.Path(path), buffer.getvalue())


def write_sequence_csv(path, results: dict) -> None:
    """Per-sequence means (``sequence, count, psnr, ...``), then an ``ALL`` row."""
    rows = [{"sequence": seq, **means} for seq, means in sorted(results["sequences"].items())]
    rows.append({"sequence": "ALL", **{k: v for k, v in results.items() if k != "sequences"}})
    columns = ["sequence", "count", *METRICS]
    write_csv(pathlib.Path(path), [{c: row[c] for c in columns} for row in rows])


def write_record(path, results: dict, settings: dict) -> None:
    """A JSON record of the settings, software versions and results, atomically."""
    import keras
    import tensorflow as tf

    record = {
        "settings": settings,
        "software": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
            "platform": platform.platform(),
        },
        "results": results,
    }
    write_text(pathlib.Path(path), json.dumps(record, indent=2) + "\n")


def paper_table(results: dict, network: str | None, blur_key: str, label: str = "this run") -> str:
    """A Markdown table of this run beside the papers' GOPRO numbers.

    Args:
        results: from :func:`evaluate`.
        network: the registry name of the evaluated network (its paper rows come first),
            or None.
        blur_key: the blur images evaluated (``blur`` or ``blur_gamma``).
        label: name of this run's row.
    """
    lines = [
        "| network | source | blur images | PSNR (dB) | SSIM | SSIM (MATLAB, Y) | s/frame |",
        "|---|---|---|---|---|---|---|",
        f"| {network or '?'} | {label} ({results['count']} images) | {blur_key} | "
        f"{results['psnr']:.2f} | {results['ssim']:.4f} | {results['ssim_matlab']:.4f} | "
        f"{results['seconds']:.3f} |",
    ]
    ordered = sorted(PAPER_RESULTS, key=lambda r: r["network"] != network)
    for row in ordered:
        lines.append(
            f"| {row['network']} | {row['source']} | {row['blur_key']} | {row['psnr']:.2f} | "
            f"{row['ssim']:g} | | |"
        )
    return "\n".join(lines) + "\n"
