"""Scoring throughput (images/s) of each architecture: reconstruction, anomaly map, image score.

Runs ``imgae_dx.inference.score_images`` -- what ``score@<arch>`` runs, maps kept -- with each
architecture's own map (``score.map: auto`` of params.yaml: squared error for the AEs and the
U-Net, the RA's CLAHE residual x SSIM saliency), on freshly built models (the cost does not
depend on the weights) and phantom-like images, at one or more sizes, ``--repeats`` rounds
interleaved across architectures (median). Written as JSON for ``benchmarks/report.py``.

    python benchmarks/score_throughput.py --sizes 64 128 256 --out benchmarks/results/score.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from imgae_dx.config import load_params
from imgae_dx.device import inference_device
from imgae_dx.inference import score_images, score_method
from imgae_dx.models import build_model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402


def phantom_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """uint8 (n, size, size): a smooth bright disc on a dark field plus noise (the CLAHE and
    SSIM maps cost the same on any content; this keeps the reconstructions non-trivial)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    base = 180 * np.exp(-(xx**2 + yy**2) / 0.08)
    noise = rng.normal(0, 12, (n, size, size))
    return np.clip(base + noise + 30, 0, 255).astype(np.uint8)


def _scorer(name: str, size: int, params, images: np.ndarray):
    kwargs = params.model_args(name)
    kwargs["image_size"] = size
    torch.manual_seed(0)
    model = build_model(name, **kwargs).eval()
    method = score_method(model, params.score)
    device = inference_device("auto")

    def run() -> float:
        t0 = time.perf_counter()
        score_images(
            model, images, method, batch_size=params.score.batch_size, device=device,
            keep_maps=True,
        )  # fmt: skip
        return len(images) / (time.perf_counter() - t0)

    return run, method.map


def measure(sizes: list[int], n: int, repeats: int, models: list[str]) -> list[dict]:
    params = load_params(ROOT / "params.yaml")
    rows = []
    for size in sizes:
        images = phantom_images(n, size)
        runs = {m: _scorer(m, size, params, images) for m in models}
        rates: dict[str, list[float]] = {m: [] for m in models}
        for round_ in range(repeats + 1):  # round 0 warms up
            for m, (run, _) in runs.items():
                rate = run()
                if round_:
                    rates[m].append(rate)
        for m in models:
            rows.append({
                "arch": m, "image_size": size, "map": runs[m][1], "n_images": n,
                "images_per_s": statistics.median(rates[m]),
            })  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[64])
    ap.add_argument("--n-images", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=None, help="default: params.yaml's models")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    models = args.models or load_params(ROOT / "params.yaml").models
    rows = measure(args.sizes, args.n_images, args.repeats, models)
    for row in rows:
        print(json.dumps(row))
    if args.out is not None:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        doc = {"kind": "score", "machine": describe_machine(), "settings": settings, "rows": rows}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
