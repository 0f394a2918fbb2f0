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
import warnings
from collections.abc import Iterator


def _remove(path: pathlib.Path) -> None:
    """Delete a file, a link or a directory tree (``rmtree`` alone skips files)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, directory: bool = False) -> Iterator[pathlib.Path]:
    """Context manager yielding a temporary path to write ``path`` through.

    Args:
        path: the destination file (or directory, with ``directory=True``).
        directory: the destination is a directory (e.g. a SavedModel). Two renames
            replace it, as a directory cannot be renamed over another one: whatever is at
            ``path`` (directory or file) is first moved aside, the new directory moved into
            place, and only then the old one deleted. If the second rename fails, the old
            one is moved back, so ``path`` is never left empty.

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
            if path.exists() or path.is_symlink():
                old = path.with_name(f".{path.name}.{secrets.token_hex(6)}.old")
                os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                if old is not None:
                    os.replace(old, path)  # put the previous artifact back
                raise
            if old is not None:
                try:
                    _remove(old)
                except OSError as err:  # the new artifact is in place: do not fail for this
                    warnings.warn(
                        f"could not delete the replaced {str(path)!r} moved to {str(old)!r}: {err}",
                        stacklevel=3,
                    )
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists() or tmp.is_symlink():
            tmp.unlink()


def write_bytes_synced(path: str | os.PathLike, data: bytes) -> pathlib.Path:
    """Write ``data`` to ``path`` and flush it to disk (not atomic by itself).

    Used on a temporary path of :func:`atomic_path`: the data is on disk before the rename
    makes it visible, so a crash never leaves an empty file under the final name.
    """
    path = pathlib.Path(path)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> pathlib.Path:
    """Write ``data`` to ``path`` atomically (flushed to disk before the rename)."""
    path = pathlib.Path(path)
    with atomic_path(path) as tmp:
        write_bytes_synced(tmp, data)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> pathlib.Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def check_output_path(path: str | os.PathLike, flag: str, *, directory: bool = False) -> None:
    """Refuse, before any work, an output that could never be written.

    An output under an existing file (``-o notes.txt/out.png``: its folder cannot be
    made), or, with ``directory``, an output folder that is an existing file.

    Args:
        path: the output file or folder.
        flag: the argument that gave it (``--output-dir``, ``-o``), for the message.
        directory: ``path`` is to be a folder.

    Raises:
        ValueError: naming ``flag``, ``path`` and the file in the way.
    """
    path = pathlib.Path(path).expanduser()
    if directory and path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is an existing file, not a folder.")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(
                    f"{flag} {str(path)!r} cannot be written: {str(parent)!r} is a file, "
                    "not a folder."
                )
            return
