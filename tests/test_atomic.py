import os
import stat

import numpy as np
import pytest

from linfilt.atomic import atomic_path, save_npy, write_json


def test_failed_write_leaves_target_untouched(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_save_npy_round_trip_and_json(tmp_path):
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    save_npy(tmp_path / "sub" / "a.npy", arr)
    np.testing.assert_array_equal(np.load(tmp_path / "sub" / "a.npy"), arr)
    write_json(tmp_path / "m.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "m.json").read_text().startswith('{\n  "a"')


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_new_files_get_the_mode_open_would_give(tmp_path, umask):
    old = os.umask(umask)
    try:
        with open(tmp_path / "by_open", "w"):
            pass
        write_json(tmp_path / "new.json", {"a": 1})
        save_npy(tmp_path / "new.npy", np.zeros(2))
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "by_open").stat().st_mode) == expected  # the reference
    for name in ("new.json", "new.npy"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected


def test_replacing_a_file_keeps_its_mode(tmp_path):
    target = tmp_path / "private.json"
    target.write_text("old")
    target.chmod(0o640)
    write_json(target, {"b": 2})
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert target.read_text() == '{\n  "b": 2\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["private.json"]
