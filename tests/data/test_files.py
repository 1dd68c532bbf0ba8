"""File helpers shared by the sources: temporary names and their clean-up."""

from __future__ import annotations

import os

from imgae_dx.data.sources.files import remove_stale_parts, temp_name


def test_remove_stale_parts(tmp_path):
    f = tmp_path / "a" / "b.png"
    f.parent.mkdir()
    f.write_bytes(b"ok")
    temp_name(f).write_bytes(b"half")
    assert remove_stale_parts(tmp_path) == 1
    assert os.listdir(f.parent) == ["b.png"]
