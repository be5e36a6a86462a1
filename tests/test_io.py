"""Atomic writes: complete files with the usual permissions; a killed write's leftovers are found and removed."""

import os
import stat

from losstopo.io import remove_orphans, save_json, save_torch


def test_outputs_get_the_permissions_of_any_new_file(tmp_path):
    mask = os.umask(0o022)
    try:
        save_json({"a": 1}, tmp_path / "x.json")
        save_torch({"b": 2}, tmp_path / "y.pt")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o644  # mkstemp alone leaves 0600
    assert stat.S_IMODE((tmp_path / "y.pt").stat().st_mode) == 0o644


def test_a_killed_writes_temporary_files_are_removed_and_nothing_else(tmp_path):
    (tmp_path / "variant").mkdir()
    orphan = tmp_path / "variant" / ".minima.pt.k3j_x.tmp"
    orphan.write_bytes(b"half")
    kept = [tmp_path / "variant" / "minima.pt", tmp_path / "notes.tmp", tmp_path / ".hidden"]
    for path in kept:
        path.write_bytes(b"x")
    assert remove_orphans(tmp_path) == [orphan]
    assert not orphan.exists() and all(path.exists() for path in kept)
    assert remove_orphans(tmp_path / "missing") == []
