"""Atomic file writes: an interrupted stage never leaves a half-written output that looks complete.

Every writer goes to a temporary sibling (same directory, so ``os.replace`` is an atomic rename
on POSIX) and renames it over the target only once the content is complete and flushed. The
temporary name carries the writer's process id (``.<name>.<pid>.<random>.tmp``): the next write
of the same target removes the ones whose process is gone, so a killed run leaves nothing
behind for long. Files and directories get the modes the umask gives (not the 0600/0700 of
``tempfile``), so a colleague on a shared workstation can read the outputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

_umask_lock = threading.Lock()


def _umask() -> int:
    with _umask_lock:  # os.umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(path: Path) -> int:
    """Remove the temporary siblings of ``path`` (``.<name>.<pid>.*.tmp``, files or folders)
    whose writing process is gone, and ones without a pid (written by older versions)."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:(\d+)\.)?.+\.tmp$")
    n = 0
    if not path.parent.is_dir():
        return 0
    for entry in path.parent.iterdir():
        m = pattern.match(entry.name)
        if m is None or (m.group(1) and _pid_alive(int(m.group(1)))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        n += 1
    return n


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    ``suffix`` defaults to the target's suffix (some writers look at it, e.g. matplotlib).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.",
        suffix=(suffix if suffix is not None else path.suffix) + ".tmp",
        dir=path.parent,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name, then swap it in place of ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    old = path.with_name(f".{path.name}.old")
    if old.exists() and path.exists():  # a swap interrupted after the new one was in place
        shutil.rmtree(old, ignore_errors=True)
    tmp = Path(
        tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    )
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_csv(path: str | os.PathLike, df: pd.DataFrame, **kwargs: Any) -> None:
    kwargs.setdefault("index", False)
    kwargs.setdefault("lineterminator", "\n")
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kwargs)


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


class NpzRows:
    """The members of an :func:`npz_rows` file that arrive in row blocks, each spooled to an
    uncompressed ``.npy`` of its final shape as it comes."""

    def __init__(self, spool: Path, shapes: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
        self.shapes, self.filled = shapes, dict.fromkeys(shapes, 0)
        self.files = {name: open(spool / f"{name}.npy", "wb+") for name in shapes}  # noqa: SIM115
        for name, (shape, dtype) in shapes.items():
            header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False}
            np.lib.format.write_array_header_1_0(self.files[name], {**header, "shape": shape})

    def append(self, name: str, rows: np.ndarray) -> None:
        """Add the next rows (k, ...) of member ``name``, converted to its dtype."""
        shape, dtype = self.shapes[name]
        rows = np.ascontiguousarray(rows, dtype=dtype)
        if rows.shape[1:] != shape[1:] or self.filled[name] + len(rows) > shape[0]:
            raise ValueError(f"{name}: rows {rows.shape} do not continue an array {shape}")
        self.files[name].write(rows.tobytes())
        self.filled[name] += len(rows)

    def missing(self) -> str:
        """The members not filled yet, as ``name rows/expected``; empty when complete."""
        rows = {k: shape[0] for k, (shape, _) in self.shapes.items()}
        return ", ".join(f"{k} {n}/{rows[k]}" for k, n in self.filled.items() if n != rows[k])

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()


@contextlib.contextmanager
def npz_rows(
    path: str | os.PathLike, **members: np.ndarray | tuple[tuple[int, ...], Any]
) -> Iterator[NpzRows]:
    """Write ``path`` as :func:`write_npz` would, with the large members arriving in row blocks:
    memory holds one block, not the arrays.

    ``members``, in file order: an array is stored as it is; a ``(shape, dtype)`` pair is
    filled through the yielded :class:`NpzRows` (``rows.append(name, block)``, in order) and
    spooled to disk next to ``path`` until the file is assembled. The same zip entries and
    ``.npy`` bytes as ``np.savez_compressed``; written atomically, nothing on an exception.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shapes = {
        k: (tuple(int(d) for d in v[0]), np.dtype(v[1]))
        for k, v in members.items()
        if isinstance(v, tuple)
    }
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.spool.", dir=path.parent) as spool:
        rows = NpzRows(Path(spool), shapes)
        try:
            yield rows
            if rows.missing():
                raise ValueError(f"{path}: rows written/expected: {rows.missing()}; not written")
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                _zip_npy_members(fh, members, rows.files)
        finally:
            rows.close()


def _zip_npy_members(fh: Any, members: dict[str, Any], spooled: dict[str, Any]) -> None:
    """np.savez_compressed's zip (deflated, zip64 entries ``<name>.npy``), streamed."""
    import zipfile

    with zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        for name, value in members.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as entry:
                if name in spooled:
                    spooled[name].seek(0)
                    shutil.copyfileobj(spooled[name], entry, 1 << 18)
                else:
                    np.lib.format.write_array(entry, np.asanyarray(value), allow_pickle=False)


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    import torch

    with atomic_path(path) as tmp:
        # Through a file object: torch.save names the zip's inner folder after a *path* it is
        # given (here a random temporary name), which would make equal objects differ in bytes.
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)


def save_figure(fig: Any, path: str | os.PathLike, **kwargs: Any) -> None:
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    kwargs.setdefault("dpi", 110)
    kwargs.setdefault("bbox_inches", "tight")
    # Fixed metadata so the same figure gives the same bytes run after run.
    kwargs.setdefault("metadata", {"Software": None})
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", **kwargs)
    plt.close(fig)
