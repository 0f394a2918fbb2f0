"""Atomic file output: every file tfdeblur writes appears whole or not at all.

A writer gets a temporary path beside the destination (same directory, so same file
system), writes there, and the temporary is moved onto the destination with
``os.replace`` only when writing succeeded; on any error it is removed and an existing
destination is left as it was. Readers therefore never see a half-written model, image,
CSV or exported artifact, and an interrupted run never destroys a good file.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import secrets
import shutil
from collections.abc import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, directory: bool = False) -> Iterator[pathlib.Path]:
    """Context manager yielding a temporary path to write ``path`` through.

    Args:
        path: the destination file (or directory, with ``directory=True``).
        directory: the destination is a directory (e.g. a SavedModel); an existing one is
            replaced only after the new one is complete.

    Yields:
        A path that does not exist yet, beside ``path``, with the same suffix (writers
        such as Keras choose the format by suffix).
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(6)}.tmp{path.suffix}")
    try:
        yield tmp
        if directory:
            old = None
            if path.exists():
                old = path.with_name(f".{path.name}.{secrets.token_hex(6)}.old")
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> pathlib.Path:
    """Write ``data`` to ``path`` atomically (flushed to disk before the rename)."""
    path = pathlib.Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> pathlib.Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))
