"""Data path throughput: fetch (synthetic), the prepared-array design, and ``prepare`` at 1024².

Three measurements, written as one JSON file for ``benchmarks/report.py``:

* ``fetch``: images/s of ``synthetic.generate`` (render, PNG-encode, metadata) with all cores.
* ``loader``: one training epoch's batches (shuffled, batch 64, uint8 -> float tensors) read
  from the prepared ``.npy`` array -- the design -- against a loader that decodes and resizes
  every PNG with PIL each epoch (``imgae_dx.data.prepare.load_image``, prepare's own decode),
  interleaved over ``--repeats`` rounds in one process; the ratio is the design's speed-up.
* ``prepare``: ``prepare_split`` of 1024² PNGs (the NIH size) to 64², with 1 process and with
  every usable core (the scaling ratio), and the peak resident memory of the stage's process
  and of its largest worker at two dataset sizes, each in a fresh subprocess: it must not grow
  with the dataset (the array is written through a memory map).

    python benchmarks/data_throughput.py --out benchmarks/results/data.json
    python benchmarks/data_throughput.py --quick --out /tmp/data.json     # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from imgae_dx.config import SyntheticParams
from imgae_dx.data.prepare import load_image, prepare_split
from imgae_dx.data.sources import synthetic
from imgae_dx.device import images_to_tensor
from imgae_dx.train import _Batches, _epoch_batches

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402

CPU = __import__("torch").device("cpu")


def measure_fetch(raw: Path, n_patients: int) -> dict:
    """Generate the synthetic mirror into ``raw`` (all cores): images/s."""
    t0 = time.perf_counter()
    info = synthetic.generate(raw, SyntheticParams(n_patients=n_patients, image_size=256))
    dt = time.perf_counter() - t0
    return {"n_images": info["n_images"], "seconds": dt, "images_per_s": info["n_images"] / dt}


def png_paths(raw: Path) -> list[Path]:
    return sorted(raw.glob("images_*/images/*.png"))


def _epoch_from_array(array: np.ndarray, batch: int, epoch: int) -> float:
    n_batches = len(array) // batch
    ds = _Batches(array, _epoch_batches(len(array), batch, n_batches, 0, epoch))
    t0 = time.perf_counter()
    for i in range(len(ds)):
        images_to_tensor(ds[i], CPU)
    return n_batches * batch / (time.perf_counter() - t0)


def _epoch_from_pngs(paths: list[Path], size: int, batch: int, epoch: int) -> float:
    n_batches = len(paths) // batch
    t0 = time.perf_counter()
    for idx in _epoch_batches(len(paths), batch, n_batches, 0, epoch):
        pixels = np.stack([load_image(paths[i], size).image for i in idx])
        images_to_tensor(pixels, CPU)
    return n_batches * batch / (time.perf_counter() - t0)


def measure_loader(raw: Path, work: Path, size: int, batch: int, repeats: int) -> dict:
    """The prepared array against PIL decoding every epoch, interleaved; plus prepare's cost."""
    paths = png_paths(raw)
    manifest = pd.DataFrame({"image": [p.name for p in paths]})
    t0 = time.perf_counter()
    prepare_split(manifest, raw, work / "train.npy", image_size=size)
    prepare_s = time.perf_counter() - t0
    array = np.load(work / "train.npy", mmap_mode="r")
    rates: dict[str, list[float]] = {"array": [], "pil": []}
    for epoch in range(repeats):
        rates["array"].append(_epoch_from_array(array, batch, epoch))
        rates["pil"].append(_epoch_from_pngs(paths, size, batch, epoch))
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "n_images": len(paths),
        "png_size": Image.open(paths[0]).size[0],
        "image_size": size,
        "batch_size": batch,
        "repeats": repeats,
        "array_images_per_s": med["array"],
        "pil_images_per_s": med["pil"],
        "array_over_pil": med["array"] / med["pil"],
        "prepare_once_s": prepare_s,
    }


def make_large_pngs(raw: Path, out: Path, n: int, side: int = 1024) -> pd.DataFrame:
    """``n`` PNGs of ``side``² in the Kaggle layout under ``out``: phantoms upscaled (bicubic)
    from the synthetic ones, so they decode like smooth radiographs, not like noise. A few
    distinct images are written and copied (the decode cost is per file, not per content)."""
    sources = png_paths(raw)[:16]
    names = []
    for i in range(n):
        src = sources[i % len(sources)]
        name = f"{i + 1:08d}_000.png"
        dest = out / "images_001" / "images" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if i < len(sources):
            with Image.open(src) as im:
                big = im.resize((side, side), Image.Resampling.BICUBIC)
            big.save(dest, format="PNG", compress_level=synthetic.PNG_COMPRESS_LEVEL)
        else:
            shutil.copyfile(out / "images_001" / "images" / names[i % len(sources)], dest)
        names.append(name)
    return pd.DataFrame({"image": names})


def run_prepare(root: Path, n: int, workers: int) -> dict:
    """``prepare_split`` of the first ``n`` images under ``root`` (in this process): seconds,
    images/s and the peak RSS of this process and of its largest worker, in MiB."""
    names = sorted(p.name for p in root.glob("images_*/images/*.png"))[:n]
    out = root / f"prepared_{n}_{workers}.npy"
    t0 = time.perf_counter()
    prepare_split(pd.DataFrame({"image": names}), root, out, image_size=64, workers=workers)
    dt = time.perf_counter() - t0
    out.unlink()
    kib = 1024  # ru_maxrss is in KiB on Linux
    return {
        "n_images": n,
        "workers": workers,
        "seconds": dt,
        "images_per_s": n / dt,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib,
        "peak_worker_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kib,
    }


def _in_subprocess(root: Path, n: int, workers: int) -> dict:
    """:func:`run_prepare` in a fresh interpreter, so the peak RSS is that run's alone."""
    cmd = [sys.executable, __file__, "--prepare-one", str(root), str(n), str(workers)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure_prepare(raw: Path, work: Path, sizes: tuple[int, int], repeats: int) -> dict:
    """1 process vs all usable cores at the larger size (interleaved, median of ``repeats``),
    and the peak RSS at both sizes with all cores."""
    cores = len(os.sched_getaffinity(0))
    big = work / "png1024"
    make_large_pngs(raw, big, max(sizes))
    runs: dict[int, list[dict]] = {1: [], cores: []}
    for _ in range(repeats):
        for w in runs:
            runs[w].append(_in_subprocess(big, max(sizes), w))
    rss = [_in_subprocess(big, n, cores) for n in sorted(sizes)]
    rate = {w: statistics.median(r["images_per_s"] for r in rs) for w, rs in runs.items()}
    return {
        "png_size": 1024,
        "image_size": 64,
        "cores": cores,
        "n_images": max(sizes),
        "one_process_images_per_s": rate[1],
        "all_cores_images_per_s": rate[cores],
        "scaling": rate[cores] / rate[1],
        "rss": rss,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n-patients", type=int, default=300, help="synthetic patients to fetch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prepare-sizes", type=int, nargs=2, default=(96, 384))
    ap.add_argument("--quick", action="store_true", help="a smoke run at minimal sizes")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--prepare-one", nargs=3, help=argparse.SUPPRESS)  # internal
    args = ap.parse_args()
    if args.prepare_one:
        root, n, workers = args.prepare_one
        print(json.dumps(run_prepare(Path(root), int(n), int(workers))))
        return
    if args.quick:
        args.n_patients, args.repeats, args.prepare_sizes = 20, 1, (8, 16)
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        raw, work = Path(tmp) / "raw", Path(tmp)
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        doc = {"kind": "data", "machine": describe_machine(), "settings": settings}
        doc["fetch"] = measure_fetch(raw, args.n_patients)
        batch = 64 if not args.quick else 8
        doc["loader"] = measure_loader(raw, work, 64, batch, args.repeats)
        doc["prepare"] = measure_prepare(raw, work, tuple(args.prepare_sizes), args.repeats)
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
