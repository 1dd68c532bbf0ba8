"""Training throughput (images/s) and peak memory of each architecture on the available device.

Times ``model.training_step`` on random data after a warm-up, exactly as the training loop calls
it: bf16 autocast and channels-last on CUDA, float32 elsewhere. Peak memory is
``torch.cuda.max_memory_allocated`` on CUDA and the peak resident set size of a fresh
subprocess per model on CPU.

    python benchmarks/train_throughput.py                       # defaults, 64x64, batch 64
    python benchmarks/train_throughput.py --preset paper        # configs/paper.yaml sizes
    python benchmarks/train_throughput.py --models ra --batch-size 16 --steps 5
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from imgae_dx.config import load_params
from imgae_dx.device import autocast_factory, describe_device, resolve_device, to_channels_last
from imgae_dx.models import build_model, list_models

ROOT = Path(__file__).resolve().parents[1]


def preset_kwargs(name: str, preset: str, paper: Path) -> tuple[dict, int | None]:
    """(constructor kwargs, image size or None) of a preset."""
    if preset == "default":
        return {}, None
    params = load_params(ROOT / "params.yaml", overlay=paper)
    kwargs = params.model_args(name) if name in params.arch else {}
    kwargs.pop("image_size", None)
    return kwargs, params.data.image_size


def measure(name: str, args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    kwargs, size = preset_kwargs(name, args.preset, args.paper)
    size = args.image_size or size or 64
    torch.manual_seed(0)
    model = build_model(name, image_size=size, **kwargs).to(device)
    to_channels_last(model, device)
    optimizers = model.configure_optimizers(1e-4, 0.0)
    autocast = autocast_factory(device, not args.no_amp)
    x = to_channels_last(torch.rand(args.batch_size, 1, size, size, device=device), device)
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        model.training_step(x, optimizers, autocast=autocast)
    sync()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        model.training_step(x, optimizers, autocast=autocast)
        sync()
        times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "arch": name,
        "device": describe_device(device),
        "image_size": size,
        "batch_size": args.batch_size,
        "params": sum(p.numel() for p in model.parameters()),
        "ms_per_step": 1000 * step,
        "images_per_s": args.batch_size / step,
        "epoch_s_3000": 3000 / args.batch_size * step,
        "peak_mb": peak_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None, help="default: all registered")
    parser.add_argument("--preset", choices=("default", "paper"), default="default")
    parser.add_argument("--paper", type=Path, default=ROOT / "configs" / "paper.yaml")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-amp", action="store_true", help="disable bf16 autocast on CUDA")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one model and exit
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.one:
        print(json.dumps(measure(args.one, args)))
        return

    names = args.models or list_models()
    cpu = resolve_device(args.device).type != "cuda"
    rows = []
    for name in names:
        if cpu:  # a fresh process per model, so the peak RSS is that model's own
            argv = [a for a in sys.argv[1:] if a != "--json"]
            out = subprocess.run(
                [sys.executable, __file__, *argv, "--one", name],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
        else:
            rows.append(measure(name, args))

    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    print(f"device: {rows[0]['device']}, amp: {not args.no_amp}, preset: {args.preset}")
    head = (
        f"{'arch':<6} {'size':>5} {'batch':>5} {'params':>12} {'ms/step':>9} {'img/s':>8} "
        f"{'epoch@3000 (s)':>15} {'peak MB':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['arch']:<6} {r['image_size']:>5} {r['batch_size']:>5} {r['params']:>12,} "
            f"{r['ms_per_step']:>9.1f} {r['images_per_s']:>8.1f} {r['epoch_s_3000']:>15.1f} "
            f"{r['peak_mb']:>9.0f}"
        )


if __name__ == "__main__":
    main()
