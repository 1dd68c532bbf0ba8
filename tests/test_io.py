from __future__ import annotations

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
