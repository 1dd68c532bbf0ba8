"""Throughput of the kaggle source against the fake Kaggle on loopback (not Kaggle itself).

    .venv/bin/python benchmarks/kaggle_fetch.py --images 240 --size-kb 370 --workers 1 4

Builds an NIH-like archive of noise PNGs of about ``--size-kb`` each (the real average is
~0.37 MB), serves it from ``tests/data/fake_kaggle.py`` on 127.0.0.1 and times
``kaggle.fetch`` for: a whole contiguous selection by range (``zip``), a sparse one (every
other image: one request per member), a rerun from the cache, and single-file downloads
(``files``). Client and server share this machine's CPUs, so these are upper bounds on what the
code sustains, not a prediction of Kaggle's network.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.data.fake_kaggle import DEFAULT_TOKEN, FakeKaggle  # noqa: E402

from imgae_dx.config import KaggleParams  # noqa: E402
from imgae_dx.data import nih  # noqa: E402
from imgae_dx.data.sources import kaggle  # noqa: E402


def dataset(n: int, size_kb: int, seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    side = int((size_kb * 1024) ** 0.5)
    base = Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8), mode="L")
    rows, files = [], {}
    for i in range(n):
        pid, fu = 1336 + i // 4, i % 4  # images_002
        name = nih.image_name(pid, fu)
        img = (
            base.rotate(90 * (i % 4)).transpose(Image.FLIP_LEFT_RIGHT)
            if i % 2
            else base.rotate(90 * (i % 4))
        )
        arr = np.asarray(img).copy()
        arr[0, : min(side, 16)] = rng.integers(0, 256, min(side, 16))  # every file distinct
        buf = io.BytesIO()
        Image.fromarray(arr, mode="L").save(buf, format="PNG")
        files[nih.image_relpath(name)] = buf.getvalue()
        rows.append(
            {
                "image": name,
                "findings": nih.NO_FINDING,
                "follow_up": fu,
                "patient_id": pid,
                "age": 50,
                "sex": "M",
                "view": "PA",
                "width": 1024,
                "height": 1024,
                "spacing_x": 0.143,
                "spacing_y": 0.143,
            }
        )
    files[nih.DATA_ENTRY] = nih.format_data_entry(pd.DataFrame(rows)).encode()
    files[nih.BBOX_LIST] = (nih.BBOX_HEADER + "\n").encode()
    files[nih.TRAIN_VAL_LIST] = "".join(f"{r['image']}\n" for r in rows).encode()
    files[nih.TEST_LIST] = b""
    return files


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=int, default=240)
    ap.add_argument("--size-kb", type=int, default=370)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--files", type=int, default=40, help="images for the single-file case")
    args = ap.parse_args()

    files = dataset(args.images, args.size_kb)
    names = sorted(k.rsplit("/", 1)[-1] for k in files if k.endswith(".png"))
    img_bytes = sum(len(v) for k, v in files.items() if k.endswith(".png"))
    tmp = Path(tempfile.mkdtemp(prefix="kaggle-bench-"))
    os.environ["HOME"] = str(tmp)
    os.environ["KAGGLE_API_TOKEN"] = DEFAULT_TOKEN
    results = []
    with FakeKaggle(files, chunk=256 * 1024) as srv:
        print(
            f"archive {len(srv.archive) / 1e6:.1f} MB, {len(names)} images, {img_bytes / len(names) / 1e3:.0f} kB each"
        )

        def timed(label: str, select_names: list[str], cache: Path, **kw) -> None:
            srv.reset_counters()
            t0 = time.perf_counter()
            out = kaggle.fetch(
                tmp / f"raw-{len(results)}",
                KaggleParams(endpoint=srv.endpoint, **kw),
                select=lambda d: select_names,
                cache_dir=cache,
            )
            dt = time.perf_counter() - t0
            mb = sum(srv.bytes.values()) / 1e6
            res = {
                "case": label,
                "images": len(select_names),
                "seconds": round(dt, 3),
                "MB": round(mb, 2),
                "MB_per_s": round(mb / dt, 1),
                "images_per_s": round(len(select_names) / dt, 1),
                "http_requests": out["http_requests"],
            }
            results.append(res)
            print(json.dumps(res))

        for w in args.workers:
            timed(
                f"zip contiguous, workers={w}", names, tmp / f"c-zip-{w}", method="zip", workers=w
            )
            timed(
                f"zip every other image, workers={w}",
                names[::2],
                tmp / f"c-sparse-{w}",
                method="zip",
                workers=w,
            )
        timed("rerun from cache (zip)", names, tmp / f"c-zip-{args.workers[-1]}", method="zip")
        for w in args.workers:
            timed(
                f"single files, workers={w}",
                names[: args.files],
                tmp / f"c-files-{w}",
                method="files",
                workers=w,
            )


if __name__ == "__main__":
    main()
