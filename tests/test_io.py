from __future__ import annotations

import os
import stat

import pytest

from imgae_dx.io import atomic_dir, atomic_path, write_json, write_text


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
