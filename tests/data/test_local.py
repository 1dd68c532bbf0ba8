"""data.source: local — the Kaggle layout and the official images_NN.tar.gz archives."""

from __future__ import annotations

import errno
import io
import json
import os
import tarfile
import zlib
from pathlib import Path

import pytest
from pydantic import ValidationError

from imgae_dx.config import LocalParams
from imgae_dx.data import nih, split
from imgae_dx.data.sources import files, local
from tests.data.fake_kaggle import tiny_nih

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def nih_files() -> dict[str, bytes]:
    return tiny_nih()


def selector(shards=("images_002",)):
    def select(meta_dir: Path) -> list[str]:
        entries, tv, te, _ = split.load_metadata(meta_dir)
        sel = split.make_split(
            entries, train_val_list=tv, test_list=te, shards=list(shards), val_fraction=0.2
        )
        select.selection = sel
        return sel.images()

    return select


def kaggle_layout(root: Path, files: dict[str, bytes], only=None) -> Path:
    for rel, data in files.items():
        if only is not None and rel.endswith(".png") and not rel.startswith(only):
            continue
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def official_layout(
    root: Path, files: dict[str, bytes], extra: dict[str, list[tarfile.TarInfo]] | None = None
) -> Path:
    """Metadata at the top, images in images_NN.tar.gz with members ``images/<name>.png``."""
    root.mkdir(parents=True, exist_ok=True)
    for m in nih.METADATA_FILES:
        (root / m).write_bytes(files[m])
    for shard in sorted({rel.split("/")[0] for rel in files if rel.endswith(".png")}):
        n = int(shard.split("_")[1])
        with tarfile.open(root / f"images_{n:02d}.tar.gz", "w:gz") as tf:
            for rel in sorted(r for r in files if r.startswith(shard + "/")):
                data = files[rel]
                info = tarfile.TarInfo("images/" + rel.rsplit("/", 1)[-1])
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return root


def assert_mirror(raw: Path, files: dict[str, bytes], names: list[str]) -> None:
    for m in nih.METADATA_FILES:
        assert (raw / m).read_bytes() == files[m]
    got = sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*.png"))
    assert got == sorted(nih.image_relpath(n) for n in names)
    for rel in got:
        assert (raw / rel).read_bytes() == files[rel]
    assert not [p for p in raw.rglob("*") if p.name.startswith(".")]


def test_kaggle_layout_is_hard_linked(tmp_path, nih_files):
    root = kaggle_layout(tmp_path / "nih", nih_files)
    select = selector()
    out = local.fetch(tmp_path / "raw", LocalParams(root=str(root)), select=select)
    names = select.selection.images()
    assert_mirror(tmp_path / "raw", nih_files, names)
    for n in names:
        rel = nih.image_relpath(n)
        assert (
            os.stat(tmp_path / "raw" / rel).st_ino == os.stat(root / rel).st_ino
        )  # no second copy
    assert out["placed"] == {"hardlink": len(names) + 4} and out["layout"] == "folders"
    man = json.loads((tmp_path / "raw" / "fetch_manifest.json").read_text())
    assert man["source"] == "local" and len(man["files"]) == len(names) + 4
    for row in man["files"]:
        data = nih_files[row["path"]]
        assert row["crc32"] == f"{zlib.crc32(data):08x}" and row["size"] == len(data)
        assert set(row) == {"path", "size", "crc32"}  # what, not from which folder nor how
    assert set(man) == {"source", "n_images", "files"} and out["root"] == str(root)


def test_copy_mode_and_cross_device_fallback(tmp_path, nih_files, monkeypatch):
    root = kaggle_layout(tmp_path / "nih", nih_files)
    out = local.fetch(tmp_path / "raw", LocalParams(root=str(root), link="copy"), select=selector())
    assert set(out["placed"]) == {"copy"}
    rel = nih.image_relpath(selector()(tmp_path / "raw")[0])
    assert os.stat(tmp_path / "raw" / rel).st_ino != os.stat(root / rel).st_ino

    def no_link(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(files.os, "link", no_link)
    select = selector()
    out = local.fetch(
        tmp_path / "raw2", LocalParams(root=str(root)), select=select
    )  # auto: reflink or copy
    assert (
        "hardlink" not in out["placed"]
        and sum(out["placed"].values()) == len(select.selection.images()) + 4
    )
    assert_mirror(tmp_path / "raw2", nih_files, select.selection.images())
    with pytest.raises(files.LinkError, match="cannot hardlink"):
        local.fetch(tmp_path / "raw3", LocalParams(root=str(root), link="hardlink"), select=select)


def test_flat_images_folder_and_v2020_metadata(tmp_path, nih_files):
    root = tmp_path / "nih"
    (root / "images").mkdir(parents=True)
    for rel, data in nih_files.items():
        if rel.endswith(".png"):
            (root / "images" / rel.rsplit("/", 1)[-1]).write_bytes(data)
        elif rel == nih.DATA_ENTRY:
            (root / "Data_Entry_2017_v2020.csv").write_bytes(data)
        else:
            (root / rel).write_bytes(data)
    select = selector(("images_001",))
    local.fetch(tmp_path / "raw", LocalParams(root=str(root)), select=select)
    assert_mirror(tmp_path / "raw", nih_files, select.selection.images())


def test_official_archives_read_only_the_needed_ones(tmp_path, nih_files, monkeypatch):
    root = official_layout(tmp_path / "nih", nih_files)
    opened = []
    real_open = tarfile.open

    def spy(name, *a, **k):
        opened.append(Path(name).name)
        return real_open(name, *a, **k)

    monkeypatch.setattr(local.tarfile, "open", spy)
    select = selector(("images_002",))
    out = local.fetch(
        tmp_path / "raw", LocalParams(root=str(root)), select=select, cache_dir=tmp_path / "cache"
    )
    names = select.selection.images()
    assert_mirror(tmp_path / "raw", nih_files, names)
    assert (
        opened == ["images_02.tar.gz"]
        and out["n_extracted"] == len(names)
        and out["layout"] == "archives"
    )
    # The same images from the folders of another copy: the same manifest, byte for byte.
    man = (tmp_path / "raw" / "fetch_manifest.json").read_bytes()
    folders = kaggle_layout(tmp_path / "nih2", nih_files)
    local.fetch(tmp_path / "raw_f", LocalParams(root=str(folders), link="copy"), select=select)
    assert (tmp_path / "raw_f" / "fetch_manifest.json").read_bytes() == man
    # Rerun with the cache: nothing is decompressed again.
    opened.clear()
    out = local.fetch(
        tmp_path / "raw2", LocalParams(root=str(root)), select=select, cache_dir=tmp_path / "cache"
    )
    assert opened == [] and out["n_from_cache"] == len(names) and out["n_extracted"] == 0
    assert_mirror(tmp_path / "raw2", nih_files, names)
    assert (tmp_path / "raw2" / "fetch_manifest.json").read_bytes() == man


def test_archives_without_cache_and_mixed_with_folders(tmp_path, nih_files):
    root = official_layout(tmp_path / "nih", nih_files)
    # images_001 also extracted as folders: taken from there, images_002 from its archive.
    kaggle_layout(root, {k: v for k, v in nih_files.items() if k.startswith("images_001/")})
    (root / "images_01.tar.gz").unlink()
    select = selector(("images_001", "images_002"))
    out = local.fetch(tmp_path / "raw", LocalParams(root=str(root)), select=select)
    assert_mirror(tmp_path / "raw", nih_files, select.selection.images())
    assert out["layout"] == "folders+archives" and out["archives_read"] == ["images_02.tar.gz"]


@pytest.mark.parametrize("bad", ["../evil.png", "/abs/evil.png", "images/../../evil.png"])
def test_unsafe_archive_members_are_refused(tmp_path, nih_files, bad):
    root = official_layout(tmp_path / "nih", nih_files)
    with tarfile.open(root / "images_02.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo(bad)
        info.size = 3
        tf.addfile(info, io.BytesIO(b"bad"))
        for rel in sorted(r for r in nih_files if r.startswith("images_002/")):
            info = tarfile.TarInfo("images/" + rel.rsplit("/", 1)[-1])
            info.size = len(nih_files[rel])
            tf.addfile(info, io.BytesIO(nih_files[rel]))
    with pytest.raises(local.UnsafeArchiveError, match="refusing member"):
        local.fetch(
            tmp_path / "out" / "raw",
            LocalParams(root=str(root)),
            select=selector(),
            cache_dir=tmp_path / "cache",
        )
    assert not list(tmp_path.rglob("evil.png"))
    assert not list((tmp_path / "out" / "raw").rglob("*.png"))


def test_symlink_member_is_refused(tmp_path, nih_files):
    root = official_layout(tmp_path / "nih", nih_files)
    name = sorted(r for r in nih_files if r.startswith("images_002/"))[0].rsplit("/", 1)[-1]
    with tarfile.open(root / "images_02.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("images/" + name)
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(local.UnsafeArchiveError):
        local.fetch(tmp_path / "raw", LocalParams(root=str(root)), select=lambda d: [name])


def test_missing_things_are_reported(tmp_path, nih_files):
    with pytest.raises(local.LocalSourceError, match="data.local.root is not set"):
        local.fetch(tmp_path / "raw", LocalParams(), select=selector())
    with pytest.raises(local.LocalSourceError, match="not a directory"):
        local.fetch(tmp_path / "raw", LocalParams(root=str(tmp_path / "nope")), select=selector())
    root = kaggle_layout(tmp_path / "nih", nih_files, only="images_001/")
    with pytest.raises(local.LocalSourceError, match=r"\d+ selected image\(s\) are not under"):
        local.fetch(tmp_path / "raw", LocalParams(root=str(root)), select=selector())
    (root / nih.DATA_ENTRY).unlink()
    with pytest.raises(local.LocalSourceError, match="has no Data_Entry_2017.csv"):
        local.fetch(tmp_path / "raw", LocalParams(root=str(root)), select=selector())
    with pytest.raises(ValueError, match="not an NIH image name"):
        kaggle_layout(tmp_path / "nih2", nih_files)
        local.fetch(
            tmp_path / "raw",
            LocalParams(root=str(tmp_path / "nih2")),
            select=lambda d: ["../../etc/passwd"],
        )


def test_unknown_link_mode_is_refused_by_the_schema():
    with pytest.raises(ValidationError, match="link"):
        LocalParams(link="symlink")
