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
