"""Atomic output: a failed write leaves the old file, a good one replaces it, no temp files."""

import pytest

from tfdeblur.fileio import atomic_path, write_text_atomic


def test_failed_write_keeps_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.csv"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]
    write_text_atomic(target, "new")
    assert target.read_text() == "new"


def test_directory_replaced_only_when_complete(tmp_path):
    target = tmp_path / "saved_model"
    with atomic_path(target, directory=True) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("1")
    with pytest.raises(ValueError):
        with atomic_path(target, directory=True) as tmp:
            tmp.mkdir()
            raise ValueError("conversion failed")
    assert (target / "a").read_text() == "1"
    with atomic_path(target, directory=True) as tmp:
        tmp.mkdir()
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved_model"]


def test_temporary_keeps_the_suffix(tmp_path):
    with atomic_path(tmp_path / "m.keras") as tmp:
        assert tmp.suffix == ".keras" and tmp.parent == tmp_path and not tmp.exists()
        tmp.write_bytes(b"x")


def test_old_directory_restored_when_the_final_rename_fails(tmp_path, monkeypatch):
    """The old folder is moved aside first; if moving the new one in fails, it comes back."""
    import os

    from tfdeblur import fileio

    target = tmp_path / "saved_model"
    with atomic_path(target, directory=True) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("1")
    real_replace = os.replace

    def failing_replace(src, dst):
        if ".tmp" in os.path.basename(src):  # the new directory moving into place
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        with atomic_path(target, directory=True) as tmp:
            tmp.mkdir()
            (tmp / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved_model"]  # no .old, no .tmp


def test_directory_replaces_a_file_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "model"
    target.write_text("an old file")
    with atomic_path(target, directory=True) as tmp:
        tmp.mkdir()
        (tmp / "saved_model.pb").write_bytes(b"x")
    assert target.is_dir() and sorted(p.name for p in target.iterdir()) == ["saved_model.pb"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # the old file is gone
