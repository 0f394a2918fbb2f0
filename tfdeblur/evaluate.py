"""Evaluation on a GOPRO-layout or paired dataset: per-image PSNR / SSIM / seconds."""

from __future__ import annotations

import csv
import os
import pathlib
import tempfile
import time

import keras
import numpy as np

from tfdeblur.inference import run_model
from tfdeblur.metrics import psnr, ssim


def evaluate(
    model: keras.Model,
    pairs,
    csv_path: str | os.PathLike | None = None,
    limit: int | None = None,
) -> dict[str, float]:
    """Evaluate ``model`` on ``pairs`` (``tfdeblur.data.ImagePair``).

    Outputs are clamped to [0, 1] before scoring (as when written to disk). Seconds
    count the model call alone, not reading images, after one warm-up call.

    Args:
        model: the network.
        pairs: list of image pairs.
        csv_path: where to write ``name,psnr,ssim,seconds`` rows (atomically); optional.
        limit: evaluate the first ``limit`` pairs only.

    Returns:
        Means: ``{"psnr", "ssim", "seconds", "psnr_blurry", "count"}``.
    """
    from tfdeblur.data import load_pair

    pairs = list(pairs)[:limit] if limit else list(pairs)
    if not pairs:
        raise ValueError("evaluate: no image pairs to evaluate.")
    rows = []
    warmed = False
    for pair in pairs:
        blur, sharp = load_pair(pair)
        if not warmed:
            run_model(model, blur)
            warmed = True
        start = time.perf_counter()
        out = run_model(model, blur)
        seconds = time.perf_counter() - start
        out = np.clip(out, 0.0, 1.0)
        rows.append(
            {
                "name": pair.name,
                "psnr": float(psnr(out, sharp)),
                "ssim": float(ssim(out, sharp)),
                "seconds": seconds,
                "psnr_blurry": float(psnr(blur, sharp)),
            }
        )
    if csv_path is not None:
        _write_csv(pathlib.Path(csv_path), rows)
    means = {key: float(np.mean([r[key] for r in rows])) for key in ("psnr", "ssim", "seconds", "psnr_blurry")}
    means["count"] = len(rows)
    return means


def _write_csv(path: pathlib.Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".csv", dir=path.parent, prefix=f".{path.stem}-")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
