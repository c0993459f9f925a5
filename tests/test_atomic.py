"""Atomic writes keep the permissions the umask gives, and a full disk is a named error."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from astropt import atomic
from astropt.atomic import DiskFullError, atomic_write_text


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_respect_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with open(tmp_path / "plain.txt", "w") as fh:  # what an ordinary open gives
            fh.write("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o666 & ~umask


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "manifest.json"
    atomic_write_text(target, "good")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(DiskFullError, match=r"manifest\.json.*disk is full"):
        atomic_write_text(target, "new")
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
