from __future__ import annotations

import os
import stat
import zipfile

import numpy as np
import pytest

from imgae_dx.io import atomic_dir, atomic_path, npz_rows, write_json, write_npz, write_text


def test_atomic_path_keeps_old_content_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    write_text(target, "complete\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("interrupted")
    assert target.read_text() == "complete\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_dir_swaps_only_when_complete(tmp_path):
    target = tmp_path / "raw"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("a")
    assert (target / "a.txt").read_text() == "a"
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target) as tmp:
            (tmp / "b.txt").write_text("b")
            raise KeyboardInterrupt
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_write_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "m.json", {"auroc": float("nan")})
    assert not (tmp_path / "m.json").exists()


def test_save_torch_same_object_same_bytes(tmp_path):
    import torch

    from imgae_dx.io import save_torch

    obj = {"state_dict": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 3}
    save_torch(tmp_path / "a.pt", obj)
    save_torch(tmp_path / "b.pt", obj)  # another name, another temporary file
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert torch.equal(
        torch.load(tmp_path / "b.pt", weights_only=True)["state_dict"]["w"], obj["state_dict"]["w"]
    )


def _dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid  # exited and reaped: no process has this id now (barring reuse)


def test_a_killed_writers_temporaries_are_removed_by_the_next_write(tmp_path):
    dead = _dead_pid()
    stale_file = tmp_path / f".ae.pt.{dead}.k2j3.pt.tmp"
    stale_file.write_bytes(b"")  # what a SIGKILL between mkstemp and rename leaves
    old_style = tmp_path / ".ae.pt.x8y9.pt.tmp"  # no pid: written by an older version
    old_style.write_bytes(b"")
    mine = tmp_path / f".ae.pt.{os.getpid()}.live.pt.tmp"  # a write in progress: kept
    mine.write_bytes(b"")
    other = tmp_path / f".other.pt.{dead}.a.pt.tmp"  # another target's: not ours to touch
    other.write_bytes(b"")
    write_text(tmp_path / "ae.pt", "x")
    assert not stale_file.exists() and not old_style.exists()
    assert mine.exists() and other.exists()

    stale_dir = tmp_path / f".raw.{dead}.abc.tmp"
    (stale_dir / "images_001").mkdir(parents=True)
    with atomic_dir(tmp_path / "raw") as tmp:
        (tmp / "a").write_text("a")
    assert not stale_dir.exists() and (tmp_path / "raw" / "a").is_file()


def test_outputs_get_the_umask_modes(tmp_path):
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "m.json", "{}")
        with atomic_dir(tmp_path / "raw") as tmp:
            (tmp / "f").write_text("x")
        assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == 0o644
        assert stat.S_IMODE((tmp_path / "raw").stat().st_mode) == 0o755
        os.umask(0o077)
        write_text(tmp_path / "private.json", "{}")
        assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_npz_rows_writes_what_write_npz_writes(tmp_path):
    rng = np.random.default_rng(0)
    big = rng.random((7, 5, 3)).astype(np.float16)
    small = {"names": np.array(["a", "bb"]), "meta": np.array('{"k": 1}')}
    write_npz(tmp_path / "whole.npz", names=small["names"], big=big, meta=small["meta"])
    with npz_rows(tmp_path / "rows.npz", names=small["names"], big=(big.shape, np.float16),
                  meta=small["meta"]) as rows:  # fmt: skip
        for i in range(0, 7, 3):
            rows.append("big", big[i : i + 3].astype(np.float32))  # converted to the dtype
    entries = []
    for name in ("whole", "rows"):
        with zipfile.ZipFile(tmp_path / f"{name}.npz") as zf:
            entries.append(
                [(i.filename, i.CRC, i.file_size, i.compress_type) for i in zf.infolist()]
            )
    assert entries[0] == entries[1]  # the same .npy bytes, in the same order
    with np.load(tmp_path / "rows.npz") as z:
        np.testing.assert_array_equal(z["big"], big)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.npz", "whole.npz"]  # no spool


def test_npz_rows_writes_nothing_when_incomplete_or_interrupted(tmp_path):
    target = tmp_path / "maps.npz"
    with pytest.raises(ValueError, match="maps.npz: rows written/expected: big 2/4"):
        with npz_rows(target, big=((4, 2), np.float32)) as rows:
            rows.append("big", np.zeros((2, 2)))
    with pytest.raises(ValueError, match="do not continue"):
        with npz_rows(target, big=((4, 2), np.float32)) as rows:
            rows.append("big", np.zeros((5, 2)))
    with pytest.raises(KeyboardInterrupt):
        with npz_rows(target, big=((1, 2), np.float32)) as rows:
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
