"""Decode, grayscale and resize the split's PNGs into one uint8 array per split.

Workers decode in parallel; results stream in manifest order into a memory-mapped ``.npy``
under a temporary name, so memory stays bounded whatever the dataset size and an interrupted
run leaves no complete-looking array behind.

Bad images follow the policy of ``docs/architecture.md``, "Bad data": anything decodable that
is not an 8-bit grayscale PNG (16-bit, RGB(A), palette, a JPEG behind ``.png``) is converted
and the repair listed; a missing or undecodable (e.g. truncated) file is left out of the array
and listed. Each listing is an :class:`~imgae_dx.data.issues.Issue`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from multiprocessing import get_context
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from imgae_dx.data import nih
from imgae_dx.data.issues import Issue
from imgae_dx.io import atomic_path

#: Formats whose compression loses detail: their pixels are not the original's.
LOSSY_FORMATS = frozenset({"JPEG", "MPO", "WEBP"})
_16_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")

#: ``(problem, reason)``: a short category the report counts by, and one line naming the file.
Problem = tuple[str, str]


class Decoded(NamedTuple):
    image: np.ndarray  # (S, S) uint8
    size: tuple[int, int]  # (width, height) of the file
    repairs: tuple[Problem, ...]  # what was converted to get 8-bit grayscale pixels


def load_image(path: str | os.PathLike, image_size: int) -> Decoded:
    """Read one PNG as 8-bit grayscale resized to ``image_size``² (area averaging).

    16-bit files are scaled to 8-bit by their maximum, RGB(A) and palette files converted to
    grayscale (ITU-R 601-2 luma, alpha dropped), and another format behind the name decoded as
    it is (a few NIH PNGs are 16-bit or RGBA); each such repair is in ``repairs``. A file PIL
    cannot decode raises PIL's error.
    """
    return _convert(_decode(path), image_size, str(path))


def _decode(path: str | os.PathLike) -> Image.Image:
    with Image.open(path) as im:
        im.load()  # the pixels, read now: a truncated file fails here
    return im


def _convert(im: Image.Image, image_size: int, where: str) -> Decoded:
    size, repairs = im.size, []
    if im.format != "PNG":
        lossy = " (lossy compression)" if im.format in LOSSY_FORMATS else ""
        why = f"not a PNG: {im.format} data{lossy}, decoded as it is"
        repairs.append(("not a PNG", f"{where}: {why}"))
    if im.mode in _16_BIT_MODES:
        a = np.asarray(im, dtype=np.float64)
        hi = a.max() if a.max() > 0 else 1.0
        why = f"16-bit (mode {im.mode}) scaled to 8-bit by its maximum {hi:g}"
        repairs.append(("16-bit", f"{where}: {why}"))
        im = Image.fromarray(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8))
    elif im.mode != "L":
        why = f"mode {im.mode} converted to 8-bit grayscale"
        repairs.append(("not 8-bit grayscale", f"{where}: {why}"))
        im = im.convert("L")
    if im.size != (image_size, image_size):
        im = im.resize((image_size, image_size), Image.Resampling.BOX)
    return Decoded(np.asarray(im, dtype=np.uint8), size, tuple(repairs))


class Outcome(NamedTuple):
    """What became of one manifest image (its pixels travel apart)."""

    size: tuple[int, int] | None  # (width, height) of the file; None when excluded
    repairs: tuple[Problem, ...]
    excluded: Problem | None  # why it is left out of the array, or None


def _work(args: tuple[str, int]) -> tuple[np.ndarray | None, Outcome]:
    path, size = args
    if not os.path.isfile(path):
        return None, Outcome(None, (), ("missing file", f"{path}: missing file"))
    try:
        im = _decode(path)
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for a damaged file
        why = " ".join(str(e).split()) or type(e).__name__
        return None, Outcome(None, (), ("undecodable", f"{path}: cannot decode: {why}"))
    d = _convert(im, size, path)
    return d.image, Outcome(d.size, d.repairs, None)


def image_path(raw_dir: str | os.PathLike, name: str, shard: object = None) -> Path:
    """Where a manifest image lies in ``data/raw``: ``<shard>/images/<name>`` for NIH (the shard
    from the name when not given), ``images/<name>`` for a manifest row without a shard
    (MedIAnomaly's layout)."""
    if shard is None:
        return Path(raw_dir) / nih.image_relpath(name)
    if isinstance(shard, str) and shard:
        return Path(raw_dir) / shard / "images" / name
    return Path(raw_dir) / "images" / name


class PreparedSplit(NamedTuple):
    kept: np.ndarray  # (N,) bool: the manifest rows in the array, in order
    sizes: np.ndarray  # (K, 2) int64: (width, height) of each kept file
    issues: list[Issue]  # repairs and exclusions, in manifest order


def prepare_split(
    manifest: pd.DataFrame,
    raw_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    image_size: int,
    workers: int | None = None,
    split: str = "",
    desc: str = "prepare",
) -> PreparedSplit:
    """Write ``out_path`` (.npy, uint8 (K, S, S)): the manifest's images that decode, in
    manifest order; the missing and undecodable ones are left out and listed in ``issues``
    (with the repairs), each under ``split``."""
    names = manifest["image"].tolist()
    shards = manifest["shard"].tolist() if "shard" in manifest else [None] * len(names)
    jobs = [(str(image_path(raw_dir, n, s)), image_size) for n, s in zip(names, shards)]
    with atomic_path(out_path) as tmp:
        arr = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(len(jobs), image_size, image_size)
        )
        outcomes = _fill(arr, jobs, workers or min(len(os.sched_getaffinity(0)), 8), desc)
        arr.flush()
        del arr
        kept = np.array([o.excluded is None for o in outcomes], dtype=bool)
        if not kept.all():
            _keep_first_rows(tmp, int(kept.sum()))
    sizes = [o.size for o in outcomes if o.excluded is None]
    return PreparedSplit(
        kept, np.array(sizes, dtype=np.int64).reshape(-1, 2), _issues(names, outcomes, split)
    )


def _fill(arr: np.ndarray, jobs: list[tuple[str, int]], workers: int, desc: str) -> list[Outcome]:
    """Decode ``jobs`` into the first rows of ``arr``, kept images one after the other."""
    bar = tqdm(total=len(jobs), desc=desc, unit="img", disable=None, leave=False)
    if workers <= 1 or len(jobs) < 64:
        results, pool = map(_work, jobs), None
    else:
        pool = get_context("spawn" if os.name == "nt" else "fork").Pool(workers)
        # imap keeps order; a bounded chunksize keeps the in-flight results small.
        results = pool.imap(_work, jobs, chunksize=16)
    outcomes, k = [], 0
    try:
        for img, outcome in results:
            if img is not None:
                arr[k] = img
                k += 1
            outcomes.append(outcome)
            bar.update(1)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        bar.close()
    return outcomes


def _keep_first_rows(path: Path, k: int, chunk: int = 4096) -> None:
    """Rewrite the ``.npy`` at ``path`` with its first ``k`` rows only."""
    src = np.load(path, mmap_mode="r")
    with atomic_path(path) as tmp:
        dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=src.dtype, shape=(k, *src.shape[1:]))
        for i in range(0, k, chunk):
            dst[i : min(i + chunk, k)] = src[i : min(i + chunk, k)]
        dst.flush()
        del dst
    del src


def _issues(names: Iterable[str], outcomes: list[Outcome], split: str) -> list[Issue]:
    out = []
    for name, o in zip(names, outcomes):
        if o.excluded is not None:
            out.append(Issue("prepare", split, name, None, "excluded", *o.excluded))
        out += [Issue("prepare", split, name, None, "repaired", *r) for r in o.repairs]
    return out


def scale_boxes(
    boxes: pd.DataFrame, manifest: pd.DataFrame, sizes: np.ndarray, image_size: int
) -> pd.DataFrame:
    """Boxes in PNG pixels → boxes in prepared pixels (``image_size``²), for manifest images
    only; ``sizes`` (N, 2) holds each manifest image's (width, height)."""
    wh = pd.DataFrame(
        {"image": manifest["image"].to_numpy(), "png_w": sizes[:, 0], "png_h": sizes[:, 1]}
    )
    out = boxes.merge(wh, on="image", how="inner")
    sx = image_size / out["png_w"]
    sy = image_size / out["png_h"]
    return pd.DataFrame(
        {
            "image": out["image"],
            "finding": out["finding"],
            "x": out["x"] * sx,
            "y": out["y"] * sy,
            "w": out["w"] * sx,
            "h": out["h"] * sy,
        }
    ).reset_index(drop=True)
