"""lrm_ros.common.atomic: a reader sees the old file or the new one, never a part, and a failed
write leaves nothing behind."""
import json
import os
import stat

import pytest

from lrm_ros.common.atomic import TMP_PREFIX, atomic_write, atomic_write_bytes, atomic_write_json


def test_a_write_replaces_the_file_whole_with_the_given_mode(tmp_path):
    path = tmp_path / "state.json"
    atomic_write_json(path, {"version": 1})
    assert atomic_write_json(path, {"version": 2}, indent=1) == path
    assert json.loads(path.read_text()) == {"version": 2}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    path = tmp_path / "policy.pt"
    atomic_write_bytes(path, b"old")

    def half_then_fail(f):
        f.write(b"new but not all of it")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"old"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_a_missing_directory_is_an_error_not_recreated(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_write_bytes(tmp_path / "gone" / "meta.json", b"{}")
    assert not (tmp_path / "gone").exists()
