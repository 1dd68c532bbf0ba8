"""Decode, grayscale and resize the split's PNGs into one uint8 array per split.

Workers decode in parallel; results stream in manifest order into a memory-mapped ``.npy``
under a temporary name, so memory stays bounded whatever the dataset size and an interrupted
run leaves no complete-looking array behind.
"""

from __future__ import annotations

import os
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from imgae_dx.data import nih
from imgae_dx.io import atomic_path


def load_image(path: str | os.PathLike, image_size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Read one PNG as 8-bit grayscale resized to ``image_size``² (area averaging).

    Returns ``(img (S, S) uint8, (width, height) of the file)``. 16-bit and RGB(A) files
    (a few NIH PNGs are) are reduced to 8-bit grayscale first.
    """
    with Image.open(path) as im:
        im.load()
        size = im.size
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            a = np.asarray(im, dtype=np.float64)
            hi = a.max() if a.max() > 0 else 1.0
            im = Image.fromarray(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8))
        elif im.mode != "L":
            im = im.convert("L")
        if im.size != (image_size, image_size):
            im = im.resize((image_size, image_size), Image.Resampling.BOX)
        return np.asarray(im, dtype=np.uint8), size


def _work(args: tuple[str, int]) -> tuple[np.ndarray, tuple[int, int]]:
    path, size = args
    try:
        return load_image(path, size)
    except Exception as e:  # name the file: a worker traceback alone does not
        raise RuntimeError(f"cannot decode {path}: {e}") from e


def image_path(raw_dir: str | os.PathLike, name: str) -> Path:
    return Path(raw_dir) / nih.image_relpath(name)


def prepare_split(
    manifest: pd.DataFrame,
    raw_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    image_size: int,
    workers: int | None = None,
    desc: str = "prepare",
) -> np.ndarray:
    """Write ``out_path`` (.npy, uint8 (N, S, S), rows in manifest order); returns the PNG sizes (N, 2)."""
    paths = [image_path(raw_dir, n) for n in manifest["image"]]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) of the manifest are missing, e.g. {missing[0]}"
        )
    n = len(paths)
    sizes = np.zeros((n, 2), dtype=np.int64)
    workers = workers or min(len(os.sched_getaffinity(0)), 8)
    with atomic_path(out_path) as tmp:
        arr = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(n, image_size, image_size)
        )
        jobs = [(str(p), image_size) for p in paths]
        bar = tqdm(total=n, desc=desc, unit="img", disable=None, leave=False)
        if workers <= 1 or n < 64:
            results = map(_work, jobs)
            pool = None
        else:
            pool = get_context("spawn" if os.name == "nt" else "fork").Pool(workers)
            # imap keeps order; a bounded chunksize keeps the in-flight results small.
            results = pool.imap(_work, jobs, chunksize=16)
        try:
            for i, (img, size) in enumerate(results):
                arr[i] = img
                sizes[i] = size
                bar.update(1)
        finally:
            if pool is not None:
                pool.close()
                pool.join()
            bar.close()
        arr.flush()
        del arr
    return sizes


def scale_boxes(
    boxes: pd.DataFrame, manifest: pd.DataFrame, sizes: np.ndarray, image_size: int
) -> pd.DataFrame:
    """Boxes in PNG pixels → boxes in prepared pixels (``image_size``²), for manifest images only."""
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
