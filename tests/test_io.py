"""hybridtheory.io: atomic writes leave either the old file or the new one, with normal permissions."""
import os
import stat

import pytest

from hybridtheory.io import atomic_folder, atomic_path, atomic_write_json


def test_files_get_umask_permissions_not_private(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_json(target, {"x": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask


def test_crash_inside_atomic_path_keeps_old_file(tmp_path):
    target = tmp_path / "b.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["b.txt"]


def test_atomic_folder_replaces_whole_folder(tmp_path):
    target = tmp_path / "run"
    with atomic_folder(target) as tmp:
        (tmp / "f").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            (tmp / "g").write_text("2")
            raise RuntimeError("crash")
    assert sorted(p.name for p in target.iterdir()) == ["f"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
