"""Throughput of the synthetic source: images per minute, end to end and per stage.

Usage (from the repository root)::

    .venv/bin/python benchmarks/synthetic_throughput.py                      # 300 patients, 256²
    .venv/bin/python benchmarks/synthetic_throughput.py --n-patients 1900 --workers 2

Prints the end-to-end rate of ``synthetic.generate`` (planning, rendering, PNG encoding,
metadata) and, single-threaded, the time per image of rendering and of PNG encoding alone.
The machine is shared: run it twice and look at the better number.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time

from PIL import Image

from imgae_dx.config import SyntheticParams
from imgae_dx.data.sources import synthetic
from imgae_dx.data.sources._phantom import render
from imgae_dx.data.sources._phantom_people import plan_dataset


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n-patients", type=int, default=300)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--per-image", type=int, default=100, help="images for the per-stage timing")
    args = ap.parse_args()

    specs = plan_dataset(
        n_patients=min(args.n_patients, 200),
        seed=0,
        prevalence=0.47,
        difficulty=0.35,
        test_fraction=0.2,
        followups=3.4,
    )[: args.per_image]
    t_render = t_png = 0.0
    for spec in specs:
        t0 = time.perf_counter()
        img, _ = render(spec, args.image_size)
        t1 = time.perf_counter()
        Image.fromarray(img).save(
            io.BytesIO(), format="PNG", compress_level=synthetic.PNG_COMPRESS_LEVEL
        )
        t2 = time.perf_counter()
        t_render += t1 - t0
        t_png += t2 - t1
    n = len(specs)
    print(
        f"one process, {args.image_size}²: render {t_render / n * 1e3:.1f} ms/img, "
        f"PNG {t_png / n * 1e3:.1f} ms/img"
    )

    with tempfile.TemporaryDirectory(prefix="synthetic_throughput_") as d:
        t0 = time.perf_counter()
        params = SyntheticParams(
            n_patients=args.n_patients, image_size=args.image_size, workers=args.workers
        )
        info = synthetic.generate(d, params)
        dt = time.perf_counter() - t0
    print(
        f"generate: {info['n_images']} images ({args.n_patients} patients) at "
        f"{args.image_size}² in {dt:.1f} s = {info['n_images'] / dt * 60:.0f} images/min "
        f"(workers={args.workers or 'all cores'})"
    )


if __name__ == "__main__":
    main()
