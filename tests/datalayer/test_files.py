"""Atomic writes and state-folder paths (data.files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data.files import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    under_home,
)


def test_atomic_writes_create_folders_and_replace(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "x.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    atomic_write_text(tmp_path / "t.txt", "héllo")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    atomic_write_json(tmp_path / "j.json", {"b": 1, "a": [2]}, sort_keys=True)
    assert (tmp_path / "j.json").read_text() == '{"a": [2], "b": 1}'
    assert json.loads((tmp_path / "j.json").read_text()) == {"a": [2], "b": 1}
    # Only the destinations remain: no temporary files left behind.
    names = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert names == ["j.json", "t.txt", "x.bin"]


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "keep.txt"
    atomic_write_text(target, "old")

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_under_home(tmp_path: Path) -> None:
    assert under_home("images/a.png", tmp_path) == tmp_path / "images" / "a.png"
    assert under_home(Path("/abs/a.png"), tmp_path) == Path("/abs/a.png")
    assert under_home("x.png", str(tmp_path)) == tmp_path / "x.png"
