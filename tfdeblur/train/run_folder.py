"""The run folder of ``train.py``: refused when it holds another run, replaced only on
``--overwrite``, and cleared of the temporary files an interrupted run left behind.

What a run writes in ``--output-dir`` (:data:`RUN_FILES`, :data:`RUN_FOLDERS`):
``train_config.json``, ``train_settings.json``, ``history.json``, ``summary.json``,
``best.keras``, ``final.keras``, ``checkpoints/`` and ``logs/``. Every write is atomic
(a temporary beside the destination, renamed when complete); a run killed mid-write leaves
its temporary behind, and :func:`remove_temporaries` deletes exactly those names:

* ``.best.<hex>.tmp.keras``, ``.final.<hex>.tmp.keras``, ``.<name>.<hex>.tmp.json``
  (:func:`tfdeblur.fileio.atomic_path`);
* ``checkpoints/ckpt-N_temp/`` (TensorFlow writes a checkpoint there, then renames it)
  and ``checkpoints/checkpoint.tmp<hex>`` (its pointer file's atomic write);
* ``$TMPDIR/tfdeblur-worker-<run>-<task>-*/``: the private checkpoint folder of a
  multi-worker run's non-chief task (:func:`worker_temp_dir`), named after the run folder
  and the task so that only the same task of the same run removes it.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import shutil
import tempfile

from tfdeblur.fileio import check_output_path

RUN_FILES = (
    "train_config.json",
    "train_settings.json",
    "history.json",
    "summary.json",
    "best.keras",
    "final.keras",
)
RUN_FOLDERS = ("checkpoints", "logs")

_ATOMIC_TEMP = re.compile(r"^\.[^/]+\.[0-9a-f]{12}\.tmp(\.keras|\.json)$")
_CKPT_TEMP = re.compile(r"^ckpt-\d+_temp$")
_POINTER_TEMP = re.compile(r"^checkpoint\.tmp[0-9a-f]*$")


def _remove(path: pathlib.Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_temporaries(out_dir: str | os.PathLike) -> list[pathlib.Path]:
    """Delete the temporary files an interrupted run left in ``out_dir`` (module
    docstring); returns what was removed. Nothing else is touched."""
    out_dir = pathlib.Path(out_dir)
    found = []
    if out_dir.is_dir():
        found += [p for p in out_dir.iterdir() if _ATOMIC_TEMP.match(p.name)]
    ckpt_dir = out_dir / "checkpoints"
    if ckpt_dir.is_dir():
        found += [
            p
            for p in ckpt_dir.iterdir()
            if (_CKPT_TEMP.match(p.name) and p.is_dir()) or _POINTER_TEMP.match(p.name)
        ]
    for path in found:
        _remove(path)
    return found


def _run_id(out_dir: pathlib.Path) -> str:
    return hashlib.sha256(str(out_dir.resolve()).encode()).hexdigest()[:10]


def worker_temp_dir(out_dir: str | os.PathLike, task: str) -> pathlib.Path:
    """A new private folder for a non-chief task's checkpoints, after removing the one
    the same task of the same run folder left behind (killed before it could)."""
    prefix = f"tfdeblur-worker-{_run_id(pathlib.Path(out_dir))}-{task}-"
    for old in pathlib.Path(tempfile.gettempdir()).glob(prefix + "*"):
        _remove(old)
    return pathlib.Path(tempfile.mkdtemp(prefix=prefix))


def prepare_run_folder(
    out_dir: str | os.PathLike, *, resume: bool, overwrite: bool, dry_run: bool = False
) -> list[pathlib.Path]:
    """Check ``--output-dir`` before anything is written, and make it ready (chief only).

    Temporaries of an interrupted run are removed first (:func:`remove_temporaries`).
    Then a folder that still holds anything is refused unless ``resume`` (continue the
    run in it) or ``overwrite``. ``overwrite`` deletes what a run writes
    (:data:`RUN_FILES`, :data:`RUN_FOLDERS`) and nothing else, and only in a folder that
    is a run folder (it has ``train_config.json``): ``--overwrite`` on a folder of other
    files is refused rather than guessed at.

    With ``dry_run`` nothing is removed, only refused: ``train`` checks this first (before
    the data check, which takes minutes on GOPRO) and removes after the data passed, so a
    refused run deletes nothing of the old one.

    Returns:
        The paths removed (temporaries and, with ``overwrite``, the old run's outputs).

    Raises:
        ValueError: both flags, an output under a file, or a folder that holds a run (or
            other files) without ``resume``/``overwrite``; the message names the folder
            and what is in it.
    """
    if resume and overwrite:
        raise ValueError("--resume continues the run in --output-dir; --overwrite replaces it.")
    out_dir = pathlib.Path(out_dir).expanduser()
    check_output_path(out_dir, "--output-dir", directory=True)
    removed = [] if dry_run else remove_temporaries(out_dir)
    entries = sorted(out_dir.iterdir()) if out_dir.is_dir() else []
    if dry_run:
        entries = [p for p in entries if not _ATOMIC_TEMP.match(p.name)]
    if not entries or resume:
        return removed
    names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in entries[:8])
    names += f", ... ({len(entries)} entries)" if len(entries) > 8 else ""
    if not (out_dir / "train_config.json").is_file():
        raise ValueError(
            f"--output-dir {str(out_dir)!r} is not empty and is not a run folder (no "
            f"train_config.json; it holds {names}): choose a new or empty folder."
        )
    if not overwrite:
        raise ValueError(
            f"--output-dir {str(out_dir)!r} holds a run ({names}): pass --resume to "
            "continue it, --overwrite to replace it, or choose another --output-dir."
        )
    if dry_run:
        return removed
    for name in (*RUN_FILES, *RUN_FOLDERS):
        path = out_dir / name
        if path.exists() or path.is_symlink():
            _remove(path)
            removed.append(path)
    return removed
